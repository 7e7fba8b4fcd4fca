"""Seeded generation of the LRA splits in chunks, in parallel processes when there is much to do.

Chunk ``i`` of a split has its own seed, and chunks are merged in index order, so the examples
depend on the seed only, never on the number of workers. The workers import this module and the
two generators only (plain Python and numpy: no torch), so starting them is cheap. A worker exits
when its parent does, even after kill -9 (``_follow_parent``), so no orphan keeps drawing.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from typing import Any

import numpy as np

from llnbench.data import listops, pathfinder
from llnbench.errors import ConfigError

CHUNK = 1000  # examples per chunk (a smaller split is one chunk of its own size)
SPLITS = ("validation", "test", "train")  # generation order: train never changes the others

# each example's tokens as bytes (compact, picklable), its label, and per-example metadata
# (Pathfinder: marker_centres (n, 2, 2) float32 and contour_length (n,) int16; ListOps: none)
Metadata = dict[str, Any]
Examples = tuple[list[bytes], list[int], Metadata]
PR_SET_PDEATHSIG = 1  # linux/prctl.h
WATCH_SECONDS = 0.5  # how often a worker checks that its parent is alive where prctl is missing


def chunk_seed(task: str, split: str, seed: int, chunk: int) -> str:
    return f"llnbench-lra-{task}-{split}-seed{seed}-chunk{chunk}"


def generate_chunk(task: str, generator: dict[str, Any], seed: str, count: int) -> Examples:
    """``count`` examples of one chunk and their metadata; ``generator`` holds a ListOpsSpec or
    PathfinderSpec."""
    if "size" in generator:
        spec = pathfinder.PathfinderSpec(**generator)
        drawn = pathfinder.generate(count, spec, seed)
        meta = {"marker_centres": drawn.marker_centres, "contour_length": drawn.contour_lengths}
        return [image.tobytes() for image in drawn.images], drawn.labels.tolist(), meta
    sequences, labels, _ = listops.generate(count, listops.ListOpsSpec(**generator), seed)
    return [s.tobytes() for s in sequences], labels.tolist(), {}


def _follow_parent(parent: int) -> None:
    """Worker initializer: die with the parent. On Linux the kernel sends SIGKILL when the parent
    exits (PR_SET_PDEATHSIG); elsewhere, and as a fallback, a daemon thread exits the worker once
    its parent id changes (the parent died and the worker was adopted)."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(WATCH_SECONDS)
        os._exit(1)

    threading.Thread(target=watch, name="llnbench-follow-parent", daemon=True).start()


def worker_count(requested: int | None) -> int:
    if requested is not None:
        if requested < 1:
            raise ConfigError(f"data.workers must be positive or null, got {requested}")
        return requested
    return max(1, min(8, os.cpu_count() or 1))


def generate_splits(
    task: str,
    generator: dict[str, Any],
    sizes: dict[str, int],
    seed: int,
    workers: int | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> dict[str, Examples]:
    """Every split as (examples, labels, metadata). A ListOps expression already drawn (in this
    split or an earlier one) is dropped and later chunks fill the gap (LRA's data set is a set,
    too). The metadata are per-example arrays in the same order (Pathfinder: ``marker_centres``
    (n, 2, 2) float32 (y, x), start marker then end marker, and ``contour_length`` (n,) int16;
    ListOps: none)."""
    n_workers = worker_count(workers)
    distinct = "size" not in generator  # Pathfinder images are not deduplicated
    seen: set[bytes] = set()
    out: dict[str, Examples] = {}
    pool = None
    if n_workers > 1 and sum(sizes.values()) > CHUNK:
        pool = ProcessPoolExecutor(
            n_workers,
            mp_context=get_context("spawn"),
            initializer=_follow_parent,
            initargs=(os.getpid(),),
        )
    try:
        for split in SPLITS:
            need, examples, labels, chunk = sizes[split], [], [], 0
            meta: dict[str, list[np.ndarray]] = {}
            per_chunk = min(CHUNK, need)
            while len(examples) < need:
                if chunk > 4 * (need // CHUNK) + 8:  # chunks keep repeating earlier examples
                    raise listops.too_few_distinct(
                        listops.ListOpsSpec(**generator), len(examples), need
                    )
                batch = max(1, min(n_workers, -(-(need - len(examples)) // per_chunk)))
                jobs = [
                    (task, generator, chunk_seed(task, split, seed, i), per_chunk)
                    for i in range(chunk, chunk + batch)
                ]
                chunk += batch
                if pool is None:
                    results = [generate_chunk(*job) for job in jobs]
                else:
                    results = list(pool.map(generate_chunk, *zip(*jobs)))
                for chunk_examples, chunk_labels, chunk_meta in results:
                    kept = []
                    for i, (example, label) in enumerate(zip(chunk_examples, chunk_labels)):
                        if len(examples) == need or example in seen:
                            continue
                        if distinct:
                            seen.add(example)
                        examples.append(example)
                        labels.append(label)
                        kept.append(i)
                    for key, values in chunk_meta.items():
                        meta.setdefault(key, []).append(values[kept])
                if progress is not None:
                    progress(split, len(examples), need)
            out[split] = (examples, labels, {k: np.concatenate(v) for k, v in meta.items()})
    finally:
        if pool is not None:
            pool.shutdown()
    return out
