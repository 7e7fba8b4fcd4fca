"""Local sliding-window attention: exact softmax over |i - j| <= r (i - r <= j <= i when causal).

The usual sparse-attention baseline (e.g. Longformer's window, arXiv 2004.05150). Queries are split
into blocks of r; each block attends to the previous, its own and the next key block (previous and own
when causal) under the exact band mask, so time and memory are O(N r d) and no N x N matrix is formed.
Blocks go through SDPA (batched over blocks), which also applies attention dropout in training. Every
query also sees itself, so padded queries stay finite. ``window >= N`` gives exactly softmax.

Open point decided (spec §8 #21): r = 32, about 65 keys per query, close to LLN+Diag's block of 64.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from llnbench.attention.base import Attention, key_mask_of
from llnbench.attention.softmax import softmax_matrix
from llnbench.errors import ConfigError


def band_visibility(
    key_mask: Tensor | None, n: int, window: int, causal: bool, device: torch.device
) -> Tensor:
    """Bool (B or 1, 1, N, N): key j inside query i's window (and real), plus the diagonal."""
    pos = torch.arange(n, device=device)
    allowed = _in_band(pos[:, None] - pos[None, :], window, causal)[None, None]
    if key_mask is not None:
        allowed = allowed & key_mask[:, None, None, :]
    return allowed | torch.eye(n, dtype=torch.bool, device=device)


def _in_band(offset: Tensor, window: int, causal: bool) -> Tensor:
    """offset = i - j."""
    if causal:
        return (offset >= 0) & (offset <= window)
    return offset.abs() <= window


class LocalAttention(Attention):
    name = "local"
    supports_causal = True
    linear_in_n = True
    uses_attn_dropout = True
    complexity = "O(N r d)"

    def __init__(
        self,
        *,
        num_heads: int,
        head_dim: int,
        causal: bool = False,
        dropout: float = 0.0,
        window: int = 32,
    ):
        super().__init__(num_heads=num_heads, head_dim=head_dim, causal=causal, dropout=dropout)
        if window < 1:
            raise ConfigError(f"local window must be positive, got {window}")
        self.window = int(window)

    def options(self) -> dict[str, object]:
        return {"window": self.window}

    def forward(
        self, q: Tensor, k: Tensor, v: Tensor, attention_mask: Tensor | None = None
    ) -> Tensor:
        key_mask = key_mask_of(attention_mask, q)
        out_dtype = v.dtype
        if key_mask is not None:  # junk in padded rows (even inf/NaN) must reach no product
            pad = ~key_mask[:, None, :, None]
            q, k, v = (t.masked_fill(pad, 0.0) for t in (q, k, v))
        b, h, n, d = q.shape
        w = min(self.window, n)  # one block when the window covers the sequence
        nb = -(-n // w)
        extra = nb * w - n
        # keys and values with one empty block on each side: block i + 1 is query block i
        kb, vb = (F.pad(t, (0, 0, w, w + extra)).view(b, h, nb + 2, w, d) for t in (k, v))
        spans = 2 if self.causal else 3
        keys = torch.cat([kb[:, :, i : i + nb] for i in range(spans)], dim=-2)
        values = torch.cat([vb[:, :, i : i + nb] for i in range(spans)], dim=-2)
        queries = F.pad(q, (0, 0, 0, extra)).view(b, h, nb, w, d)

        q_pos = torch.arange(nb * w, device=q.device).view(nb, w)
        k_pos = q_pos[:, :1] + torch.arange(-w, (spans - 1) * w, device=q.device)  # (nb, spans w)
        offset = q_pos[:, :, None] - k_pos[:, None, :]  # (nb, w, spans w)
        allowed = _in_band(offset, self.window, self.causal) & ((k_pos >= 0) & (k_pos < n))[:, None]
        if key_mask is not None:
            real = F.pad(key_mask, (w, w + extra), value=False)[:, k_pos + w]  # (B, nb, spans w)
            allowed = allowed & real[:, :, None, :]
        allowed = (allowed | (offset == 0)).unsqueeze(-4)  # broadcast over heads
        out = F.scaled_dot_product_attention(
            queries,
            keys,
            values,
            attn_mask=allowed,
            dropout_p=self.dropout if self.training else 0.0,
        )
        return out.reshape(b, h, nb * w, d)[:, :, :n].to(out_dtype)

    def attention_matrix(
        self, q: Tensor, k: Tensor, attention_mask: Tensor | None = None
    ) -> Tensor:
        key_mask = key_mask_of(attention_mask, q)
        allowed = band_visibility(key_mask, q.shape[2], self.window, self.causal, q.device)
        return softmax_matrix(q, k, allowed, key_mask)
