"""LLN's moment matching: Var(ln P_LLN) tracks softmax's sigma_q^2 sigma_k^2 (paper Prop. 3.1)."""

from __future__ import annotations

import math

import pytest
import torch

from llnbench.attention import build_attention
from llnbench.attention.lln import PAPER_A, PAPER_B, fit_moment_constants, symmetric_temperatures


def log_variance(attn, d: int, target: float, draws: int = 3, n: int = 512) -> float:
    """Mean over draws of Var(ln P) for q ~ N(0, T I), k ~ N(0, I)."""
    gen = torch.Generator().manual_seed(1)
    total = 0.0
    for _ in range(draws):
        q = math.sqrt(target) * torch.randn(1, 1, n, d, generator=gen, dtype=torch.float64)
        k = torch.randn(1, 1, n, d, generator=gen, dtype=torch.float64)
        total += torch.log(attn.attention_matrix(q, k)).var(unbiased=False).item()
    return total / draws


@pytest.mark.parametrize(
    ("target", "expected"), [(0.5, 0.39), (1.0, 0.85), (2.0, 2.05)], ids=["T0.5", "T1", "T2"]
)
def test_published_log_variances_at_d64(target: float, expected: float) -> None:
    attn = build_attention("lln", num_heads=1, head_dim=64, constants="paper", eps=0.0)
    var = log_variance(attn, 64, target)
    assert abs(var - expected) <= 0.1 * expected
    assert abs(var - target) <= 0.3 * target


def test_softmax_log_variance_is_logit_variance() -> None:
    """The model LLN matches: Var(ln P_SA) ~ sigma_q^2 sigma_k^2 (spec §7.1: 0.50 / 1.00 / 2.03)."""
    soft = build_attention("softmax", num_heads=1, head_dim=64)
    for target, expected in [(0.5, 0.50), (1.0, 1.00), (2.0, 2.03)]:
        assert abs(log_variance(soft, 64, target) - expected) <= 0.05 * expected


def test_fitted_constants_fix_small_head_dims() -> None:
    """At d = 16 the published pair overshoots; the refit lands within 20% of the target."""
    fitted = build_attention("lln", num_heads=1, head_dim=16, constants="fit", eps=0.0)
    paper = build_attention("lln", num_heads=1, head_dim=16, constants="paper", eps=0.0)
    for target in (0.5, 1.0, 2.0):
        assert abs(log_variance(fitted, 16, target) - target) <= 0.2 * target
        assert log_variance(paper, 16, target) > 1.3 * target


def test_fit_reproduces_published_pair() -> None:
    a, b = fit_moment_constants(64)
    assert abs(a - PAPER_A) <= 0.004 and abs(b - PAPER_B) <= 0.03
    for target in (0.25, 0.5, 1.0, 2.0, 4.0):
        one = torch.tensor(1.0, dtype=torch.float64)
        st_fit = symmetric_temperatures(one, math.sqrt(target) * one, a, b)[2]
        st_paper = symmetric_temperatures(one, math.sqrt(target) * one, PAPER_A, PAPER_B)[2]
        assert abs(st_fit / st_paper - 1) <= 0.02


@pytest.mark.parametrize(
    ("d", "a", "b"),
    [(16, 0.214, -0.363), (32, 0.177, -0.364), (128, 0.122, -0.328)],
    ids=lambda x: str(x),
)
def test_fit_at_other_head_dims(d: int, a: float, b: float) -> None:
    fit_a, fit_b = fit_moment_constants(d)
    assert abs(fit_a - a) <= 0.006 and abs(fit_b - b) <= 0.035


def test_constants_option() -> None:
    auto64 = build_attention("lln", num_heads=1, head_dim=64)
    assert (auto64.a, auto64.b) == (PAPER_A, PAPER_B)
    auto16 = build_attention("lln", num_heads=1, head_dim=16)
    assert (auto16.a, auto16.b) == fit_moment_constants(16)
    assert build_attention("lln", num_heads=1, head_dim=16, constants="paper").a == PAPER_A


def test_golden_temperatures() -> None:
    """Spec §7.1: st at T = 0.25 / 0.5 / 1 / 2 / 4, and alpha = beta = 2.136 for unit q, k."""
    for target, st in [(0.25, 1.427), (0.5, 1.696), (1, 2.136), (2, 2.815), (4, 3.829)]:
        one = torch.tensor(1.0, dtype=torch.float64)
        got = symmetric_temperatures(one, math.sqrt(target) * one, PAPER_A, PAPER_B)[2]
        assert abs(got.item() - st) < 1e-3
