"""Performer FAVOR+ (Choromanski et al., arXiv 2009.14794): positive orthogonal random features.

    phi(x) = m^(-1/2) exp(W x~ - |x~|^2 / 2),   x~ = d^(-1/4) x,   W (m x d) per head,

so that E_W[phi(x) . phi(y)] = exp(x . y / sqrt(d)) for rows w ~ N(0, I). W stacks ceil(m/d) independent
orthogonal d x d blocks (QR of a Gaussian, sign-corrected so each block is Haar), keeps m rows and
rescales each row to the norm of a fresh N(0, I_d) draw. The features go through the shared linear
core with the ``add`` guard.

Max shifts as LLN's (``exp_features``, spec §3.3): they cancel exactly and make each query's largest
term 1, so the core's eps weighs the same in every row; causal mode divides key j by the running
(prefix) maximum and lets the core rescale (``key_shift``), so no later key can reach an earlier
output. ``feature_eps`` is added after the shifted exp, as public implementations do, relative to
the largest feature (1).

Redraw (spec §8 #18): training draws a fresh W every forward call (``redraw="step"``), independently per
head, from torch's default generator; ``"interval:K"`` every K training calls; ``"fixed"`` never. Eval
and ``attention_matrix`` use a fixed buffer saved in the state dict. Decided here: the buffer is drawn
at construction from the default generator, so a seeded model build reproduces it and each layer
(built in turn) gets its own.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from llnbench.attention.linear_core import FeatureMapAttention, exp_features
from llnbench.errors import ConfigError, one_of

REDRAWS = ("step", "fixed", "interval:K")


def parse_redraw(redraw: str) -> int | None:
    """Training calls between draws: 1 for ``step``, K for ``interval:K``, None for ``fixed``."""
    if redraw == "step":
        return 1
    if redraw == "fixed":
        return None
    prefix, _, count = redraw.partition(":")
    if prefix == "interval" and count.isdigit() and int(count) > 0:
        return int(count)
    raise one_of("performer redraw", redraw, REDRAWS)


def draw_projection(
    num_heads: int,
    nb_features: int,
    head_dim: int,
    *,
    orthogonal: bool = True,
    device: torch.device | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """(H, m, d) random feature matrix W, one per head, from torch's default generator."""
    if not orthogonal:
        return torch.randn(num_heads, nb_features, head_dim, device=device, dtype=dtype)
    blocks = math.ceil(nb_features / head_dim)
    gauss = torch.randn(num_heads, blocks, head_dim, head_dim, device=device, dtype=dtype)
    basis, tri = torch.linalg.qr(gauss)
    basis = basis * torch.sign(torch.diagonal(tri, dim1=-2, dim2=-1)).unsqueeze(-2)  # Haar
    rows = basis.transpose(-1, -2).reshape(num_heads, blocks * head_dim, head_dim)[:, :nb_features]
    norms = torch.randn(num_heads, nb_features, head_dim, device=device, dtype=dtype).norm(dim=-1)
    return rows * norms.unsqueeze(-1)


def favor_log_features(x: Tensor, w: Tensor) -> Tensor:
    """ln(m^(1/2) phi(x)) = W x~ - |x~|^2 / 2 for x (B, H, N, d) and W (H, m, d): (B, H, N, m)."""
    x = x * x.shape[-1] ** -0.25
    return x @ w.transpose(-1, -2) - 0.5 * x.square().sum(-1, keepdim=True)


class PerformerAttention(FeatureMapAttention):
    name = "performer"
    supports_causal = True
    stochastic = True
    complexity = "O(N m d)"

    def __init__(
        self,
        *,
        num_heads: int,
        head_dim: int,
        causal: bool = False,
        dropout: float = 0.0,
        nb_features: int = 64,
        redraw: str = "step",
        orthogonal: bool = True,
        eps: float = 1e-6,
        feature_eps: float = 0.0,
        chunk: int = 64,
    ):
        super().__init__(num_heads=num_heads, head_dim=head_dim, causal=causal, dropout=dropout)
        if nb_features < 1 or chunk < 1:
            raise ConfigError(
                f"performer nb_features and chunk must be positive, got {nb_features}, {chunk}"
            )
        self.nb_features = int(nb_features)
        self.redraw = redraw
        self.redraw_every = parse_redraw(redraw)
        self.orthogonal = bool(orthogonal)
        self.eps = float(eps)
        self.feature_eps = float(feature_eps)
        self.chunk = int(chunk)
        self.register_buffer("eval_projection", self._draw(None, torch.float32))
        # the current training draw: transient, like the RNG state that produced it
        self.register_buffer("train_projection", None, persistent=False)
        self._train_calls = 0

    def options(self) -> dict[str, object]:
        return {
            "nb_features": self.nb_features,
            "redraw": self.redraw,
            "orthogonal": self.orthogonal,
            "eps": self.eps,
            "feature_eps": self.feature_eps,
        }

    def _draw(self, device: torch.device | None, dtype: torch.dtype) -> Tensor:
        return draw_projection(
            self.num_heads,
            self.nb_features,
            self.head_dim,
            orthogonal=self.orthogonal,
            device=device,
            dtype=dtype,
        )

    def projection(self, like: Tensor) -> Tensor:
        """W for this call: redrawn on schedule in training, the fixed buffer otherwise."""
        if not self.training or self.redraw_every is None:
            return self.eval_projection.to(like.dtype)
        if self._train_calls % self.redraw_every == 0 or self.train_projection is None:
            self.train_projection = self._draw(like.device, torch.float32)
        self._train_calls += 1
        return self.train_projection.to(like.dtype)

    def feature_maps(
        self, q: Tensor, k: Tensor, key_mask: Tensor | None, *, eval_path: bool
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        """Shifted phi_q, phi_k (entries <= 1 + feature_eps), causal key shift. FAVOR+'s
        m^(-1/2) scales every weight alike, so it cancels with the shifts and is left out."""
        w = self.eval_projection.to(q.dtype) if eval_path else self.projection(q)
        phi_q, phi_k, shift = exp_features(
            favor_log_features(q, w), favor_log_features(k, w), key_mask, self.causal
        )
        if self.feature_eps:
            phi_q = phi_q + self.feature_eps
            phi_k = phi_k + self.feature_eps
            if key_mask is not None:  # padded keys keep phi = 0
                phi_k = phi_k.masked_fill(~key_mask[:, None, :, None], 0.0)
        return phi_q, phi_k, shift

    def eps_unit(self, *_: object) -> float:
        """Each query's largest term: 1 from ``exp_features``, (1 + feature_eps)^2 after it."""
        return (1.0 + self.feature_eps) ** 2
