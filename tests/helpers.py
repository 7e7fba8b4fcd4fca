"""Small helpers shared by the tests (imported as ``from helpers import ...``)."""

from __future__ import annotations

import torch


def qkv(b: int, h: int, n: int, d: int, dtype=torch.float64, scale: float = 1.0, seed: int = 0):
    """Three (B, H, N, d) Gaussian tensors."""
    gen = torch.Generator().manual_seed(seed)
    return tuple(scale * torch.randn(b, h, n, d, generator=gen, dtype=dtype) for _ in range(3))


def right_padding_mask(lengths: list[int], n: int) -> torch.Tensor:
    """(B, N) bool, True on the first ``lengths[b]`` positions."""
    return torch.arange(n)[None, :] < torch.tensor(lengths)[:, None]


def with_junk_padding(x: torch.Tensor, mask: torch.Tensor, value: float = 1e4) -> torch.Tensor:
    """x with every padded position (mask False) overwritten by a large junk value."""
    return x.masked_fill(~mask[:, None, :, None], value)
