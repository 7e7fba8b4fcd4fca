"""Softmax through SDPA against the explicit float64 formula."""

from __future__ import annotations

import pytest
import torch
from helpers import qkv, right_padding_mask, with_junk_padding

from llnbench.attention import build_attention
from llnbench.attention.reference import softmax_matrix

CASES = [(False, False), (True, False), (False, True), (True, True)]
IDS = ["plain", "causal", "mask", "causal+mask"]


@pytest.mark.parametrize("n", [1, 5, 17, 64, 130], ids=lambda n: f"N{n}")
@pytest.mark.parametrize(("causal", "masked"), CASES, ids=IDS)
def test_sdpa_matches_reference(n: int, causal: bool, masked: bool) -> None:
    q, k, v = qkv(2, 2, n, 8)
    mask = right_padding_mask([n, max(1, n - 3)], n) if masked else None
    attn = build_attention("softmax", num_heads=2, head_dim=8, causal=causal).eval()
    out = attn(q, k, v, mask)
    ref = softmax_matrix(q, k, mask, causal) @ v
    real = slice(None) if mask is None else mask[:, None, :, None].expand_as(out)
    torch.testing.assert_close(out[real], ref[real], atol=1e-10, rtol=0)
    matrix = attn.attention_matrix(q, k, mask)
    torch.testing.assert_close((matrix @ v)[real], out[real], atol=1e-10, rtol=0)


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
    q, k, v = (t.requires_grad_() for t in qkv(1, 2, 5, 4))
    mask = torch.tensor([[True, True, True, True, False]])
    attn = build_attention("softmax", num_heads=2, head_dim=4, causal=True).eval()
    assert torch.autograd.gradcheck(lambda q, k, v: attn(q, k, v, mask)[:, :, :4], (q, k, v))
