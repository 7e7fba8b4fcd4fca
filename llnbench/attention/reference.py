"""Naive float64 quadratic forms of each mechanism, written from the formulas, not from the fast code.

Used by the tests (exactness forward and backward) and by the analysis instruments. Everything here
forms N x N matrices explicitly, with no max shifts, chunking or SDPA.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from llnbench.attention.lln import PAPER_A, PAPER_B


def visible(n: int, key_mask: Tensor | None, causal: bool, batch: int = 1) -> Tensor:
    """(B, 1, N, N) bool: key j visible to query i (j real, and j <= i when causal). No self-rule."""
    allowed = torch.ones(batch, 1, n, n, dtype=torch.bool)
    if causal:
        allowed = allowed & torch.ones(n, n, dtype=torch.bool).tril()
    if key_mask is not None:
        allowed = allowed & key_mask.bool()[:, None, None, :]
    return allowed


def normalise_rows(w: Tensor, eps: float = 0.0) -> Tensor:
    """w / (row sum + eps); rows with no weight stay 0."""
    total = w.sum(-1, keepdim=True)
    return torch.where(total > 0, w / (total + eps), torch.zeros_like(w))


def softmax_matrix(
    q: Tensor, k: Tensor, key_mask: Tensor | None = None, causal: bool = False
) -> Tensor:
    """P_ij = exp(q_i.k_j / sqrt(d)) / sum over visible keys; rows with no visible key are 0."""
    q, k = q.double(), k.double()
    logits = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    allowed = visible(q.shape[2], key_mask, causal, q.shape[0])
    logits = logits.masked_fill(~allowed, float("-inf"))
    row_max = logits.amax(-1, keepdim=True).clamp_min(-1e300)  # finite even for empty rows
    w = torch.exp(logits - row_max).masked_fill(~allowed, 0.0)
    return normalise_rows(w)


def block_softmax_matrix(
    q: Tensor, k: Tensor, block: int, key_mask: Tensor | None = None, causal: bool = False
) -> Tensor:
    """Softmax restricted to consecutive blocks of ``block`` tokens, by an explicit loop over blocks."""
    b, h, n, _ = q.shape
    out = torch.zeros(b, h, n, n, dtype=torch.float64)
    for start in range(0, n, block):
        stop = min(n, start + block)
        mask = None if key_mask is None else key_mask[:, start:stop]
        out[:, :, start:stop, start:stop] = softmax_matrix(
            q[:, :, start:stop], k[:, :, start:stop], mask, causal
        )
    return out


def real_std(x: Tensor, key_mask: Tensor | None, scope: str) -> Tensor:
    """Sample std (unbiased) of the real entries of x (B, H, N, d), gathered explicitly, per scope.

    Returns a tensor broadcastable against x: (1,1,1,1) for batch, (B,1,1,1) sequence, (B,H,1,1) head.
    """
    x = x.double()
    b, h, n, _ = x.shape
    mask = torch.ones(b, n, dtype=torch.bool) if key_mask is None else key_mask.bool()
    if scope == "batch":
        values = torch.cat([x[i][:, mask[i]].reshape(-1) for i in range(b)])
        return values.std().reshape(1, 1, 1, 1)
    if scope == "sequence":
        return torch.stack([x[i][:, mask[i]].std() for i in range(b)]).reshape(b, 1, 1, 1)
    if scope == "head":
        rows = [[x[i, j][mask[i]].std() for j in range(h)] for i in range(b)]
        return torch.tensor(rows, dtype=torch.float64).reshape(b, h, 1, 1)
    raise ValueError(scope)


def lln_temperatures(
    q: Tensor,
    k: Tensor,
    key_mask: Tensor | None = None,
    scope: str = "batch",
    a: float = PAPER_A,
    b: float = PAPER_B,
) -> tuple[Tensor, Tensor]:
    """Moment matching: alpha sigma_q = beta sigma_k = sqrt((sigma_q^2 sigma_k^2 - b) / 2a).

    Statistics are constants for autograd, as in the mechanism (no gradient through alpha, beta).
    """
    sq, sk = real_std(q.detach(), key_mask, scope), real_std(k.detach(), key_mask, scope)
    st = torch.sqrt((sq**2 * sk**2 - b) / (2 * a))
    return st / sq, st / sk


def lln_matrix(
    q: Tensor,
    k: Tensor,
    alpha: Tensor | float,
    beta: Tensor | float,
    key_mask: Tensor | None = None,
    causal: bool = False,
    eps: float = 0.0,
) -> Tensor:
    """P_ij = exp(alpha q_i) . exp(beta k_j) / (sum over visible l of the same + eps), unshifted."""
    q, k = q.double(), k.double()
    w = torch.exp(alpha * q) @ torch.exp(beta * k).transpose(-1, -2)
    w = w.masked_fill(~visible(q.shape[2], key_mask, causal, q.shape[0]), 0.0)
    return normalise_rows(w, eps)


def feature_matrix(
    phi_q: Tensor,
    phi_k: Tensor,
    key_mask: Tensor | None = None,
    causal: bool = False,
    eps: float = 0.0,
) -> Tensor:
    """Generic kernelised attention from explicit features: P_ij = phi_q_i . phi_k_j / row sum."""
    w = phi_q.double() @ phi_k.double().transpose(-1, -2)
    w = w.masked_fill(~visible(phi_q.shape[2], key_mask, causal, phi_q.shape[0]), 0.0)
    return normalise_rows(w, eps)
