"""cosFormer (arXiv 2202.08791): ReLU features with a cos-based re-weighting of distance.

    P_ij ∝ ReLU(q_i) . ReLU(k_j) cos(theta_i - theta_j),   theta_i = pi i / (2M),  i = 1..n_b

where i is the position among the sequence's real tokens; the weight lies in (0, 1] since |i - j| < M.
cos(a - b) = sin a sin b + cos a cos b, so the features [ReLU(x) sin theta, ReLU(x) cos theta] (2d)
run through the shared linear core (bidirectional or chunked causal), with the official ``clamp``
guard: den = max(phi_q . z, eps). A query whose features are all zero gets output 0 and a zero row.

``cos_m`` (spec §8 #19): ``"real"`` (default) M = n_b, which makes the output independent of padding;
``"padded"`` reproduces the official code, positions 1..N of the padded sequence with M = N. An
integer fixes M (>= N), positions among real tokens. Decided here: with M = n_b a causal output
ignores the *content* of later tokens but not their number (M is the sequence length, as in the
paper), so ``causal(x)[:t] == causal(x[:t])`` holds only with a fixed integer M.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from llnbench.attention.linear_core import FeatureMapAttention
from llnbench.errors import ConfigError, one_of

COS_M = ("real", "padded")


class CosFormerAttention(FeatureMapAttention):
    name = "cosformer"
    supports_causal = True
    guard = "clamp"  # as the official code

    def __init__(
        self,
        *,
        num_heads: int,
        head_dim: int,
        causal: bool = False,
        dropout: float = 0.0,
        eps: float = 1e-6,
        cos_m: str | int = "real",
        chunk: int = 64,
    ):
        super().__init__(num_heads=num_heads, head_dim=head_dim, causal=causal, dropout=dropout)
        if isinstance(cos_m, bool) or not isinstance(cos_m, str | int):
            raise one_of("cosformer cos_m", cos_m, [*COS_M, "a positive integer"])
        if isinstance(cos_m, str) and cos_m not in COS_M:
            raise one_of("cosformer cos_m", cos_m, [*COS_M, "a positive integer"])
        if isinstance(cos_m, int) and cos_m < 1:
            raise ConfigError(f"cosformer cos_m must be a positive integer, got {cos_m}")
        if chunk < 1:
            raise ConfigError(f"cosformer chunk must be positive, got {chunk}")
        self.eps = float(eps)
        self.cos_m = cos_m
        self.chunk = int(chunk)

    def options(self) -> dict[str, object]:
        return {"eps": self.eps, "cos_m": self.cos_m}

    def angles(self, key_mask: Tensor | None, batch: int, n: int, like: Tensor) -> Tensor:
        """theta (B or 1, 1, N, 1): pi / 2 * position / M."""
        if self.cos_m == "padded":
            position = torch.arange(1, n + 1, dtype=like.dtype, device=like.device)[None]
            return (math.pi / 2 * position / n)[:, None, :, None]
        if isinstance(self.cos_m, int) and n > self.cos_m:
            raise ValueError(f"cosformer cos_m={self.cos_m} is shorter than the sequence ({n})")
        if key_mask is None:
            real = torch.ones(1, n, dtype=torch.bool, device=like.device)
        else:
            real = key_mask
        position = real.cumsum(-1).to(like.dtype)  # 1..n_b on the real tokens
        total = real.sum(-1, keepdim=True).to(like.dtype) if self.cos_m == "real" else self.cos_m
        return (math.pi / 2 * position / total)[:, None, :, None]

    def feature_maps(
        self, q: Tensor, k: Tensor, key_mask: Tensor | None, *, eval_path: bool
    ) -> tuple[Tensor, Tensor, None]:
        """[ReLU(x) sin theta, ReLU(x) cos theta] for q and k (padded rows arrive zeroed)."""
        theta = self.angles(key_mask, q.shape[0], q.shape[2], q)
        sin, cos = torch.sin(theta), torch.cos(theta)
        q, k = torch.relu(q), torch.relu(k)
        return torch.cat([q * sin, q * cos], dim=-1), torch.cat([k * sin, k * cos], dim=-1), None
