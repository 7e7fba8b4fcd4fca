"""Seeded generation of the LRA splits in chunks, in parallel processes when there is much to do.

Chunk ``i`` of a split has its own seed, and chunks are merged in index order, so the examples
depend on the seed only, never on the number of workers. The workers import this module and the
two generators only (plain Python and numpy: no torch), so starting them is cheap.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from typing import Any

from llnbench.data import listops, pathfinder
from llnbench.errors import ConfigError

CHUNK = 1000  # examples per chunk (a smaller split is one chunk of its own size)
SPLITS = ("validation", "test", "train")  # generation order: train never changes the others

# each example's tokens as bytes (compact, picklable), its label, and per-example metadata
# (Pathfinder: marker_centres (2, 2) and contour_length per image; ListOps: none)
Examples = tuple[list[bytes], list[int], dict[str, list[Any]]]


def chunk_seed(task: str, split: str, seed: int, chunk: int) -> str:
    return f"llnbench-lra-{task}-{split}-seed{seed}-chunk{chunk}"


def generate_chunk(task: str, generator: dict[str, Any], seed: str, count: int) -> Examples:
    """``count`` examples of one chunk; ``generator`` holds a ListOpsSpec or PathfinderSpec (and
    Pathfinder's ``difficulty``)."""
    if "size" in generator:
        fields = {k: v for k, v in generator.items() if k != "difficulty"}
        spec = pathfinder.PathfinderSpec(**fields)
        extra = {}
        # the difficulty keyword comes with the paddle-snake generator (issue 20, item 1)
        if "difficulty" in inspect.signature(pathfinder.generate).parameters:
            extra["difficulty"] = generator["difficulty"]
        images, labels, meta = pathfinder.generate(count, spec, seed, **extra)
        if not isinstance(meta, dict):  # marker centres only
            meta = {"marker_centres": meta}
        rows = {
            "marker_centres": list(meta["marker_centres"]),
            "contour_length": list(meta.get("contour_length", [spec.contour_dashes] * count)),
        }
        return [image.tobytes() for image in images], labels.tolist(), rows
    sequences, labels, _ = listops.generate(count, listops.ListOpsSpec(**generator), seed)
    return [s.tobytes() for s in sequences], labels.tolist(), {}


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
    """Every split as (examples, labels). A ListOps expression already drawn (in this split or
    an earlier one) is dropped and later chunks fill the gap (LRA's data set is a set, too)."""
    n_workers = worker_count(workers)
    distinct = "size" not in generator  # Pathfinder images are not deduplicated
    seen: set[bytes] = set()
    out: dict[str, Examples] = {}
    pool = None
    if n_workers > 1 and sum(sizes.values()) > CHUNK:
        pool = ProcessPoolExecutor(n_workers, mp_context=get_context("spawn"))
    try:
        for split in SPLITS:
            need, examples, labels, chunk = sizes[split], [], [], 0
            meta: dict[str, list[Any]] = {}
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
                    for i, (example, label) in enumerate(zip(chunk_examples, chunk_labels)):
                        if len(examples) == need or example in seen:
                            continue
                        if distinct:
                            seen.add(example)
                        examples.append(example)
                        labels.append(label)
                        for name, values in chunk_meta.items():
                            meta.setdefault(name, []).append(values[i])
                if progress is not None:
                    progress(split, len(examples), need)
            out[split] = (examples, labels, meta)
    finally:
        if pool is not None:
            pool.shutdown()
    return out
