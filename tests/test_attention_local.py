"""Local sliding-window attention against band-masked dense float64 softmax."""

from __future__ import annotations

import pytest
import torch
from helpers import check_padding, qkv, real_rows, right_padding_mask, with_junk_padding

from llnbench.attention import build_attention
from llnbench.attention.reference import band_softmax_matrix, softmax_matrix

CAUSAL = pytest.mark.parametrize("causal", [False, True], ids=["bidir", "causal"])


def local(causal: bool = False, window: int = 4, d: int = 8, **options):
    return build_attention(
        "local", num_heads=2, head_dim=d, causal=causal, window=window, **options
    ).eval()


@pytest.mark.parametrize("n", [1, 5, 17, 64, 130], ids=lambda n: f"N{n}")
@pytest.mark.parametrize("window", [1, 4, 32], ids=lambda r: f"r{r}")
@CAUSAL
def test_float64_matches_band_softmax(n: int, window: int, causal: bool) -> None:
    q, k, v = qkv(2, 2, n, 8)
    mask = right_padding_mask([n, max(1, n - 3)], n)
    attn = local(causal, window)
    out = attn(*(with_junk_padding(t, mask) for t in (q, k, v)), mask)
    ref = band_softmax_matrix(q, k, window, mask, causal) @ v
    torch.testing.assert_close(
        out[real_rows(mask, out)], ref[real_rows(mask, ref)], atol=1e-10, rtol=0
    )
    plain = band_softmax_matrix(q, k, window, None, causal) @ v
    torch.testing.assert_close(attn(q, k, v), plain, atol=1e-10, rtol=0)
    p = attn.attention_matrix(q, k, mask)
    torch.testing.assert_close(
        (p @ v)[real_rows(mask, out)], out[real_rows(mask, out)], atol=1e-10, rtol=0
    )


@CAUSAL
@pytest.mark.parametrize("n", [5, 40], ids=lambda n: f"N{n}")
def test_window_covering_sequence_is_softmax(causal: bool, n: int) -> None:
    q, k, v = qkv(2, 2, n, 8)
    mask = right_padding_mask([n, n - 2], n)
    out = local(causal, window=n)(q, k, v, mask)
    ref = softmax_matrix(q, k, mask, causal) @ v
    torch.testing.assert_close(
        out[real_rows(mask, out)], ref[real_rows(mask, ref)], atol=1e-10, rtol=0
    )
    torch.testing.assert_close(
        local(causal, window=10 * n)(q, k, v),
        softmax_matrix(q, k, None, causal) @ v,
        atol=1e-10,
        rtol=0,
    )


@CAUSAL
def test_backward_matches_band_softmax(causal: bool) -> None:
    q, k, v = (t.requires_grad_() for t in qkv(1, 2, 23, 8))
    out = local(causal, window=5)(q, k, v)
    grads = torch.autograd.grad(out.square().sum(), (q, k, v))
    ref = band_softmax_matrix(q, k, 5, None, causal) @ v
    ref_grads = torch.autograd.grad(ref.square().sum(), (q, k, v))
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g, r, atol=1e-9, rtol=1e-9)


@CAUSAL
@pytest.mark.parametrize("n", [5, 7], ids=lambda n: f"N{n}")
def test_gradcheck(causal: bool, n: int) -> None:
    q, k, v = (t.requires_grad_() for t in qkv(1, 2, n, 4))
    attn = local(causal, window=2, d=4)
    mask = torch.tensor([[True] * (n - 1) + [False]])
    assert torch.autograd.gradcheck(lambda q, k, v: attn(q, k, v, mask)[:, :, : n - 1], (q, k, v))


def test_causal_prefix() -> None:
    q, k, v = qkv(1, 2, 50, 8)
    attn = local(True, window=6)
    full = attn(q, k, v)
    for t in (1, 13, 49):
        torch.testing.assert_close(
            attn(q[:, :, :t], k[:, :, :t], v[:, :, :t]), full[:, :, :t], atol=1e-12, rtol=0
        )


@CAUSAL
@pytest.mark.parametrize("junk", [1e4, float("nan")], ids=["big", "nan"])
def test_padding_invariance_and_finite_gradients(causal: bool, junk: float) -> None:
    check_padding(local(causal, window=4), d=8, junk=junk)


def test_left_padding_is_finite() -> None:
    q, k, v = qkv(1, 2, 9, 4)
    mask = torch.tensor([[False] * 5 + [True] * 4])
    assert torch.isfinite(local(True, window=2, d=4)(q, k, v, mask)).all()


def test_dropout_only_in_training() -> None:
    q, k, v = qkv(1, 2, 32, 8, dtype=torch.float32)
    attn = local(window=4, dropout=0.5)
    assert attn.uses_attn_dropout
    torch.testing.assert_close(attn(q, k, v), attn(q, k, v))
    attn.train()
    assert not torch.allclose(attn(q, k, v), attn(q, k, v))
