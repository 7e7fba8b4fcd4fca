"""LLN+Diag (arXiv 2311.13541): LLN mixed with exact softmax inside non-overlapping diagonal blocks.

The LLN branch carries long-range context; the block-diagonal softmax branch restores the sharp local
concentration a linear attention lacks. Blocks have width ``diag_block`` (default head_dim); the last
N mod w tokens form one shorter block; each block has its own key mask; causal is lower-triangular
inside each block. Neither branch uses dropout.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from llnbench.attention.base import Attention, key_mask_of, zero_padding
from llnbench.attention.lln import LLNAttention
from llnbench.attention.softmax import softmax_matrix
from llnbench.errors import ConfigError, one_of

COMBINES = ("average", "learnable_ratio", "learnable_scale")


class LLNDiagAttention(Attention):
    name = "lln_diag"
    supports_causal = True
    linear_in_n = True
    complexity = "O(N d^2 + N w d)"
    inner_attention: ClassVar[str] = "lln"

    def __init__(
        self,
        *,
        num_heads: int,
        head_dim: int,
        causal: bool = False,
        dropout: float = 0.0,
        diag_block: int | None = None,
        combine: str = "average",
        **lln_options: Any,
    ):
        super().__init__(num_heads=num_heads, head_dim=head_dim, causal=causal, dropout=dropout)
        if combine not in COMBINES:
            raise one_of("lln_diag combine", combine, COMBINES)
        self.block = int(diag_block) if diag_block else head_dim
        if self.block < 1:
            raise ConfigError(f"diag_block must be positive, got {diag_block}")
        self.combine = combine
        self.lln = LLNAttention(
            num_heads=num_heads, head_dim=head_dim, causal=causal, **lln_options
        )
        shape = (1, num_heads, 1, head_dim)
        if combine in ("learnable_ratio", "learnable_scale"):
            self.ratio = nn.Parameter(torch.full(shape, 0.5))
        if combine == "learnable_scale":
            self.diag_scale = nn.Parameter(torch.full(shape, 0.5))

    def options(self) -> dict[str, object]:
        return {"diag_block": self.block, "combine": self.combine, **self.lln.options()}

    @property
    def last_backend(self) -> str | None:  # the LLN branch's (the Diag branch is SDPA)
        return self.lln.last_backend

    @property
    def last_stats(self) -> dict[str, Tensor]:  # the LLN branch's moment statistics
        return self.lln.last_stats if hasattr(self, "lln") else {}

    @last_stats.setter
    def last_stats(self, value: dict[str, Tensor]) -> None:
        pass  # derived from the LLN branch

    def forward(
        self, q: Tensor, k: Tensor, v: Tensor, attention_mask: Tensor | None = None
    ) -> Tensor:
        key_mask = key_mask_of(attention_mask, q)
        lln_out = self.lln(q, k, v, attention_mask)
        diag_out = block_diagonal_softmax(q, k, v, key_mask, self.block, self.causal).to(
            lln_out.dtype
        )
        if self.combine == "average":
            return 0.5 * lln_out + 0.5 * diag_out
        if self.combine == "learnable_ratio":
            return self.ratio * lln_out + (1 - self.ratio) * diag_out
        return self.ratio * lln_out + self.diag_scale * diag_out

    def attention_matrix(
        self, q: Tensor, k: Tensor, attention_mask: Tensor | None = None
    ) -> Tensor:
        if self.combine != "average":
            raise ConfigError(
                f"lln_diag with combine={self.combine!r} mixes per feature, so it has no single "
                "attention matrix; use combine='average'"
            )
        key_mask = key_mask_of(attention_mask, q)
        p_lln = self.lln.attention_matrix(q, k, attention_mask)
        allowed = block_visibility(key_mask, q.shape[2], self.block, self.causal, q.device)
        return 0.5 * p_lln + 0.5 * softmax_matrix(q, k, allowed, key_mask).to(p_lln.dtype)


def block_visibility(
    key_mask: Tensor | None, n: int, block: int, causal: bool, device: torch.device
) -> Tensor:
    """Bool (B or 1, 1, N, N): same block (and j <= i when causal) and key real, plus the diagonal."""
    pos = torch.arange(n, device=device)
    allowed = (pos[:, None] // block) == (pos[None, :] // block)
    if causal:
        allowed = allowed & (pos[None, :] <= pos[:, None])
    allowed = allowed[None, None]
    if key_mask is not None:
        allowed = allowed & key_mask[:, None, None, :]
    return allowed | torch.eye(n, dtype=torch.bool, device=device)


def block_diagonal_softmax(
    q: Tensor, k: Tensor, v: Tensor, key_mask: Tensor | None, block: int, causal: bool
) -> Tensor:
    """Exact softmax inside consecutive blocks of ``block`` tokens (last one shorter): O(N w d)."""
    n = q.shape[2]
    full = (n // block) * block
    parts = []
    if full:
        parts.append(
            _blocks(
                q[:, :, :full],
                k[:, :, :full],
                v[:, :, :full],
                None if key_mask is None else key_mask[:, :full],
                block,
                causal,
            )
        )
    if full < n:
        parts.append(
            _blocks(
                q[:, :, full:],
                k[:, :, full:],
                v[:, :, full:],
                None if key_mask is None else key_mask[:, full:],
                n - full,
                causal,
            )
        )
    return torch.cat(parts, dim=2)


def _blocks(
    q: Tensor, k: Tensor, v: Tensor, key_mask: Tensor | None, w: int, causal: bool
) -> Tensor:
    """SDPA over (B, H * nb, w, d): N divisible by w, heads and blocks merged into one batch axis."""
    b, h, n, d = q.shape
    nb = n // w
    q, k, v = zero_padding(key_mask, q, k, v)  # inf/NaN junk: 0 weight x inf is NaN
    qb, kb, vb = (t.reshape(b, h * nb, w, d) for t in (q, k, v))
    if key_mask is None:
        out = F.scaled_dot_product_attention(qb, kb, vb, is_causal=causal)
        return out.reshape(b, h, n, d)
    eye = torch.eye(w, dtype=torch.bool, device=q.device)
    allowed = key_mask.reshape(b, 1, nb, 1, w)
    if causal:
        allowed = allowed & torch.ones(w, w, dtype=torch.bool, device=q.device).tril()
    allowed = (allowed | eye).expand(b, h, nb, w, w).reshape(b, h * nb, w, w)
    out = F.scaled_dot_product_attention(qb, kb, vb, attn_mask=allowed)
    return out.reshape(b, h, n, d)
