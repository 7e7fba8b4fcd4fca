"""Softmax through SDPA against the explicit float64 formula."""

from __future__ import annotations

import pytest
import torch
from helpers import qkv, right_padding_mask, with_junk_padding

from llnbench.attention import build_attention
from llnbench.attention.reference import softmax_matrix
from llnbench.testing import check_forward, check_gradcheck, check_matrix, check_padding

CASES = [(False, False), (True, False), (False, True), (True, True)]
IDS = ["plain", "causal", "mask", "causal+mask"]


@pytest.mark.parametrize("n", [1, 5, 17, 64, 130], ids=lambda n: f"N{n}")
@pytest.mark.parametrize(("causal", "masked"), CASES, ids=IDS)
def test_sdpa_matches_reference(n: int, causal: bool, masked: bool) -> None:
    def explicit(attn, q, k, v, mask):
        return softmax_matrix(q, k, mask, causal) @ v

    attn = build_attention("softmax", num_heads=2, head_dim=8, causal=causal).eval()
    check_forward(attn, explicit, n=n, junk=None, masked=masked, unmasked=not masked)
    check_matrix(attn, n=n, lengths=(n, max(1, n - 3)), masked=masked)


def test_rows_sum_to_one_and_padding_is_ignored() -> None:
    q, k, v = qkv(2, 3, 20, 4)
    mask = right_padding_mask([20, 11], 20)
    attn = build_attention("softmax", num_heads=3, head_dim=4, causal=True).eval()
    p = attn.attention_matrix(q, k, mask)
    sums = p.sum(-1)[mask[:, None, :].expand(2, 3, 20)]
    torch.testing.assert_close(sums, torch.ones_like(sums), atol=1e-12, rtol=0)
    assert torch.all(p[1, :, :, 11:] == 0)
    junk = attn(
        with_junk_padding(q, mask), with_junk_padding(k, mask), with_junk_padding(v, mask), mask
    )
    clean = attn(q[1:, :, :11], k[1:, :, :11], v[1:, :, :11])
    torch.testing.assert_close(junk[1:, :, :11], clean, atol=1e-10, rtol=0)
    assert torch.isfinite(junk).all()


def test_left_padding_causal_is_finite() -> None:
    q, k, v = qkv(1, 1, 6, 4)
    mask = torch.tensor([[False, False, True, True, True, True]])
    out = build_attention("softmax", num_heads=1, head_dim=4, causal=True)(q, k, v, mask)
    assert torch.isfinite(out).all()


def test_dropout_only_in_training() -> None:
    q, k, v = qkv(1, 2, 32, 8, dtype=torch.float32)
    attn = build_attention("softmax", num_heads=2, head_dim=8, dropout=0.5)
    assert attn.uses_attn_dropout
    attn.eval()
    torch.testing.assert_close(attn(q, k, v), attn(q, k, v))
    attn.train()
    assert not torch.allclose(attn(q, k, v), attn(q, k, v))


def test_gradcheck() -> None:
    check_gradcheck(build_attention("softmax", num_heads=2, head_dim=4, causal=True).eval(), n=5)


@pytest.mark.parametrize("causal", [False, True], ids=["bidir", "causal"])
@pytest.mark.parametrize("junk", [float("inf"), float("nan")], ids=["inf", "nan"])
def test_non_finite_padding_is_ignored(causal: bool, junk: float) -> None:
    """SDPA gives a masked key weight 0, but 0 * inf is NaN: padded rows are zeroed first."""
    check_padding(build_attention("softmax", num_heads=2, head_dim=8, causal=causal), junk=junk)
