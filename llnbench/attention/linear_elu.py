"""Linear attention with the elu + 1 feature map (Katharopoulos et al., arXiv 2006.16236).

phi(x) = elu(x) + 1 (x + 1 for x > 0, e^x otherwise), F = d, no temperature. The shared core
(linear_core) gives out_i = phi(q_i) S / (phi(q_i) . z + eps), bidirectional or chunked causal; phi is
bounded by x + 1, so no max shift is needed and causal mode is strictly causal as it stands.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from llnbench.attention.base import Attention, full_precision, key_mask_of, upcast
from llnbench.attention.linear_core import (
    dense_linear_matrix,
    dense_linear_weights,
    linear_attention,
)
from llnbench.errors import ConfigError


class LinearEluAttention(Attention):
    name = "linear_elu"
    supports_causal = True
    linear_in_n = True
    complexity = "O(N d^2)"

    def __init__(
        self,
        *,
        num_heads: int,
        head_dim: int,
        causal: bool = False,
        dropout: float = 0.0,
        eps: float = 1e-6,
        chunk: int = 64,
    ):
        super().__init__(num_heads=num_heads, head_dim=head_dim, causal=causal, dropout=dropout)
        if chunk < 1:
            raise ConfigError(f"linear_elu chunk must be positive, got {chunk}")
        self.eps = float(eps)
        self.chunk = int(chunk)

    def options(self) -> dict[str, object]:
        return {"eps": self.eps}

    def features(self, q: Tensor, k: Tensor, key_mask: Tensor | None) -> tuple[Tensor, Tensor]:
        """elu + 1 of q and k, upcast; padded rows are zeroed first so junk cannot reach autograd."""
        q, k = upcast(q, k)
        if key_mask is not None:
            pad = ~key_mask[:, None, :, None]
            q, k = q.masked_fill(pad, 0.0), k.masked_fill(pad, 0.0)
        return F.elu(q) + 1, F.elu(k) + 1

    def forward(
        self, q: Tensor, k: Tensor, v: Tensor, attention_mask: Tensor | None = None
    ) -> Tensor:
        key_mask = key_mask_of(attention_mask, q)
        out_dtype = v.dtype
        with full_precision(q.device):
            phi_q, phi_k = self.features(q, k, key_mask)
            (v,) = upcast(v)
            out = linear_attention(
                phi_q, phi_k, v, key_mask, causal=self.causal, eps=self.eps, chunk=self.chunk
            )
        return out.to(out_dtype)

    def attention_matrix(
        self, q: Tensor, k: Tensor, attention_mask: Tensor | None = None
    ) -> Tensor:
        key_mask = key_mask_of(attention_mask, q)
        with full_precision(q.device):
            phi_q, phi_k = self.features(q, k, key_mask)
            w = dense_linear_weights(phi_q, phi_k, key_mask, causal=self.causal)
            return dense_linear_matrix(w, self.eps)
