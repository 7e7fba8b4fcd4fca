"""Softmax attention (the reference): P = softmax(q k^T / sqrt(d)), out = P v, through SDPA.

SDPA dispatches to flash / memory-efficient / cuDNN kernels on CUDA and to the flash CPU kernel on
CPU, never a naive N x N loop. ``llnbench scale`` pins each of those kernels in turn
(``bench/cells.sdpa_backend``) and compares every mechanism against the fastest.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from llnbench.attention.base import Attention, core_dtype, key_mask_of, visibility, zero_padding


class SoftmaxAttention(Attention):
    name = "softmax"
    supports_causal = True
    linear_in_n = False
    uses_attn_dropout = True
    complexity = "O(N^2 d)"

    def __init__(
        self, *, num_heads: int, head_dim: int, causal: bool = False, dropout: float = 0.0
    ):
        super().__init__(num_heads=num_heads, head_dim=head_dim, causal=causal, dropout=dropout)

    def forward(
        self, q: Tensor, k: Tensor, v: Tensor, attention_mask: Tensor | None = None
    ) -> Tensor:
        key_mask = key_mask_of(attention_mask, q)
        dropout_p = self.dropout if self.training else 0.0
        if key_mask is None:
            # no mask argument keeps the flash kernels eligible
            return F.scaled_dot_product_attention(
                q, k, v, dropout_p=dropout_p, is_causal=self.causal
            )
        q, k, v = zero_padding(key_mask, q, k, v)  # inf/NaN junk: 0 weight x inf is NaN
        if self.causal:
            mask = visibility(key_mask, q.shape[2], True, q.device)  # (B, 1, N, N)
        else:
            mask = key_mask[:, None, None, :]  # (B, 1, 1, N); every sequence has a real token
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)

    def attention_matrix(
        self, q: Tensor, k: Tensor, attention_mask: Tensor | None = None
    ) -> Tensor:
        key_mask = key_mask_of(attention_mask, q)
        allowed = visibility(key_mask, q.shape[2], self.causal, q.device)
        return softmax_matrix(q, k, allowed, key_mask)


def softmax_matrix(q: Tensor, k: Tensor, allowed: Tensor | None, key_mask: Tensor | None) -> Tensor:
    """Dense softmax(q k^T / sqrt(d)) over the ``allowed`` keys, in fp32 (fp64 for fp64 inputs)."""
    dtype = core_dtype(q)
    logits = (q.to(dtype) @ k.to(dtype).transpose(-1, -2)) / math.sqrt(q.shape[-1])
    if allowed is not None:
        logits = logits.masked_fill(~allowed, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    if key_mask is not None:  # a padded query's self-visibility is not a real column
        probs = probs.masked_fill(~key_mask[:, None, None, :], 0.0)
    return probs
