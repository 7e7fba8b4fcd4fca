"""The fused Triton LLN against the float64 formula, forward and backward, on CPU tensors under
the Triton interpreter, at tiny sizes. Not collected by the suite itself (no ``test_`` prefix):
``test_kernels_triton.py`` runs this file in a child process with TRITON_INTERPRET=1, which must
be set before ``import triton`` (tl.zeros, tl.sum and friends are jit functions decorated then).

Tolerance: fp32 kernels vs float64, max |error| <= 1e-5 * max(max |reference|, 1) (measured <= 1e-6),
outputs and q, k, v gradients alike. bf16 inputs: <= 1e-2 * max |reference| (spec §3.3).
"""

from __future__ import annotations

import importlib

import pytest
import torch
from helpers import qkv, right_padding_mask

from llnbench.attention import build_attention
from llnbench.attention.base import masked_std
from llnbench.attention.linear_core import exp_features, linear_attention
from llnbench.attention.lln import STATS_SCOPES
from llnbench.attention.reference import lln_matrix, lln_temperatures

KERNELS = "llnbench.attention.kernels._triton_lln_kernels"


@pytest.fixture(scope="module")
def triton_lln():
    """The launcher, its kernels built for the interpreter (this process has TRITON_INTERPRET=1)."""
    launcher = importlib.import_module("llnbench.attention.kernels.triton_lln")
    if not launcher.kernels().INTERPRETED:
        pytest.fail("run these checks through tests/test_kernels_triton.py (TRITON_INTERPRET=1)")
    return launcher


def relative_errors(out, ref, grads, ref_grads, real) -> list[float]:
    pairs = [(out * real, ref * real), *zip(grads, ref_grads)]
    # relative to the reference's largest entry, or absolute where it is below 1 (N=1: the
    # q and k gradients are exactly 0)
    return [((a.double() - b).abs().max() / b.abs().max().clamp_min(1.0)).item() for a, b in pairs]


def parity(triton_lln, n, d, *, mask=None, tiling=None, scale=1.0, dtype=torch.float32):
    """Errors of the kernel (fwd, dq, dk, dv) against the unshifted float64 formula."""
    q64, k64, v64 = (t.requires_grad_() for t in qkv(2, 3, n, d, scale=scale))
    alpha, beta = lln_temperatures(q64, k64, mask, "batch")
    q, k, v = (t.detach().to(dtype).requires_grad_() for t in (q64, k64, v64))
    kwargs = {"tiling": tiling} if tiling else {}
    out = triton_lln.lln_attention(q, k, v, alpha.float(), beta.float(), mask, eps=0.0, **kwargs)
    assert out.dtype == dtype and torch.isfinite(out).all()
    # the formula and its gradients, on the same rounded inputs
    qd, kd, vd = (t.detach().double().requires_grad_() for t in (q, k, v))
    ref = lln_matrix(qd, kd, alpha, beta, mask) @ vd
    real = torch.ones(2, 1, n, 1) if mask is None else mask[:, None, :, None].double()
    grad = torch.randn_like(ref) * real  # padded query rows carry no gradient
    (out * grad.to(dtype)).sum().backward()
    (ref * grad).sum().backward()
    return relative_errors(out.detach(), ref.detach(), (q.grad, k.grad, v.grad),
                           (qd.grad, kd.grad, vd.grad), real)  # fmt: skip


@pytest.mark.parametrize(
    ("n", "d"), [(1, 8), (5, 8), (37, 16), (64, 64), (131, 64)], ids=lambda x: str(x)
)
def test_fp32_forward_and_backward_match_float64(triton_lln, n: int, d: int) -> None:
    errors = parity(triton_lln, n, d)
    assert max(errors) < 1e-5, errors


def test_several_tiles_and_row_splits(triton_lln) -> None:
    """Small tiles and many programs: the online max rescaling and the partial-state merges."""
    tiling = triton_lln.Tiling(block=16, target_programs=64)
    errors = parity(triton_lln, 83, 8, mask=right_padding_mask([83, 40], 83), tiling=tiling,
                    scale=2.0)  # fmt: skip
    assert max(errors) < 1e-5, errors


def test_left_and_right_padding(triton_lln) -> None:
    mask = right_padding_mask([29, 11], 29)
    mask[0, :4] = False  # left padding too
    errors = parity(triton_lln, 29, 8, mask=mask)
    assert max(errors) < 1e-5, errors


def test_eps_enters_like_the_torch_path(triton_lln) -> None:
    """eps is added to the shifted denominator (spec §3.3), as linear_core does: compare with
    the torch path's own float64 evaluation, forward and backward."""
    q, k, v = (t.requires_grad_() for t in qkv(2, 3, 21, 8, scale=2.0))
    mask = right_padding_mask([21, 9], 21)
    alpha, beta = lln_temperatures(q, k, mask, "batch")
    phi_q, phi_k, _ = exp_features(alpha * q, beta * k, mask, causal=False)
    ref = linear_attention(phi_q, phi_k, v, mask, eps=1e-3)
    fp32 = [t.detach().float().requires_grad_() for t in (q, k, v)]
    out = triton_lln.lln_attention(*fp32, alpha.float(), beta.float(), mask, eps=1e-3)
    real = mask[:, None, :, None].double()
    grad = torch.randn_like(ref) * real
    (ref * grad).sum().backward()
    (out * grad.float()).sum().backward()
    errors = relative_errors(out.detach(), ref.detach(), [t.grad for t in fp32],
                             [q.grad, k.grad, v.grad], real)  # fmt: skip
    assert max(errors) < 1e-5, errors


def test_bf16_inputs_within_spec_tolerance(triton_lln) -> None:
    errors = parity(triton_lln, 70, 64, dtype=torch.bfloat16, scale=3.0)
    assert max(errors) < 1e-2, errors


@pytest.mark.parametrize("scope", list(STATS_SCOPES))
def test_moment_statistics_match_masked_std(triton_lln, scope: str) -> None:
    q, k, _ = qkv(2, 3, 45, 8, dtype=torch.float32, scale=1.7)
    q = q + 0.5  # a mean away from 0
    mask = right_padding_mask([45, 20], 45)
    tiling = triton_lln.Tiling(block=16, target_programs=16)
    sq, sk = triton_lln.moment_sigmas(q, k, mask, STATS_SCOPES[scope], tiling)
    for got, x in ((sq, q), (sk, k)):
        want = masked_std(x.double(), mask, STATS_SCOPES[scope])
        assert got.shape == want.shape
        torch.testing.assert_close(got.double(), want, atol=0, rtol=1e-6)


def lln_pair(**options):
    """The same LLN module on the torch and the Triton backends."""
    return [build_attention("lln", num_heads=3, head_dim=16, backend=b, **options).train()
            for b in ("torch", "triton")]  # fmt: skip


@pytest.mark.parametrize(
    "options",
    [{}, {"stats_scope": "head"}, {"fixed_alpha_beta": (0.9, 1.2)}, {"moment_matching": False}],
    ids=["batch", "head", "fixed", "no-mm"],
)
def test_module_backend_triton_equals_torch_backend(triton_lln, options) -> None:
    torch_attn, triton_attn = lln_pair(**options)
    mask = right_padding_mask([33, 21], 33)
    inputs = [t.float().requires_grad_() for t in qkv(2, 3, 33, 16, scale=1.5)]
    clones = [t.detach().clone().requires_grad_() for t in inputs]
    outs = [attn(*x, mask) for attn, x in ((torch_attn, inputs), (triton_attn, clones))]
    assert triton_attn.last_backend == "triton" and torch_attn.last_backend == "torch"
    real = mask[:, None, :, None]
    torch.testing.assert_close(outs[1][real.expand_as(outs[1])],
                               outs[0][real.expand_as(outs[0])], atol=1e-5, rtol=1e-5)  # fmt: skip
    for out in outs:
        (out * real).square().sum().backward()
    for a, b in zip(inputs, clones):
        torch.testing.assert_close(b.grad, a.grad, atol=1e-5, rtol=1e-4)
    assert triton_attn.last_stats.keys() == torch_attn.last_stats.keys()


def test_junk_padding_is_ignored_and_gets_zero_gradient(triton_lln) -> None:
    _, attn = lln_pair(stats_scope="sequence")
    q, k, v = (t.float().requires_grad_() for t in qkv(2, 3, 24, 16))
    mask = right_padding_mask([24, 15], 24)
    pad = ~mask[:, None, :, None]
    junk = [t.masked_fill(pad, float("nan")) for t in (q, k, v)]
    out = attn(*junk, mask)
    assert torch.isfinite(out).all()
    clean = attn(q[1:, :, :15], k[1:, :, :15], v[1:, :, :15])
    torch.testing.assert_close(out[1:, :, :15], clean, atol=1e-6, rtol=1e-5)
    out[mask[:, None, :, None].expand_as(out)].sum().backward()
    for t in (q, k, v):
        assert torch.isfinite(t.grad).all()
        assert torch.all(t.grad.masked_select(pad.expand_as(t.grad)) == 0)


def test_lln_diag_runs_its_lln_branch_on_triton(triton_lln) -> None:
    kwargs = {"num_heads": 2, "head_dim": 16}
    fused = build_attention("lln_diag", backend="triton", **kwargs)
    plain = build_attention("lln_diag", backend="torch", **kwargs)
    q, k, v = (t.float() for t in qkv(1, 2, 40, 16))
    torch.testing.assert_close(fused(q, k, v), plain(q, k, v), atol=1e-5, rtol=1e-5)
    assert fused.last_backend == "triton" and fused.options()["backend"] == "triton"
