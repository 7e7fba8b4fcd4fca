"""Time a callable the way kernel benchmarks do: warm up, repeat, report median and p20/p80.

CUDA: a pair of CUDA events around each call (what ``triton.testing.do_bench`` does). CPU:
``time.perf_counter`` around each call. Repeats until ``min_time_s`` of measured time or
``max_repeats`` calls, and never fewer than ``min_repeats``.
"""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from llnbench.devices import synchronize


@dataclass
class Timing:
    ms_median: float
    ms_p20: float
    ms_p80: float
    repeats: int


def quantile(values: list[float], q: float) -> float:
    """Linear-interpolated quantile (numpy's default rule)."""
    ordered = sorted(values)
    pos = q * (len(ordered) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def time_call(
    fn: Callable[[], object],
    device: torch.device,
    *,
    warmup: int = 3,
    min_time_s: float = 1.0,
    max_repeats: int = 30,
    min_repeats: int = 3,
    on_call: Callable[[str], None] | None = None,
) -> Timing:
    """``on_call`` hears the phase before each call ("warm-up 1/3", "call 4 (timing)"): what a
    progress heartbeat says while a long call runs."""
    say = on_call or (lambda phase: None)
    for i in range(warmup):
        say(f"warm-up {i + 1}/{warmup}")
        start = time.perf_counter()
        fn()
        synchronize(device)
        # CPU has no autotuning: once a call takes over a second, one warm-up call is enough
        if device.type == "cpu" and i == 0 and time.perf_counter() - start > 1.0:
            break
    times: list[float] = []
    total = 0.0
    while len(times) < min_repeats or (total < min_time_s and len(times) < max_repeats):
        say(f"call {len(times) + 1} (timing)")
        ms = _time_once(fn, device)
        times.append(ms)
        total += ms / 1000
    return Timing(
        ms_median=statistics.median(times),
        ms_p20=quantile(times, 0.2),
        ms_p80=quantile(times, 0.8),
        repeats=len(times),
    )


def _time_once(fn: Callable[[], object], device: torch.device) -> float:
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize(device)
        return start.elapsed_time(end)
    start_s = time.perf_counter()
    fn()
    return (time.perf_counter() - start_s) * 1000


def peak_memory_mib(fn: Callable[[], object], device: torch.device) -> tuple[float, float] | None:
    """CUDA: (peak allocated during one call minus what was allocated before it, i.e. the call's
    working memory with inputs/parameters excluded; and the absolute peak).

    CPU: None. PyTorch has no peak counter for host memory, and an estimate is not a measurement.
    """
    if device.type != "cuda":
        return None
    gc.collect()
    torch.cuda.empty_cache()
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    baseline = torch.cuda.memory_allocated(device)
    fn()
    torch.cuda.synchronize(device)
    peak = torch.cuda.max_memory_allocated(device)
    return (peak - baseline) / 2**20, peak / 2**20


def free_host_memory_bytes() -> int | None:
    """MemAvailable from /proc/meminfo (Linux); None where unknown."""
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None
