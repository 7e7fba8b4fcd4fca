"""The mechanism against llnbench's exactness kit, from this package's own pytest."""

from __future__ import annotations

import math

import pytest
import torch
from llnbench_cosine import CosineAttention

from llnbench.attention import attention_options, build_attention
from llnbench.testing import check_attention, check_forward


def cosine_reference(attn, q, k, v, mask):
    """Written from the formula, one query at a time in float64: softmax over the visible keys of
    tau * q.k / (|q| |k|)."""
    b, h, n, _ = q.shape
    tau = torch.exp(attn.log_tau.double()).reshape(h)
    out = torch.zeros(b, h, n, v.shape[-1], dtype=torch.float64)
    for i_b in range(b):
        for i_h in range(h):
            for i in range(n):
                keys = [j for j in range(n) if (mask is None or mask[i_b, j]) and
                        (not attn.causal or j <= i)]  # fmt: skip
                if not keys:  # a padded query with no visible key: unspecified, leave 0
                    continue
                qi = q[i_b, i_h, i].double()
                logits = torch.stack([
                    tau[i_h] * (qi @ k[i_b, i_h, j].double())
                    / (max(qi.norm(), attn.eps) * max(k[i_b, i_h, j].double().norm(), attn.eps))
                    for j in keys
                ])  # fmt: skip
                weights = torch.softmax(logits, dim=0)
                out[i_b, i_h, i] = sum(w * v[i_b, i_h, j].double() for w, j in zip(weights, keys))
    return out


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
