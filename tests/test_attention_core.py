"""The shared feature-map core: bidirectional and chunked causal forms against dense float64."""

from __future__ import annotations

import pytest
import torch
from helpers import right_padding_mask

from llnbench.attention import linear_core
from llnbench.attention.linear_core import linear_attention, prefix_key_shift
from llnbench.attention.reference import feature_matrix


def positive_features(b, h, n, f, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return tuple(
        torch.rand(b, h, n, f, generator=gen, dtype=torch.float64) + 0.05 for _ in range(2)
    )


@pytest.mark.parametrize("n", [1, 5, 17, 64, 130], ids=lambda n: f"N{n}")
@pytest.mark.parametrize("causal", [False, True], ids=["bidir", "causal"])
def test_core_matches_dense(n: int, causal: bool) -> None:
    phi_q, phi_k = positive_features(2, 2, n, 8)
    v = torch.randn(2, 2, n, 5, dtype=torch.float64)
    out = linear_attention(phi_q, phi_k, v, causal=causal, eps=0.0, chunk=16)
    ref = feature_matrix(phi_q, phi_k, causal=causal) @ v
    torch.testing.assert_close(out, ref, atol=1e-10, rtol=0)


@pytest.mark.parametrize("chunk", [1, 4, 7, 64], ids=lambda c: f"C{c}")
def test_chunked_equals_cumsum_form(chunk: int) -> None:
    """The chunked causal state equals the per-position cumsum of phi_k^T v (tiny-size reference)."""
    phi_q, phi_k = positive_features(1, 2, 13, 4)
    v = torch.randn(1, 2, 13, 3, dtype=torch.float64)
    states = torch.cumsum(phi_k.unsqueeze(-1) * v.unsqueeze(-2), dim=2)  # (B,H,N,F,D)
    norms = torch.cumsum(phi_k, dim=2)
    ref = torch.einsum("bhnf,bhnfd->bhnd", phi_q, states) / (phi_q * norms).sum(-1, keepdim=True)
    out = linear_attention(phi_q, phi_k, v, causal=True, eps=0.0, chunk=chunk)
    torch.testing.assert_close(out, ref, atol=1e-12, rtol=0)


@pytest.mark.parametrize("rows", [1, 3, 512], ids=lambda r: f"rows{r}")
def test_causal_key_shift_is_exact(rows: int, monkeypatch) -> None:
    """Dividing phi_k by exp(prefix max) and decaying by exp(m_j - m_i) leaves outputs unchanged."""
    monkeypatch.setattr(linear_core, "_CHUNK_ROWS", rows)
    n = 37
    phi_q, _ = positive_features(2, 2, n, 6)
    logits_k = 3 * torch.randn(2, 2, n, 6, dtype=torch.float64)
    shift = prefix_key_shift(logits_k.amax(-1), None)
    assert torch.all(shift.diff(dim=-1) >= 0)
    v = torch.randn(2, 2, n, 4, dtype=torch.float64)
    out = linear_attention(
        phi_q,
        torch.exp(logits_k - shift.unsqueeze(-1)),
        v,
        causal=True,
        eps=0.0,
        chunk=5,
        key_shift=shift,
    )
    ref = feature_matrix(phi_q, torch.exp(logits_k), causal=True) @ v
    torch.testing.assert_close(out, ref, atol=1e-10, rtol=0)


def test_prefix_shift_ignores_padding_and_left_padding_is_finite() -> None:
    x = torch.tensor([[[5.0, 1.0, 2.0, 9.0, 3.0]]])
    mask = torch.tensor([[False, True, True, False, True]])
    shift = prefix_key_shift(x, mask)
    assert shift.tolist() == [[[1.0, 1.0, 2.0, 2.0, 3.0]]]


@pytest.mark.parametrize("causal", [False, True], ids=["bidir", "causal"])
def test_padded_keys_have_no_influence(causal: bool) -> None:
    phi_q, phi_k = positive_features(2, 1, 9, 4)
    v = torch.randn(2, 1, 9, 3, dtype=torch.float64)
    mask = right_padding_mask([9, 6], 9)
    junk_k = phi_k.masked_fill(~mask[:, None, :, None], float("inf"))
    junk_v = v.masked_fill(~mask[:, None, :, None], float("nan"))
    out = linear_attention(phi_q, junk_k, junk_v, mask, causal=causal, eps=0.0, chunk=4)
    ref = feature_matrix(phi_q, phi_k, mask, causal=causal) @ v.masked_fill(
        ~mask[:, None, :, None], 0.0
    )
    torch.testing.assert_close(out[1, :, :6], ref[1, :, :6], atol=1e-12, rtol=0)
    torch.testing.assert_close(out[0], ref[0], atol=1e-12, rtol=0)


def test_guards() -> None:
    phi_q = torch.zeros(1, 1, 3, 2, dtype=torch.float64)
    phi_k = torch.ones(1, 1, 3, 2, dtype=torch.float64)
    v = torch.ones(1, 1, 3, 1, dtype=torch.float64)
    assert torch.all(linear_attention(phi_q, phi_k, v, eps=1e-6, guard="clamp") == 0)
    with pytest.raises(ValueError, match="allowed: add, clamp"):
        linear_attention(phi_q, phi_k, v, guard="nope")
