"""Nyströmformer (arXiv 2102.03902): softmax attention through m landmarks, P ~ F pinv(A) Bm.

With q~ = d^(-1/4) q, k~ = d^(-1/4) k and landmarks Q̄, K̄ = segment means of q~, k~ over each
sequence's real tokens (segments as LARA's, lara.segment_matrix):

    F = softmax_row(q~ K̄^T) (N x m),  A = softmax_row(Q̄ K̄^T) (m x m),  Bm = softmax_row(Q̄ k~^T) (m x N)
    out = F Z (Bm V) + conv(V),   Z = Newton-Schulz approximation of pinv(A).

Z0 = A^T / (max column sum of A) per (b, h) (the official "original" init maxes over the whole batch,
coupling batch items); then ``pinv_iters`` iterations Z <- Z (13 I - AZ (15 I - AZ (7 I - AZ))) / 4.
Stopping at 6 is part of the method; ``pinv_iters=0`` takes the exact ``torch.linalg.pinv`` (tests).

When a sequence has fewer real tokens than landmarks, the empty slots get identity rows and columns in
A, zero columns in F and uniform-over-real-keys rows in Bm: they contribute exactly nothing and stay
finite. The value conv (default on, kernel 33 as released) is a depthwise convolution of V along the
sequence per head, without bias, over zero-padded V; it is not part of ``attention_matrix``, whose rows
sum to 1 only up to the pinv error and may have negative entries.

Open point decided (spec §8 #20): 64 landmarks, conv 33 on, Z0 per (b, h), 6 iterations.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from llnbench.attention.base import Attention, full_precision, key_mask_of, upcast_and_zero_padding
from llnbench.attention.lara import segment_matrix
from llnbench.errors import ConfigError


def newton_schulz_pinv(a: Tensor, iters: int) -> Tensor:
    """Iterative Moore-Penrose inverse of (..., m, m) matrices, initialised per matrix."""
    eye = torch.eye(a.shape[-1], dtype=a.dtype, device=a.device)
    z = a.transpose(-1, -2) / a.sum(-2).amax(-1)[..., None, None]
    for _ in range(iters):
        az = a @ z
        z = 0.25 * z @ (13 * eye - az @ (15 * eye - az @ (7 * eye - az)))
    return z


class NystromAttention(Attention):
    name = "nystrom"
    supports_causal = False
    linear_in_n = True
    complexity = "O(N m d + m^3)"

    def __init__(
        self,
        *,
        num_heads: int,
        head_dim: int,
        causal: bool = False,
        dropout: float = 0.0,
        num_landmarks: int = 64,
        pinv_iters: int = 6,
        conv_kernel: int = 33,
    ):
        super().__init__(num_heads=num_heads, head_dim=head_dim, causal=causal, dropout=dropout)
        if num_landmarks < 1 or pinv_iters < 0:
            raise ConfigError(
                "Nystrom num_landmarks must be positive and pinv_iters non-negative, got "
                f"{num_landmarks}, {pinv_iters}"
            )
        if conv_kernel < 0 or (conv_kernel and conv_kernel % 2 == 0):
            raise ConfigError(f"Nystrom conv_kernel must be odd, or 0 for none; got {conv_kernel}")
        self.num_landmarks = int(num_landmarks)
        self.pinv_iters = int(pinv_iters)
        self.conv_kernel = int(conv_kernel)
        if conv_kernel:
            self.conv = nn.Conv2d(
                num_heads,
                num_heads,
                (conv_kernel, 1),
                padding=(conv_kernel // 2, 0),
                groups=num_heads,
                bias=False,
            )

    def options(self) -> dict[str, object]:
        return {
            "num_landmarks": self.num_landmarks,
            "pinv_iters": self.pinv_iters,
            "conv_kernel": self.conv_kernel,
        }

    def factors(
        self, q: Tensor, k: Tensor, key_mask: Tensor | None
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """F (B,H,N,m), A (B,H,m,m), Z ~ pinv(A) and Bm (B,H,m,N), empty slots made inert."""
        scale = q.shape[-1] ** -0.25
        q, k = q * scale, k * scale
        seg, valid = segment_matrix(key_mask, q.shape[0], q.shape[2], self.num_landmarks, like=q)
        q_bar, k_bar = seg[:, None] @ q, seg[:, None] @ k
        empty_col = ~valid[:, None, None, :]
        empty_row = ~valid[:, None, :, None]
        f = torch.softmax((q @ k_bar.transpose(-1, -2)).masked_fill(empty_col, float("-inf")), -1)
        a = torch.softmax(
            (q_bar @ k_bar.transpose(-1, -2)).masked_fill(empty_col, float("-inf")), -1
        )
        a = torch.where(empty_row, torch.eye(a.shape[-1], dtype=a.dtype, device=a.device), a)
        b_logits = (q_bar @ k.transpose(-1, -2)).masked_fill(empty_row, 0.0)  # empty: uniform
        if key_mask is not None:
            b_logits = b_logits.masked_fill(~key_mask[:, None, None, :], float("-inf"))
        bm = torch.softmax(b_logits, dim=-1)
        exact = self.pinv_iters == 0
        z = torch.linalg.pinv(a) if exact else newton_schulz_pinv(a, self.pinv_iters)
        return f, a, z, bm

    def forward(
        self, q: Tensor, k: Tensor, v: Tensor, attention_mask: Tensor | None = None
    ) -> Tensor:
        key_mask = key_mask_of(attention_mask, q)
        out_dtype = v.dtype
        with full_precision(q.device):
            q, k, v = upcast_and_zero_padding(key_mask, q, k, v)
            f, a, z, bm = self.factors(q, k, key_mask)
            out = f @ (z @ (bm @ v))
            if self.conv_kernel:  # v is already zero on padding
                weight = self.conv.weight.to(v.dtype)
                out = out + F.conv2d(v, weight, padding=self.conv.padding, groups=self.num_heads)
            with torch.no_grad():  # how far the iterations are from a pseudo-inverse
                self.last_stats = {"pinv_residual": (a @ z @ a - a).abs().amax()}
        return out.to(out_dtype)

    def attention_matrix(
        self, q: Tensor, k: Tensor, attention_mask: Tensor | None = None
    ) -> Tensor:
        key_mask = key_mask_of(attention_mask, q)
        with full_precision(q.device):
            q, k = upcast_and_zero_padding(key_mask, q, k)
            f, _, z, bm = self.factors(q, k, key_mask)
            return f @ z @ bm
