"""The mechanism against llnbench's exactness kit, from this package's own pytest."""

from __future__ import annotations

import math

import pytest
import torch
from llnbench_cosine import CosineAttention

from llnbench.attention import attention_options, build_attention
from llnbench.testing import check_attention, check_forward


def cosine_reference(attn, q, k, v, mask):
    """Written from the formula in float64: softmax over the visible keys j of
    tau * q_i.k_j / (max(|q_i|, eps) max(|k_j|, eps)), visible = real (and j <= i if causal)."""
    q, k, v = q.double(), k.double(), v.double()
    n = q.shape[2]
    tau = torch.exp(attn.log_tau.double())  # (H, 1, 1)
    norms_q = q.norm(dim=-1, keepdim=True).clamp_min(attn.eps)
    norms_k = k.norm(dim=-1, keepdim=True).clamp_min(attn.eps)
    cosine = (q @ k.transpose(-1, -2)) / (norms_q * norms_k.transpose(-1, -2))
    visible = torch.ones(q.shape[0], 1, n, n, dtype=torch.bool)
    if mask is not None:
        visible = visible & mask.bool()[:, None, None, :]
    if attn.causal:
        visible = visible & torch.ones(n, n, dtype=torch.bool).tril()
    weights = torch.where(visible, torch.exp(tau * cosine - tau), 0.0)  # tau * cos <= tau
    total = weights.sum(-1, keepdim=True)
    # a padded query may see no key at all: its output is unspecified, here 0
    return torch.where(total > 0, weights / total, 0.0) @ v


class LeakyCosineAttention(CosineAttention):
    """A deliberately broken variant: it forgets the padding mask."""

    def forward(self, q, k, v, attention_mask=None):
        return super().forward(q, k, v, None)


def test_meets_the_llnbench_contract() -> None:
    done = check_attention(CosineAttention, cosine_reference, lengths=(1, 5, 17))
    assert "causal prefixes" in done and "bidirectional gradcheck" in done


def test_learnable_temperature_meets_the_contract() -> None:
    check_attention(
        CosineAttention, options={"temperature": 3.0, "learnable_temperature": True},
        causal=[False], lengths=(9,), gradcheck=False,
    )  # fmt: skip


def test_the_kit_catches_a_broken_variant() -> None:
    with pytest.raises(AssertionError, match="forward vs reference"):
        check_attention(LeakyCosineAttention, cosine_reference, lengths=(5,))


def test_long_sequences_against_the_dense_matrix() -> None:
    attn = CosineAttention(num_heads=2, head_dim=16, causal=True).double().eval()
    check_forward(attn, n=300)


def test_registered_through_the_entry_point() -> None:
    assert set(attention_options("cosine")) == {"temperature", "learnable_temperature", "eps"}
    attn = build_attention("cosine", num_heads=1, head_dim=4, temperature=2)
    assert isinstance(attn, CosineAttention) and math.isclose(attn.log_tau.exp().item(), 2.0)
