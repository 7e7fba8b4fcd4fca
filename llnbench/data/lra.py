"""The generated Long Range Arena tasks: the task table, the data config, the cache and the
encoded splits (generation itself: ``lra_generate``).

    listops        ListOps expressions (10 classes), lengths strictly inside (min_length, max_length)
    pathfinder32   Pathfinder 32×32: 1,024 pixels as a sequence (2 classes)
    pathfinder64   Pathfinder 64×64: 4,096 pixels (2 classes)

A sequence is ``[CLS]`` followed by the task's tokens (ListOps symbols; grey level + 2 for a pixel);
the model classifies from ``[CLS]``. Validation and test are drawn before train from their own
seeds, so they do not change with ``train_size``; ListOps expressions are distinct across all
three splits (LRA draws a set of distinct trees too).
"""

from __future__ import annotations

import hashlib
import json
import time
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from llnbench import files
from llnbench.config import Seed
from llnbench.data import listops, pathfinder
from llnbench.data.batching import EncodedSplit
from llnbench.data.corpus import default_cache_dir
from llnbench.data.glue import TaskSpec
from llnbench.data.lra_generate import CHUNK, generate_splits
from llnbench.errors import ConfigError

CACHE_VERSION = 2  # 2: a split smaller than a chunk is one chunk of its own size


@dataclass(frozen=True)
class LraTask:
    """One generated task and its CPU-sized defaults (``data.*`` and ``trainer.*`` win)."""

    name: str
    kind: str  # listops | pathfinder
    num_classes: int
    vocab_size: int  # incl. padding and [CLS]
    description: str
    defaults: dict[str, Any]  # data: max_length, min_length, train/validation/test sizes
    recipe: dict[str, Any]  # trainer: lr, batch_size, epochs
    image_size: int | None = None


LRA_TASKS: dict[str, LraTask] = {
    "listops": LraTask(
        "listops", "listops", listops.NUM_CLASSES, len(listops.VOCAB),
        "ListOps: the value (0-9) of a nested MAX/MIN/MED/SM expression",
        defaults={"max_length": 256, "min_length": 64, "max_depth": 10, "max_args": 10,
                  "train_size": 6000, "validation_size": 1000, "test_size": 1000},
        recipe={"lr": 1e-3, "batch_size": 32, "epochs": 4},
    ),
    "pathfinder32": LraTask(
        "pathfinder32", "pathfinder", pathfinder.NUM_CLASSES, pathfinder.VOCAB_SIZE,
        "Pathfinder 32×32: are the two markers joined by a dashed contour (pixels as a sequence)",
        defaults={"train_size": 4000, "validation_size": 500, "test_size": 500},
        recipe={"lr": 1e-3, "batch_size": 32, "epochs": 2},
        image_size=32,
    ),
    "pathfinder64": LraTask(
        "pathfinder64", "pathfinder", pathfinder.NUM_CLASSES, pathfinder.VOCAB_SIZE,
        "Pathfinder 64×64: are the two markers joined by a dashed contour (pixels as a sequence)",
        defaults={"train_size": 2000, "validation_size": 250, "test_size": 250},
        recipe={"lr": 1e-3, "batch_size": 16, "epochs": 1},
        image_size=64,
    ),
}  # fmt: skip
LISTOPS_ONLY = ("min_length", "max_depth", "max_args")


def get_lra_task(name: str) -> LraTask:
    if name not in LRA_TASKS:
        raise ConfigError(
            f"unknown task {name!r} for llnbench lra; allowed: {', '.join(LRA_TASKS)}"
        )
    return LRA_TASKS[name]


@dataclass
class LraDataConfig:
    """``data`` of ``llnbench lra``; null = the task's default (``LRA_TASKS``)."""

    max_length: int | None = None  # ListOps: expressions are shorter; Pathfinder: >= pixels
    min_length: int | None = None  # ListOps: expressions are longer (LRA 500)
    max_depth: int | None = None  # ListOps (LRA 10)
    max_args: int | None = None  # ListOps (LRA 10)
    train_size: int | None = None
    validation_size: int | None = None
    test_size: int | None = None
    seed: Seed = 0  # the data set's seed: the same examples for every training seed
    workers: int | None = None  # generation processes; null = up to 8, one per CPU core
    cache_dir: str | None = None  # default $LLNBENCH_CACHE or ~/.cache/llnbench


@dataclass(frozen=True)
class ResolvedData:
    """Every generation parameter filled in and checked."""

    task: str
    sizes: dict[str, int]
    seed: int
    generator: dict[str, Any] = field(default_factory=dict)  # ListOpsSpec / PathfinderSpec fields

    @property
    def max_length(self) -> int:
        """The longest token sequence before [CLS]."""
        if "size" in self.generator:
            return self.generator["size"] ** 2
        return self.generator["max_length"] - 1

    @property
    def sequence_length(self) -> int:
        """Model positions: [CLS] + the longest sequence."""
        return self.max_length + 1

    def describe(self) -> dict[str, Any]:
        return {"task": self.task, "sizes": self.sizes, "seed": self.seed, **self.generator}


def resolve_data(task: LraTask, cfg: LraDataConfig) -> ResolvedData:
    """The task's defaults under the config's values; one-line errors for values that do not
    fit the task (an unknown key for it, a length too short, an empty split)."""
    sizes = {}
    for split in ("train", "validation", "test"):
        given = getattr(cfg, f"{split}_size")
        sizes[split] = task.defaults[f"{split}_size"] if given is None else given
    for split, n in sizes.items():
        if n < 1:
            raise ConfigError(f"data.{split}_size must be positive, got {n}")
    if task.kind == "listops":
        spec = listops.ListOpsSpec(**{
            key: getattr(cfg, key) if getattr(cfg, key) is not None else task.defaults[key]
            for key in ("max_depth", "max_args", "min_length", "max_length")
        })  # fmt: skip
        spec.validate()
        return ResolvedData(task.name, sizes, cfg.seed, asdict(spec))
    given = [key for key in LISTOPS_ONLY if getattr(cfg, key) is not None]
    if given:
        raise ConfigError(f"data.{given[0]} applies to task listops only, not {task.name}")
    spec = pathfinder.SPECS[task.image_size]
    if cfg.max_length is not None and cfg.max_length < spec.sequence_length:
        raise ConfigError(
            f"data.max_length={cfg.max_length} is too short for task {task.name}: its sequences "
            f"are {spec.sequence_length} pixels ({spec.size}×{spec.size}); allowed: null or "
            f">= {spec.sequence_length}"
        )
    return ResolvedData(task.name, sizes, cfg.seed, asdict(spec))


# ------------------------------------------------------------------------------------------------
# Cache


def cache_path(data: ResolvedData, cache_dir: str | None = None) -> Path:
    desc = {"version": CACHE_VERSION, "chunk": CHUNK, **data.describe()}
    key = hashlib.sha256(json.dumps(desc, sort_keys=True).encode()).hexdigest()[:16]
    root = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    return root / "lra" / f"{data.task}-{key}.npz"


def _save(path: Path, splits: dict[str, tuple[list[bytes], list[int]]], meta: dict) -> None:
    arrays: dict[str, np.ndarray] = {"meta": np.array(json.dumps(meta))}
    for split, (examples, labels) in splits.items():
        lengths = np.fromiter((len(e) for e in examples), dtype=np.int64, count=len(examples))
        arrays[f"{split}_tokens"] = np.frombuffer(b"".join(examples), dtype=np.uint8)
        arrays[f"{split}_offsets"] = np.concatenate([[0], np.cumsum(lengths)])
        arrays[f"{split}_labels"] = np.asarray(labels, dtype=np.int64)
    files.atomic_write(path, lambda handle: np.savez(handle, **arrays))


def _load(path: Path) -> dict[str, np.ndarray] | None:
    """The cached arrays, or None when absent or unreadable (then they are generated again)."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None


# ------------------------------------------------------------------------------------------------
# Entry point


@dataclass
class LraData:
    """The encoded splits and where they came from."""

    task: LraTask
    resolved: ResolvedData
    splits: dict[str, EncodedSplit]
    cache_path: Path
    from_cache: bool
    seconds: float

    @property
    def spec(self) -> TaskSpec:
        return task_spec(self.task)

    def majority(self, split: str) -> float:
        labels = np.asarray(self.splits[split].labels)
        return float(np.bincount(labels).max() / len(labels))

    def summary(self) -> dict[str, Any]:
        return {
            **self.resolved.describe(),
            "sequence_length": self.resolved.sequence_length,
            "cache": str(self.cache_path),
            "from_cache": self.from_cache,
            "seconds": round(self.seconds, 2),
            "majority_accuracy": {s: self.majority(s) for s in ("validation", "test")},
        }


def task_spec(task: LraTask) -> TaskSpec:
    """The task in the form the fine-tuning machinery scores: accuracy, validation + test."""
    return TaskSpec(
        task.name, None, (), task.num_classes, ("accuracy",), "accuracy",
        validation_splits=("validation", "test"), test_splits=(), description=task.description,
    )  # fmt: skip


def encode(task: LraTask, tokens: np.ndarray, offsets: np.ndarray, labels) -> EncodedSplit:
    """``[CLS]`` + tokens per example (pixels become grey level + 2)."""
    shift = pathfinder.PIXEL0 if task.kind == "pathfinder" else 0
    dtype = np.int16 if task.vocab_size > 255 else np.uint8
    ids = tokens.astype(dtype) + dtype(shift)
    rows = [
        np.concatenate([np.array([listops.CLS], dtype=dtype), ids[offsets[i] : offsets[i + 1]]])
        for i in range(len(offsets) - 1)
    ]
    labels = [int(y) for y in labels]
    return EncodedSplit(rows, labels, list(range(len(rows))))


def load_lra(task_name: str, cfg: LraDataConfig | None = None, progress=None) -> LraData:
    """The task's splits, generated on the first call and cached (atomic write) afterwards."""
    task = get_lra_task(task_name)
    resolved = resolve_data(task, cfg or LraDataConfig())
    cfg = cfg or LraDataConfig()
    start = time.perf_counter()
    path = cache_path(resolved, cfg.cache_dir)
    arrays = _load(path)
    from_cache = arrays is not None
    if arrays is None:
        splits = generate_splits(resolved.task, resolved.generator, resolved.sizes,
                                 resolved.seed, cfg.workers, progress)  # fmt: skip
        _save(path, splits, {"key": resolved.describe(), "version": CACHE_VERSION})
        arrays = _load(path)
        assert arrays is not None, f"{path} unreadable right after writing it"
    encoded = {
        split: encode(task, arrays[f"{split}_tokens"], arrays[f"{split}_offsets"],
                      arrays[f"{split}_labels"])
        for split in ("train", "validation", "test")
    }  # fmt: skip
    return LraData(task, resolved, encoded, path, from_cache, time.perf_counter() - start)
