"""Working memory of one call, measured the same way on CUDA and on CPU.

The number is the peak of the bytes PyTorch's allocator holds during the call minus what it held
when the call started: the call's own working memory (activations, attention intermediates,
gradients), with the weights, optimiser state and inputs that existed before excluded.

CUDA: ``bench.timing.peak_memory_mib`` (``max_memory_allocated`` against the baseline). CPU:
PyTorch keeps no peak counter for host memory, but the profiler with ``profile_memory=True``
records every CPU allocation with the allocator's running total, whose maximum is the same peak.
It counts tensor storage only (not the Python heap or allocator caching), like CUDA's counter.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator

import torch

from llnbench.bench.timing import peak_memory_mib


def cpu_peak_allocated_mib(fn: Callable[[], object]) -> float | None:
    """Peak CPU tensor memory allocated during ``fn()`` above its start (None if the profiler
    records no allocation events, e.g. in a build without the profiler)."""
    from torch._C._profiler import _EventType
    from torch.profiler import ProfilerActivity, profile

    with _quiet_stderr(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = []
    stack = list(prof.profiler.kineto_results.experimental_event_tree())
    while stack:
        node = stack.pop()
        stack.extend(node.children)
        if node.tag == _EventType.Allocation and node.extra_fields.device.type == "cpu":
            fields = node.extra_fields
            events.append((node.start_time_ns, fields.alloc_size, fields.total_allocated))
    if not events:
        return None
    events.sort()
    _, size, total = events[0]
    start = total - size  # the running total just before the first event
    return max(0, max(t for _, _, t in events) - start) / 2**20


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Silence file descriptor 2: the profiler's C++ side prints start/stop lines and a warning
    about blocks allocated before it started (tensors that existed before the call; those are
    exactly the ones excluded)."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def working_memory_mib(fn: Callable[[], object], device: torch.device) -> float | None:
    """``fn``'s working memory in MiB (see the module docstring), one call after one warm-up."""
    fn()  # lazy buffers, feature redraws and the allocator's first growth happen here
    if device.type == "cuda":
        measured = peak_memory_mib(fn, device)
        return None if measured is None else measured[0]
    if device.type == "cpu":
        return cpu_peak_allocated_mib(fn)
    return None
