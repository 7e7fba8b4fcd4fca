"""Tilings of the fused bidirectional LLN kernels: a small table keyed by device, plus the cached
device facts they need (so no call queries the driver).

A ``Tiling`` is rows per tile, warps per program (forward and query-backward), and how many
programs the row-reducing passes aim for. The table is keyed by (architecture, head-dim class,
input class): ``sm90`` (Hopper), ``sm80`` (Ampere/Ada), ``other`` CUDA, ``cpu`` (the
interpreter); ``small`` (head dim padded to <= 64) or ``d128``; ``16bit`` (TF32 dots) or ``fp32``
(IEEE dots, far more registers). Rows were chosen from Triton 3.9's own compiles for sm90/sm80
on a machine without a GPU (``tests/stress/triton_resources.py``: registers, spills, shared
memory): 16-bit inputs at d <= 64 spill nowhere with 32-row tiles; d128 keeps the d x d tiles
under the shared-memory limit; fp32 spills at every size, least with 16-row tiles. Speed is not
measured yet: ``LLNBENCH_TRITON_AUTOTUNE=1`` (or ``set_autotune(True)``) times ``CANDIDATES``
on the first call per (device, dtype, head_dim, N bucket) instead.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass

import torch

AUTOTUNE_ENV = "LLNBENCH_TRITON_AUTOTUNE"


@dataclass(frozen=True)
class Tiling:
    """Rows per tile; warps per program; programs per multiprocessor the row-reducing passes aim
    for (``target_programs`` overrides the total, for tests); warps of ``query_backward_kernel``,
    which holds two d x d tiles."""

    block: int = 64
    warps: int = 4
    backward_warps: int = 8
    programs_per_sm: int = 4
    target_programs: int | None = None

    def as_list(self) -> list[int]:
        """The custom ops' ``tiling`` argument (0 = no override of the total)."""
        target = self.target_programs or 0
        return [self.block, self.warps, self.backward_warps, self.programs_per_sm, target]

    @classmethod
    def from_list(cls, values: list[int]) -> Tiling:
        block, warps, backward_warps, per_sm, target = values
        return cls(block, warps, backward_warps, per_sm, target or None)


# (architecture, head-dim class, input class) -> tiling
TABLE: dict[tuple[str, str, str], Tiling] = {
    ("sm90", "small", "16bit"): Tiling(block=32, warps=4, backward_warps=8, programs_per_sm=4),
    ("sm90", "d128", "16bit"): Tiling(block=32, warps=8, backward_warps=8, programs_per_sm=2),
    ("sm80", "small", "16bit"): Tiling(block=32, warps=4, backward_warps=8, programs_per_sm=4),
    ("sm80", "d128", "16bit"): Tiling(block=16, warps=8, backward_warps=8, programs_per_sm=2),
    ("other", "small", "16bit"): Tiling(block=32, warps=4, backward_warps=8, programs_per_sm=4),
    ("other", "d128", "16bit"): Tiling(block=16, warps=8, backward_warps=8, programs_per_sm=2),
    **{(arch, "small", "fp32"): Tiling(block=16, warps=4, backward_warps=4, programs_per_sm=4)
       for arch in ("sm90", "sm80", "other")},
    **{(arch, "d128", "fp32"): Tiling(block=16, warps=4, backward_warps=8, programs_per_sm=2)
       for arch in ("sm90", "sm80", "other")},
    **{("cpu", "small", kind): Tiling(block=64, warps=4, backward_warps=4, target_programs=4)
       for kind in ("16bit", "fp32")},
    **{("cpu", "d128", kind): Tiling(block=32, warps=4, backward_warps=4, target_programs=4)
       for kind in ("16bit", "fp32")},
}  # fmt: skip
# what the autotuner times (per head-dim class)
CANDIDATES: dict[str, tuple[Tiling, ...]] = {
    "small": tuple(Tiling(block=b, warps=w, backward_warps=bw, programs_per_sm=p)
                   for b in (16, 32, 64) for w, bw in ((4, 8), (8, 8)) for p in (2, 4)),
    "d128": tuple(Tiling(block=b, warps=w, backward_warps=bw, programs_per_sm=p)
                  for b in (16, 32) for w, bw in ((4, 8), (8, 8)) for p in (1, 2)),
}  # fmt: skip

_autotune_override: bool | None = None


def block_d(head_dim: int) -> int:
    """The head dim padded to a power of two (tl.arange and tl.dot need one, 16 at least)."""
    return max(16, 1 << (head_dim - 1).bit_length())


def head_dim_class(head_dim: int) -> str:
    return "d128" if block_d(head_dim) > 64 else "small"


def n_bucket(n: int) -> int:
    """Sequence lengths that share a tuned tiling: the next power of two (at least 256)."""
    return max(256, 1 << (int(n) - 1).bit_length())


@functools.cache
def architecture(device_type: str, index: int | None) -> str:
    if device_type != "cuda":
        return "cpu"
    major, _ = torch.cuda.get_device_capability(index)
    return {9: "sm90", 8: "sm80"}.get(major, "other")


@functools.cache
def multiprocessors(device_type: str, index: int | None) -> int:
    """Multiprocessor count (1 off CUDA, where the interpreter runs programs one at a time)."""
    if device_type != "cuda":
        return 1
    return torch.cuda.get_device_properties(index).multi_processor_count


def input_class(dtype: torch.dtype) -> str:
    return "fp32" if dtype == torch.float32 else "16bit"


def table_tiling(device: torch.device, head_dim: int, dtype: torch.dtype) -> Tiling:
    key = (architecture(device.type, device.index), head_dim_class(head_dim), input_class(dtype))
    return TABLE[key]


def autotune_enabled() -> bool:
    if _autotune_override is not None:
        return _autotune_override
    return os.environ.get(AUTOTUNE_ENV, "") not in ("", "0")


def set_autotune(enabled: bool | None) -> None:
    """Turn autotuning on or off for this process (None: follow LLNBENCH_TRITON_AUTOTUNE)."""
    global _autotune_override
    _autotune_override = enabled


def total_programs(tiling: Tiling, device: torch.device) -> int:
    if tiling.target_programs is not None:
        return tiling.target_programs
    return tiling.programs_per_sm * multiprocessors(device.type, device.index)


# the interpreter: two cheap tilings, enough to exercise the autotuner
CPU_CANDIDATES = (Tiling(block=16, target_programs=4), Tiling(block=32, target_programs=2))


def candidates(device: torch.device, head_dim: int) -> tuple[Tiling, ...]:
    if device.type != "cuda":
        return CPU_CANDIDATES
    return CANDIDATES[head_dim_class(head_dim)]
