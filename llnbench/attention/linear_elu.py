"""Linear attention with the elu + 1 feature map (Katharopoulos et al., arXiv 2006.16236).

phi(x) = elu(x) + 1 (x + 1 for x > 0, e^x otherwise), F = d, no temperature. The shared core
(linear_core) gives out_i = phi(q_i) S / (phi(q_i) . z + eps), bidirectional or chunked causal; phi is
bounded by x + 1, so no max shift is needed and causal mode is strictly causal as it stands.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from llnbench.attention.linear_core import FeatureMapAttention
from llnbench.errors import ConfigError


class LinearEluAttention(FeatureMapAttention):
    name = "linear_elu"
    supports_causal = True

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

    def feature_maps(
        self, q: Tensor, k: Tensor, key_mask: Tensor | None, *, eval_path: bool
    ) -> tuple[Tensor, Tensor, None]:
        """elu + 1: positive, no shift needed (padded rows arrive zeroed)."""
        return F.elu(q) + 1, F.elu(k) + 1, None
