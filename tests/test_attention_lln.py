"""LLN against its float64 formula: forward, backward, masks, causality, precision."""

from __future__ import annotations

import pytest
import torch
from helpers import qkv, right_padding_mask, with_junk_padding

from llnbench.attention import build_attention
from llnbench.attention.lln import LLNAttention
from llnbench.attention.reference import lln_matrix, lln_temperatures
from llnbench.errors import ConfigError
from llnbench.testing import (
    check_backward,
    check_causal_prefix,
    check_forward,
    check_gradcheck,
    check_matrix,
    check_padding,
)


def lln(causal: bool = False, **options) -> LLNAttention:
    options.setdefault("eps", 0.0)
    return build_attention(
        "lln", num_heads=2, head_dim=options.pop("d", 8), causal=causal, **options
    )


def reference_out(attn: LLNAttention, q, k, v, mask=None, scope="batch"):
    """The unshifted formula with independently computed moment-matched temperatures."""
    alpha, beta = lln_temperatures(q, k, mask, scope, attn.a, attn.b)
    return lln_matrix(q, k, alpha, beta, mask, attn.causal) @ v.double()


def kit_reference(attn: LLNAttention, q, k, v, mask):
    return reference_out(attn, q, k, v, mask)


def fp32_errors(attn: LLNAttention, n: int) -> list[float]:
    """Max relative error of fp32 output and q, k, v gradients against the float64 formula."""
    q64, k64, v64 = (t.requires_grad_() for t in qkv(2, 4, n, 64))
    q32, k32, v32 = (t.detach().float().requires_grad_() for t in (q64, k64, v64))
    out32 = attn(q32, k32, v32)
    assert out32.dtype == torch.float32
    ref = reference_out(attn, q64, k64, v64)
    grad = torch.randn_like(ref)
    (out32 * grad.float()).sum().backward()
    (ref * grad).sum().backward()
    pairs = [
        (out32.detach(), ref.detach()),
        (q32.grad, q64.grad),
        (k32.grad, k64.grad),
        (v32.grad, v64.grad),
    ]
    return [((a.double() - b).abs().max() / b.abs().max()).item() for a, b in pairs]


@pytest.mark.parametrize("n", [1, 5, 17, 64, 130], ids=lambda n: f"N{n}")
@pytest.mark.parametrize("d", [4, 8, 64], ids=lambda d: f"d{d}")
@pytest.mark.parametrize("causal", [False, True], ids=["bidir", "causal"])
def test_float64_matches_formula(n: int, d: int, causal: bool) -> None:
    attn = lln(causal, d=d).train()  # per-call statistics in both modes
    check_forward(attn, kit_reference, n=n, masked=False, atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("causal", [False, True], ids=["bidir", "causal"])
def test_float32_forward_and_backward_within_1e4(causal: bool) -> None:
    """Issue acceptance: fp32 LLN equals the float64 formula to <= 1e-4 relative, fwd and bwd."""
    errors = fp32_errors(lln(causal, d=64, chunk=64).train(), n=300)
    assert max(errors) < 1e-4, errors


@pytest.mark.parametrize("causal", [False, True], ids=["bidir", "causal"])
def test_backward_float64_matches_formula(causal: bool) -> None:
    """Gradients flow through q and k with alpha, beta held constant (autograd constants)."""
    check_backward(lln(causal).train(), kit_reference)


@pytest.mark.parametrize("causal", [False, True], ids=["bidir", "causal"])
@pytest.mark.parametrize("n", [5, 7], ids=lambda n: f"N{n}")
def test_gradcheck(causal: bool, n: int) -> None:
    check_gradcheck(lln(causal, d=4, fixed_alpha_beta=(0.8, 1.3), chunk=3), n=n)


def test_rows_sum_to_one_and_entries_positive() -> None:
    q, k, _ = qkv(2, 2, 40, 8, scale=2.0)
    for causal in (False, True):
        p = lln(causal).train().attention_matrix(q, k)
        torch.testing.assert_close(
            p.sum(-1), torch.ones(2, 2, 40, dtype=torch.float64), atol=1e-12, rtol=0
        )
        visible = torch.ones(40, 40, dtype=torch.bool)
        if causal:
            visible = visible.tril()
        assert torch.all(p[..., visible] > 0)


@pytest.mark.parametrize("causal", [False, True], ids=["bidir", "causal"])
def test_matrix_times_v_equals_forward(causal: bool) -> None:
    check_matrix(lln(causal, eps=1e-8).eval(), n=70, lengths=(70, 33))


@pytest.mark.parametrize("scope", ["sequence", "head"])
@pytest.mark.parametrize("causal", [False, True], ids=["bidir", "causal"])
def test_padding_invariance(scope: str, causal: bool) -> None:
    """Junk padding + mask gives the unpadded outputs: statistics, shifts and sums skip padding."""
    q, k, v = qkv(2, 2, 40, 8)
    mask = right_padding_mask([40, 26], 40)
    attn = lln(causal, stats_scope=scope).train()
    junk = [with_junk_padding(t, mask, 1e4) for t in (q, k, v)]
    out = attn(*junk, mask)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(
        out[1, :, :26], attn(q[1:, :, :26], k[1:, :, :26], v[1:, :, :26])[0], atol=1e-10, rtol=0
    )
    torch.testing.assert_close(
        out[1:, :, :26],
        reference_out(attn, q, k, v, mask, scope)[1:, :, :26],
        atol=1e-10,
        rtol=1e-10,
    )


def test_padding_does_not_poison_gradients() -> None:
    attn = lln(False, stats_scope="sequence").train()
    check_padding(attn, d=8, lengths=(12, 7), junk=1e6, compare=False)


def test_eval_causal_is_strictly_causal() -> None:
    """In eval, output i ignores tokens after i by every path: stats, key shift and eps."""
    attn = lln(True, eps=1e-8)
    attn.train()
    for _ in range(5):  # populate the running statistics
        attn(*qkv(2, 2, 50, 8, seed=1))
    attn.eval()
    # an adversarial future key: a global shift would shrink every earlier feature to ~eps
    check_causal_prefix(attn, future=(-500.0, 500.0, None))


def test_running_statistics_follow_training_calls() -> None:
    attn = lln(True)
    attn.train()
    for _ in range(60):
        attn(*qkv(1, 2, 64, 8, scale=2.0, seed=_))
    assert abs(attn.running_sigma_q.item() - 2.0) < 0.1
    assert "running_sigma_q" in attn.state_dict()
    bidir = lln(False).eval()
    q, k, v = qkv(1, 2, 10, 8, scale=3.0)
    bidir(q, k, v)
    assert abs(bidir.last_stats["sigma_q"].item() - 3.0) < 0.5  # eval bidirectional: per call


@pytest.mark.parametrize("causal", [False, True], ids=["bidir", "causal"])
def test_fixed_alpha_beta_prefix_property(causal: bool) -> None:
    attn = lln(True, d=4, fixed_alpha_beta=(1.1, 0.9))
    check_causal_prefix(attn, n=33, prefixes=(20,), future=None)


def test_no_gradient_through_alpha_beta() -> None:
    q, k, v = (t.requires_grad_() for t in qkv(1, 2, 9, 4))
    attn = lln(False, d=4)
    attn(q, k, v)
    for value in attn.last_stats.values():
        assert not value.requires_grad


def test_moment_matching_off_uses_d_quarter() -> None:
    q, k, v = qkv(1, 2, 9, 16)
    attn = lln(False, d=16, moment_matching=False)
    ref = lln_matrix(q, k, 16**-0.25, 16**-0.25) @ v
    torch.testing.assert_close(attn(q, k, v), ref, atol=1e-12, rtol=0)


@pytest.mark.parametrize("causal", [False, True], ids=["bidir", "causal"])
def test_bf16_long_sequence(causal: bool) -> None:
    """Spec §3.3 bf16 acceptance: std <= 3, against float64 on the same rounded inputs."""
    n = 65536 if not causal else 4096
    q, k, v = (t.bfloat16() for t in qkv(1, 1, n, 64, dtype=torch.float32, scale=3.0))
    attn = build_attention("lln", num_heads=1, head_dim=64, causal=causal, eps=0.0).train()
    out = attn(q, k, v)
    assert out.dtype == torch.bfloat16 and torch.isfinite(out).all()
    alpha, beta = lln_temperatures(q, k, None, "batch", attn.a, attn.b)
    qd, kd, vd = q.double(), k.double(), v.double()
    if causal:
        ref = lln_matrix(qd, kd, alpha, beta, causal=True) @ vd
    else:  # the unshifted linear form in float64 (an N x N matrix would be 32 GB)
        fq, fk = torch.exp(alpha * qd), torch.exp(beta * kd)
        ref = (fq @ (fk.transpose(-1, -2) @ vd)) / (fq @ fk.sum(-2, keepdim=True).transpose(-1, -2))
    assert (out.double() - ref).abs().max() <= 1e-2 * ref.abs().max()


def test_bf16_autocast_keeps_fp32_core() -> None:
    q, k, v = qkv(1, 2, 128, 64, dtype=torch.float32)
    attn = build_attention("lln", num_heads=2, head_dim=64)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = attn(q, k, v)
    torch.testing.assert_close(out, attn(q, k, v), atol=1e-6, rtol=1e-5)


def test_matmul_dtype_bf16_stays_close_forward_and_backward() -> None:
    """Opt-in bf16 matmuls (fp32 features and normalisation) track the float64 formula to ~1%."""
    errors = fp32_errors(lln(d=64, matmul_dtype="bf16").train(), n=256)
    assert all(1e-6 < err < 3e-2 for err in errors), errors  # lower bound: bf16 really was used


def test_matmul_dtype_is_validated() -> None:
    with pytest.raises(ConfigError, match=r"LLN matmul_dtype .*'fp16'.*allowed: fp32, bf16"):
        lln(matmul_dtype="fp16")
    with pytest.raises(ConfigError, match="bidirectional attention only"):
        lln(True, matmul_dtype="bf16")
