"""Local sliding-window attention against band-masked dense float64 softmax."""

from __future__ import annotations

import pytest
import torch
from helpers import check_padding, qkv, real_rows, right_padding_mask

from llnbench.attention import build_attention
from llnbench.attention.reference import band_softmax_matrix, softmax_matrix
from llnbench.testing import (
    check_backward,
    check_causal_prefix,
    check_forward,
    check_gradcheck,
    check_matrix,
)

CAUSAL = pytest.mark.parametrize("causal", [False, True], ids=["bidir", "causal"])


def local(causal: bool = False, window: int = 4, d: int = 8, **options):
    return build_attention(
        "local", num_heads=2, head_dim=d, causal=causal, window=window, **options
    ).eval()


@pytest.mark.parametrize("n", [1, 5, 17, 64, 130], ids=lambda n: f"N{n}")
@pytest.mark.parametrize("window", [1, 4, 32], ids=lambda r: f"r{r}")
@CAUSAL
def test_float64_matches_band_softmax(n: int, window: int, causal: bool) -> None:
    def band(attn, q, k, v, mask):
        return band_softmax_matrix(q, k, window, mask, causal) @ v

    attn = local(causal, window)
    check_forward(attn, band, n=n)
    check_matrix(attn, n=n, lengths=(n, max(1, n - 3)))


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
    check_backward(
        local(causal, window=5),
        lambda attn, q, k, v, m: band_softmax_matrix(q, k, 5, None, causal) @ v,
    )


@CAUSAL
@pytest.mark.parametrize("n", [5, 7], ids=lambda n: f"N{n}")
def test_gradcheck(causal: bool, n: int) -> None:
    check_gradcheck(local(causal, window=2, d=4), n=n)


def test_causal_prefix() -> None:
    check_causal_prefix(local(True, window=6), prefixes=(1, 13, 49), future=None)


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
