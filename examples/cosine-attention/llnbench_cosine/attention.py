"""P = softmax(tau * cos(q_i, k_j)) over the visible keys (cosine attention, as in Swin v2).

Bounded logits in [-tau, tau]: attention cannot concentrate beyond what tau allows, whatever the
norms of q and k. ``learnable_temperature`` makes tau a parameter per head (log-parametrised).
Built only from llnbench's public API: the ``Attention`` base and its mask and dtype helpers.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from llnbench.attention import Attention
from llnbench.attention.base import (
    full_precision,
    key_mask_of,
    upcast_and_zero_padding,
    visibility,
)
from llnbench.errors import ConfigError


class CosineAttention(Attention):
    name = "cosine"
    supports_causal = True
    complexity = "O(N^2 d)"

    def __init__(
        self,
        *,
        num_heads: int,
        head_dim: int,
        causal: bool = False,
        dropout: float = 0.0,
        temperature: float = 10.0,
        learnable_temperature: bool = False,
        eps: float = 1e-6,
    ):
        super().__init__(num_heads=num_heads, head_dim=head_dim, causal=causal, dropout=dropout)
        if temperature <= 0 or eps <= 0:
            raise ConfigError(
                f"cosine attention needs temperature > 0 and eps > 0, got {temperature}, {eps}"
            )
        log_tau = torch.full((num_heads, 1, 1), math.log(temperature))
        if learnable_temperature:
            self.log_tau = nn.Parameter(log_tau)
        else:
            self.register_buffer("log_tau", log_tau)
        self.temperature, self.learnable_temperature, self.eps = (
            temperature,
            learnable_temperature,
            eps,
        )

    def options(self) -> dict[str, object]:
        return {
            "temperature": self.temperature,
            "learnable_temperature": self.learnable_temperature,
        }

    def _logits(self, q: Tensor, k: Tensor) -> Tensor:
        q, k = F.normalize(q, dim=-1, eps=self.eps), F.normalize(k, dim=-1, eps=self.eps)
        return self.log_tau.to(q.dtype).exp() * (q @ k.transpose(-1, -2))

    def forward(
        self, q: Tensor, k: Tensor, v: Tensor, attention_mask: Tensor | None = None
    ) -> Tensor:
        key_mask = key_mask_of(attention_mask, q)
        dtype = v.dtype
        # dtype policy: fp32 (fp64 stays fp64) with autocast off; padded junk zeroed first
        q, k, v = upcast_and_zero_padding(key_mask, q, k, v)
        with full_precision(q.device):
            probs = self._probabilities(q, k, key_mask)
            out = probs @ v
        return out.to(dtype)

    def _probabilities(self, q: Tensor, k: Tensor, key_mask: Tensor | None) -> Tensor:
        logits = self._logits(q, k)
        allowed = visibility(key_mask, q.shape[2], self.causal, q.device)
        if allowed is not None:
            logits = logits.masked_fill(~allowed, float("-inf"))
        probs = torch.softmax(logits, dim=-1)
        if key_mask is not None:  # a padded query's self-visibility is not a real column
            probs = probs.masked_fill(~key_mask[:, None, None, :], 0.0)
        return probs

    def attention_matrix(
        self, q: Tensor, k: Tensor, attention_mask: Tensor | None = None
    ) -> Tensor:
        key_mask = key_mask_of(attention_mask, q)
        q, k = upcast_and_zero_padding(key_mask, q, k)
        with full_precision(q.device):
            return self._probabilities(q, k, key_mask)
