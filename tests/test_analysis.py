"""Concentration instruments: known answers, padding, causal rows, and softmax/LLN theory."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from helpers import right_padding_mask, with_junk_padding

from llnbench.analysis import (
    causal_entropy_norm,
    entropy_theory,
    entry_var_theory,
    entry_variance,
    gap_theory,
    instruments,
    log_entry_moments,
    log_var_theory,
    matrix_instruments,
    measure,
    row_entropy,
    spectral_gap,
)
from llnbench.attention import ATTENTIONS, build_attention


def batch(p: torch.Tensor) -> torch.Tensor:
    """(N, N) -> (1, 1, N, N) float64."""
    return p.double()[None, None]


def gaussian(s2: float, n: int, heads: int, seed: int = 0, d: int = 64):
    """q ~ N(0, s2 I), k ~ N(0, I) of shape (1, heads, n, d); heads act as independent draws."""
    gen = torch.Generator().manual_seed(seed)
    q = math.sqrt(s2) * torch.randn(1, heads, n, d, generator=gen, dtype=torch.float64)
    return q, torch.randn(1, heads, n, d, generator=gen, dtype=torch.float64)


def attn(name: str, heads: int = 4, **options):
    return build_attention(name, num_heads=heads, head_dim=64, **options)


# -- known answers ------------------------------------------------------------------------------


def test_identity_is_unbiased_concentration() -> None:
    p = batch(torch.eye(64))
    got = matrix_instruments(p)
    assert got["entropy"].item() == 0.0
    assert abs(got["gap"].item()) < 1e-9
    assert got["log_var"].item() == 0.0  # every positive entry is 1


def test_uniform_has_entropy_ln_n_and_gap_one() -> None:
    n = 64
    got = matrix_instruments(batch(torch.full((n, n), 1.0 / n)))
    assert got["entropy"].item() == pytest.approx(math.log(n), abs=1e-12)
    assert got["gap"].item() == pytest.approx(1.0, abs=1e-9)
    assert got["entry_var"].item() == pytest.approx(0.0, abs=1e-20)
    assert got["log_mean"].item() == pytest.approx(-math.log(n), abs=1e-12)


def test_all_to_token_zero_is_biased_concentration() -> None:
    p = torch.zeros(64, 64)
    p[:, 0] = 1.0
    got = matrix_instruments(batch(p))
    assert got["entropy"].item() == 0.0
    assert got["gap"].item() == pytest.approx(1.0, abs=1e-9)


def test_near_identity_softmax_matches_the_spec_example() -> None:
    """measurements.md §3: identity-like at n=64 gives H ≈ 0.012, γ ≈ 0.001 (sharp, not exact)."""
    n = 64
    p = torch.softmax(torch.eye(n) * 12.0, -1)  # off-diagonal mass 63 e^-12 per row
    got = matrix_instruments(batch(p))
    assert 0.0 < got["entropy"].item() < 0.02
    assert 0.0 < got["gap"].item() < 0.01


def test_entry_variance_and_log_moments_of_a_half_split() -> None:
    """Rows put 2/n on the first half: n·P is 0 or 2 (variance 1); ln P over positives is constant."""
    n = 16
    p = torch.zeros(n, n)
    p[:, : n // 2] = 2.0 / n
    mean, var = log_entry_moments(batch(p))
    assert entry_variance(batch(p)).item() == pytest.approx(1.0)
    assert mean.item() == pytest.approx(math.log(2.0 / n))
    assert var.item() == pytest.approx(0.0, abs=1e-24)


def test_padding_is_excluded_each_sequence_at_its_own_length() -> None:
    """Uniform over the n real keys of a padded sequence: H = ln n (not ln N), γ = 1."""
    big, n = 32, 20
    mask = right_padding_mask([big, n], big)
    p = torch.zeros(2, 1, big, big, dtype=torch.float64)
    p[0] = 1.0 / big
    p[1, :, :, :n] = 1.0 / n
    p[1, :, n:] = 7.0  # padded query rows hold junk the instruments must not read
    got = matrix_instruments(p, mask)
    assert got["entropy"][:, 0].tolist() == pytest.approx([math.log(big), math.log(n)])
    assert got["gap"][:, 0].tolist() == pytest.approx([1.0, 1.0], abs=1e-9)
    assert got["entry_var"][1, 0].item() == pytest.approx(0.0, abs=1e-20)


def test_padded_sequence_measures_like_its_unpadded_self() -> None:
    """Softmax on a padded batch (junk in the padding) = the real tokens alone, per sequence."""
    q, k = gaussian(1.0, 48, heads=2)
    q, k = torch.cat([q, q]), torch.cat([k, k])
    mask = right_padding_mask([48, 30], 48)
    q_junk, k_junk = with_junk_padding(q, mask), with_junk_padding(k, mask)
    module = attn("softmax", heads=2)
    padded = measure(module, q_junk[1:], k_junk[1:], mask[1:]).means()
    alone = measure(module, q[1:, :, :30], k[1:, :, :30]).means()
    for key, value in alone.items():
        assert padded[key] == pytest.approx(value, rel=1e-9, abs=1e-12), key


def test_causal_uniform_rows() -> None:
    """P_ij = 1/i for j <= i: H = mean ln i, H/ln i = 1, eigenvalues 1/i so γ = 1/2."""
    n = 40
    rows = torch.arange(1, n + 1, dtype=torch.float64)
    p = batch(torch.ones(n, n).tril() / rows[:, None])
    got = matrix_instruments(p, causal=True)
    assert got["entropy"].item() == pytest.approx(torch.log(rows).mean().item())
    assert got["entropy_norm"].item() == pytest.approx(1.0)
    assert got["gap"].item() == pytest.approx(0.5, abs=1e-9)
    assert got["entry_var"].item() == pytest.approx(0.0, abs=1e-20)  # i · (1/i) everywhere


def test_causal_module_under_padding() -> None:
    """Causal softmax, left padding: measured on the lower-triangular real block only."""
    n = 24
    q, k = gaussian(0.5, n, heads=2)
    mask = torch.ones(1, n, dtype=torch.bool)
    mask[0, :5] = False  # left padding
    module = build_attention("softmax", num_heads=2, head_dim=64, causal=True)
    p = module.attention_matrix(q, k, mask)
    norm = causal_entropy_norm(p, mask)
    assert ((norm > 0.5) & (norm < 1.0)).all()
    got = instruments(module, q, k, mask)
    assert 0.0 < got["entropy_norm"] < 1.0
    assert got["entropy"] < math.log(n - 5)
    # a triangular real block has its diagonal as eigenvalues: λ₁ = P_00 = 1 (the first real
    # token sees only itself) and |λ₂| = the largest other diagonal entry
    diagonal = p[0, :, 5:, 5:].diagonal(dim1=-2, dim2=-1)
    assert diagonal[:, 0].tolist() == pytest.approx([1.0, 1.0])
    expected = (1.0 - diagonal[:, 1:].amax(-1)).mean().item()
    assert got["gap"] == pytest.approx(expected, abs=1e-9)
    alone = instruments(module, q[:, :, 5:], k[:, :, 5:])
    assert got == pytest.approx(alone, rel=1e-9, abs=1e-12)


# -- instruments of modules -----------------------------------------------------------------------


def test_measure_leaves_the_module_alone_and_reports_per_head() -> None:
    module = attn("lln", heads=3).train()
    q, k = gaussian(1.0, 32, heads=3)
    result = measure(module, q.float(), k.float())
    assert module.training and next(iter(module.buffers())).dtype == torch.float32
    assert {len(v) for v in result.per_head_lists().values()} == {3}
    assert set(result.scalars) == {"alpha", "beta", "sigma_tilde"}


def test_temperatures() -> None:
    q, k = gaussian(4.0, 128, heads=2)
    soft = instruments(attn("softmax", heads=2), q, k, gap=False)
    assert soft["tau"] == pytest.approx(0.5, rel=0.03)  # 1 / (σ_q σ_k) = 1 / (2 · 1)
    assert soft["s2"] == pytest.approx(4.0, rel=0.05)
    assert "alpha" not in soft
    lln = instruments(attn("lln", heads=2), q, k, gap=False)
    # symmetric split: α σ_q = β σ_k = σ̃
    assert lln["alpha"] * lln["sigma_q"] == pytest.approx(lln["sigma_tilde"], rel=1e-3)
    assert lln["beta"] * lln["sigma_k"] == pytest.approx(lln["sigma_tilde"], rel=1e-3)
    exp = instruments(attn("lln", heads=2, moment_matching=False), q, k, gap=False)
    assert exp["alpha"] == exp["beta"] == pytest.approx(64**-0.25)


def test_lln_diag_reports_mixture_and_branch() -> None:
    q, k = gaussian(1.0, 128, heads=2)
    mix = instruments(attn("lln_diag", heads=2), q, k)
    lln = instruments(attn("lln", heads=2), q, k)
    for key in ("entropy", "gap", "log_var"):
        assert mix[f"lln_branch_{key}"] == pytest.approx(lln[key], rel=1e-9)
    # half the mass sits in 64-token diagonal blocks: two near-closed blocks keep |λ₂| ≈ 1/2
    assert mix["gap"] < 0.6 < lln["gap"]


def test_lln_entries_positive_rows_sum_to_one() -> None:
    """Exact with eps = 0 (the default eps 1e-8 acts in shifted units and can take ~1e-5 off a row)."""
    q, k = gaussian(4.0, 256, heads=2)
    for options in ({}, {"moment_matching": False}):
        p = attn("lln", heads=2, eps=0.0, **options).eval().attention_matrix(q, k)
        assert (p > 0).all()
        torch.testing.assert_close(p.sum(-1), torch.ones(1, 2, 256, dtype=torch.float64))


# -- softmax on Gaussian inputs: theory (measurements.md §3.1) ------------------------------------


def test_softmax_theory_at_n256() -> None:
    """Measured 5.42/5.03/4.60 and 0.965/0.916/0.837 vs the predictions, σ² = 0.25/1/2."""
    n = 256
    for s2 in (0.25, 1.0, 2.0):
        got = instruments(attn("softmax"), *gaussian(s2, n, heads=4, seed=1))
        assert got["entropy"] == pytest.approx(entropy_theory(n, s2), abs=0.07), s2
        assert got["gap"] == pytest.approx(gap_theory(n, s2), abs=0.02), s2
        assert got["log_var"] == pytest.approx(log_var_theory(s2), rel=0.06), s2
        assert got["log_mean"] == pytest.approx(-math.log(n) - s2 / 2, abs=0.1), s2
        assert got["entry_var"] == pytest.approx(entry_var_theory(s2), rel=0.25), s2


def test_theory_helpers() -> None:
    assert entropy_theory(512, 1.0) == pytest.approx(math.log(512) - 0.5)
    assert gap_theory(512, 1.0) == pytest.approx(1 - math.sqrt((math.e - 1) / 512))
    assert gap_theory(4, 10.0) == 0.0  # clamped where the approximation breaks
    assert log_var_theory(3.0) == 3.0
    assert entry_var_theory(1.0) == pytest.approx(math.e - 1)


def _entropies(name: str, options: dict, s2_values, n: int = 256) -> list[float]:
    module = attn(name, **options)
    return [
        instruments(module, *gaussian(s2, n, heads=4), gap=False)["entropy"] for s2 in s2_values
    ]


def test_entropy_falls_with_s2_for_softmax_and_moment_matched_lln() -> None:
    grid = (0.25, 1.0, 2.0, 4.0)
    for name in ("softmax", "lln"):
        h = _entropies(name, {}, grid)
        assert all(a > b + 0.1 for a, b in itertools.pairwise(h)), (name, h)


def test_untuned_features_cannot_concentrate() -> None:
    """exp(d^-1/4 x) and elu+1 stay at ln N whatever the scale (the LLN paper's motivation)."""
    grid, n = (0.25, 4.0, 16.0), 256
    variants = [("lln", {"moment_matching": False})]
    if _importable("linear_elu"):
        variants.append(("linear_elu", {}))
    for name, options in variants:
        h = _entropies(name, options, grid, n)
        assert all(abs(x - math.log(n)) < 0.03 for x in h), (name, h)


def test_gap_trends_on_averages() -> None:
    """Single LLN gaps are noisy, averages over heads are not: gaps fall with σ² except for exp."""
    n = 128

    def gap(name: str, s2: float, **options) -> float:
        return instruments(attn(name, heads=6, **options), *gaussian(s2, n, heads=6))["gap"]

    for name in ("softmax", "lln"):
        assert gap(name, 0.25) > gap(name, 1.0) > gap(name, 4.0), name
    assert gap("lln", 4.0) < gap("softmax", 4.0)  # LLN concentrates harder at large σ²
    assert gap("lln", 4.0, moment_matching=False) > 0.99


def _importable(name: str) -> bool:
    try:
        ATTENTIONS[name]
    except ImportError:
        return False
    return True


def test_row_entropy_and_gap_are_per_sequence_and_head() -> None:
    p = torch.zeros(2, 3, 8, 8, dtype=torch.float64)
    p[0] = torch.eye(8)
    p[1] = 1.0 / 8
    assert row_entropy(p).shape == spectral_gap(p).shape == (2, 3)
    assert row_entropy(p)[1].tolist() == pytest.approx([math.log(8)] * 3)
