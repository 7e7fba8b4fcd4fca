"""elu + 1 linear attention against its float64 dense form: forward, backward, masks, causality."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from helpers import check_padding, qkv, real_rows, right_padding_mask, with_junk_padding

from llnbench.attention import build_attention
from llnbench.attention.reference import feature_matrix

CAUSAL = pytest.mark.parametrize("causal", [False, True], ids=["bidir", "causal"])


def elu(causal: bool = False, d: int = 8, **options):
    return build_attention("linear_elu", num_heads=2, head_dim=d, causal=causal, **options).eval()


def reference(q, k, v, mask=None, causal=False, eps=1e-6):
    phi_q, phi_k = F.elu(q.double()) + 1, F.elu(k.double()) + 1
    return feature_matrix(phi_q, phi_k, mask, causal, eps) @ v.double()


@pytest.mark.parametrize("n", [1, 5, 17, 64, 130], ids=lambda n: f"N{n}")
@pytest.mark.parametrize("d", [4, 64], ids=lambda d: f"d{d}")
@CAUSAL
def test_float64_matches_dense_form(n: int, d: int, causal: bool) -> None:
    q, k, v = qkv(2, 2, n, d)
    mask = right_padding_mask([n, max(1, n - 3)], n)
    attn = elu(causal, d)
    out = attn(*(with_junk_padding(t, mask) for t in (q, k, v)), mask)
    ref = reference(q, k, v, mask, causal)
    torch.testing.assert_close(
        out[real_rows(mask, out)], ref[real_rows(mask, ref)], atol=1e-10, rtol=0
    )
    torch.testing.assert_close(attn(q, k, v), reference(q, k, v, None, causal), atol=1e-10, rtol=0)


@CAUSAL
def test_backward_matches_dense_form(causal: bool) -> None:
    q, k, v = (t.requires_grad_() for t in qkv(1, 2, 23, 8))
    out = elu(causal, chunk=5)(q, k, v)
    grads = torch.autograd.grad(out.square().sum(), (q, k, v))
    ref_grads = torch.autograd.grad(reference(q, k, v, None, causal).square().sum(), (q, k, v))
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g, r, atol=1e-9, rtol=1e-9)


@CAUSAL
@pytest.mark.parametrize("n", [5, 7], ids=lambda n: f"N{n}")
def test_gradcheck(causal: bool, n: int) -> None:
    q, k, v = (t.requires_grad_() for t in qkv(1, 2, n, 4))
    attn = elu(causal, d=4, chunk=3)
    mask = torch.tensor([[True] * (n - 1) + [False]])
    assert torch.autograd.gradcheck(lambda q, k, v: attn(q, k, v, mask)[:, :, : n - 1], (q, k, v))


@CAUSAL
def test_matrix_times_v_equals_forward(causal: bool) -> None:
    q, k, v = qkv(2, 2, 40, 8)
    mask = right_padding_mask([40, 21], 40)
    attn = elu(causal)
    out = attn(q, k, v, mask)
    p = attn.attention_matrix(q, k, mask)
    torch.testing.assert_close(
        (p @ v)[real_rows(mask, out)], out[real_rows(mask, out)], atol=1e-10, rtol=0
    )
    assert torch.all(p >= 0) and torch.all(p[1, :, :, 21:] == 0)


def test_causal_prefix_and_future_content() -> None:
    q, k, v = qkv(1, 2, 50, 8)
    attn = elu(True, chunk=8)
    full = attn(q, k, v)
    for t in (1, 17, 49):
        torch.testing.assert_close(
            attn(q[:, :, :t], k[:, :, :t], v[:, :, :t]), full[:, :, :t], atol=1e-12, rtol=0
        )
    evil = [x.clone() for x in (q, k, v)]
    for x in evil:
        x[:, :, 30:] = 500.0
    torch.testing.assert_close(attn(*evil)[:, :, :30], full[:, :, :30], atol=1e-12, rtol=0)


@CAUSAL
@pytest.mark.parametrize("junk", [1e4, float("inf"), float("nan")], ids=["big", "inf", "nan"])
def test_padding_invariance_and_finite_gradients(causal: bool, junk: float) -> None:
    check_padding(elu(causal), d=8, junk=junk)


def test_left_padding_is_finite() -> None:
    q, k, v = qkv(1, 2, 6, 4)
    mask = torch.tensor([[False, False, True, True, True, True]])
    assert torch.isfinite(elu(True, d=4)(q, k, v, mask)).all()
