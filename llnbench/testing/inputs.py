"""Inputs for the checks: seeded Gaussian q, k, v, right-padding masks, junk in padded slots."""

from __future__ import annotations

import torch
from torch import Tensor


def qkv(
    b: int,
    h: int,
    n: int,
    d: int,
    dtype: torch.dtype = torch.float64,
    scale: float = 1.0,
    seed: int = 0,
) -> tuple[Tensor, Tensor, Tensor]:
    """Three (B, H, N, d) Gaussian tensors (standard deviation ``scale``) from their own generator."""
    gen = torch.Generator().manual_seed(seed)
    q, k, v = (scale * torch.randn(b, h, n, d, generator=gen, dtype=dtype) for _ in range(3))
    return q, k, v


def right_padding_mask(lengths: list[int] | tuple[int, ...], n: int) -> Tensor:
    """(B, N) bool, True on the first ``lengths[b]`` positions (the real tokens)."""
    return torch.arange(n)[None, :] < torch.tensor(list(lengths))[:, None]


def with_junk_padding(x: Tensor, mask: Tensor, value: float = 1e4) -> Tensor:
    """x with every padded position (mask False) overwritten by ``value`` (large, inf or NaN)."""
    return x.masked_fill(~mask[:, None, :, None], value)


def real_rows(mask: Tensor, out: Tensor) -> Tensor:
    """Bool index of the real (unpadded) query rows of a (B, H, N, d) output."""
    return mask[:, None, :, None].expand_as(out)
