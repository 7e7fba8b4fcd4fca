"""The Long Range Arena tasks: the task table, the data config, the cache and the encoded splits
(generation: ``lra_generate``; the Text task's reviews: ``lra_text``; the files for other
codebases: ``lra_export``).

    listops        ListOps expressions (10 classes), lengths strictly inside (min_length, max_length)
    pathfinder32   Pathfinder 32×32: 1,024 pixels as a sequence (2 classes), ``data.difficulty``
    pathfinder64   Pathfinder 64×64: 4,096 pixels (2 classes)
    text           IMDb reviews as UTF-8 bytes (2 classes), ``data.source`` hub | local | standin

A sequence is ``[CLS]`` followed by the task's tokens (ListOps symbols; grey level + 2 for a pixel;
byte + 2 for text); the model pools it as ``model.pooling`` says. Validation and test are drawn
before train from their own seeds, so they do not change with ``train_size``; ListOps expressions
are distinct across all three splits (LRA draws a set of distinct trees too).

The cache (one .npz per data config) holds the config that made it and a sha256 of its arrays and
is checked when read; one that fails the check is rebuilt, with one warning line.
"""

from __future__ import annotations

import hashlib
import json
import time
import zipfile
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from llnbench import files
from llnbench.config import Seed
from llnbench.console import err_console
from llnbench.data import listops, lra_text, pathfinder
from llnbench.data.batching import EncodedSplit
from llnbench.data.corpus import default_cache_dir
from llnbench.data.glue import TaskSpec
from llnbench.data.lra_generate import CHUNK, Examples, generate_splits
from llnbench.errors import ConfigError, DataError, one_of

# 3: the making config and a checksum in the file; Pathfinder's per-image metadata; Text
CACHE_VERSION = 3
SPLITS = ("train", "validation", "test")
# Pathfinder's contour length in paddles per difficulty (LRA's curv_baseline,
# curv_contour_length_9 and curv_contour_length_14); LRA reports the hard one
DIFFICULTIES = pathfinder.DIFFICULTIES


@dataclass(frozen=True)
class LraTask:
    """One task and its CPU-sized defaults (``data.*`` and ``trainer.*`` win)."""

    name: str
    kind: str  # listops | pathfinder | text
    num_classes: int
    vocab_size: int  # incl. padding and [CLS]
    description: str
    defaults: dict[str, Any]  # data: max_length, min_length, train/validation/test sizes, ...
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
        defaults={"train_size": 4000, "validation_size": 500, "test_size": 500,
                  "difficulty": "hard"},
        recipe={"lr": 1e-3, "batch_size": 32, "epochs": 2},
        image_size=32,
    ),
    "pathfinder64": LraTask(
        "pathfinder64", "pathfinder", pathfinder.NUM_CLASSES, pathfinder.VOCAB_SIZE,
        "Pathfinder 64×64: are the two markers joined by a dashed contour (pixels as a sequence)",
        defaults={"train_size": 2000, "validation_size": 250, "test_size": 250,
                  "difficulty": "hard"},
        recipe={"lr": 1e-3, "batch_size": 16, "epochs": 1},
        image_size=64,
    ),
    "text": LraTask(
        "text", "text", lra_text.NUM_CLASSES, lra_text.VOCAB_SIZE,
        "Text: is a movie review positive (its UTF-8 bytes as a sequence)",
        defaults={"max_length": 1024, "train_size": 4000, "validation_size": 500,
                  "test_size": 500, "source": "auto"},
        recipe={"lr": 1e-3, "batch_size": 32, "epochs": 2},
    ),
}  # fmt: skip
ONLY = {  # data keys that apply to some kinds of task only
    "min_length": ("listops",), "max_depth": ("listops",), "max_args": ("listops",),
    "difficulty": ("pathfinder",), "source": ("text",), "local_dir": ("text",),
}  # fmt: skip


# LRA names the task Pathfinder and the 32×32 set its default
ALIASES = {"pathfinder": "pathfinder32"}


def get_lra_task(name: str) -> LraTask:
    name = ALIASES.get(name, name)
    if name not in LRA_TASKS:
        raise ConfigError(
            f"unknown task {name!r} for llnbench lra; allowed: {', '.join(LRA_TASKS)} "
            f"(pathfinder = pathfinder32)"
        )
    return LRA_TASKS[name]


@dataclass
class LraDataConfig:
    """``data`` of ``llnbench lra``; null = the task's default (``LRA_TASKS``)."""

    max_length: int | None = None  # ListOps and Text: [CLS] + tokens fit; Pathfinder: >= pixels
    min_length: int | None = None  # ListOps: expressions are longer (LRA 500)
    max_depth: int | None = None  # ListOps (LRA 10)
    max_args: int | None = None  # ListOps (LRA 10)
    train_size: int | None = None
    validation_size: int | None = None
    test_size: int | None = None
    difficulty: str | None = None  # Pathfinder: easy | intermediate | hard (6 / 9 / 14 paddles)
    source: str | None = None  # Text: auto | hub | local | standin
    local_dir: str | None = None  # Text, source=local: train/test files or the aclImdb folders
    seed: Seed = 0  # the data set's seed: the same examples for every training seed
    workers: int | None = None  # generation processes; null = up to 8, one per CPU core
    cache_dir: str | None = None  # default $LLNBENCH_CACHE or ~/.cache/llnbench
    export_dir: str | None = None  # also write the splits there, in LRA's file formats


@dataclass(frozen=True)
class ResolvedData:
    """Every generation parameter filled in and checked."""

    task: str
    sizes: dict[str, int]
    seed: int
    generator: dict[str, Any] = field(default_factory=dict)  # the spec's fields, or Text's source

    @property
    def kind(self) -> str:
        return get_lra_task(self.task).kind

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

    @property
    def label(self) -> str:
        """Which data, in words (the report's data column)."""
        g = self.generator
        if self.kind == "pathfinder":
            level = g["difficulty"]
            return f"Pathfinder {level} ({DIFFICULTIES[level]} paddles), data seed {self.seed}"
        if self.kind == "text":
            return lra_text.describe_source(g["source"])
        return f"ListOps, lengths ({g['min_length']}, {g['max_length']}), data seed {self.seed}"

    @property
    def standin(self) -> bool:
        return self.generator.get("source") == "standin"

    def describe(self) -> dict[str, Any]:
        return {"task": self.task, "sizes": self.sizes, "seed": self.seed, **self.generator}


def resolve_data(task: LraTask, cfg: LraDataConfig) -> ResolvedData:
    """The task's defaults under the config's values; one-line errors for values that do not
    fit the task (a key of another task, a length too short, an empty split)."""
    sizes = {}
    for split in SPLITS:
        given = getattr(cfg, f"{split}_size")
        sizes[split] = task.defaults[f"{split}_size"] if given is None else given
    for split, n in sizes.items():
        if n < 1:
            raise ConfigError(f"data.{split}_size must be positive, got {n}")
    for key, kinds in ONLY.items():
        if getattr(cfg, key) is not None and task.kind not in kinds:
            raise ConfigError(f"data.{key} applies to task {kinds[0]} only, not {task.name}")
    if task.kind == "listops":
        spec = listops.ListOpsSpec(**{
            key: getattr(cfg, key) if getattr(cfg, key) is not None else task.defaults[key]
            for key in ("max_depth", "max_args", "min_length", "max_length")
        })  # fmt: skip
        spec.validate()
        return ResolvedData(task.name, sizes, cfg.seed, asdict(spec))
    if task.kind == "text":
        source = lra_text.resolve_source(cfg.source or task.defaults["source"], cfg.local_dir)
        length = task.defaults["max_length"] if cfg.max_length is None else cfg.max_length
        if length < 2:
            raise ConfigError(
                f"data.max_length must be at least 2 ([CLS] and a byte), got {length}"
            )
        generator = {"source": source, "max_length": length,
                     "inputs": lra_text.fingerprint(source, cfg.local_dir)}  # fmt: skip
        return ResolvedData(task.name, sizes, cfg.seed, generator)
    spec = pathfinder.SPECS[task.image_size]
    if cfg.max_length is not None and cfg.max_length < spec.sequence_length:
        raise ConfigError(
            f"data.max_length={cfg.max_length} is too short for task {task.name}: its sequences "
            f"are {spec.sequence_length} pixels ({spec.size}×{spec.size}); allowed: null or "
            f">= {spec.sequence_length}"
        )
    difficulty = cfg.difficulty or task.defaults["difficulty"]
    if difficulty not in DIFFICULTIES:
        raise one_of("data.difficulty", difficulty, tuple(DIFFICULTIES))
    return ResolvedData(task.name, sizes, cfg.seed, {**asdict(spec), "difficulty": difficulty})


def resolved_config(task: LraTask, cfg: LraDataConfig) -> LraDataConfig:
    """``cfg`` with each null the task fills replaced by its value (config.yaml states what ran)."""
    data = resolve_data(task, cfg)
    g = data.generator
    values: dict[str, Any] = {f"{split}_size": n for split, n in data.sizes.items()}
    values["max_length"] = data.sequence_length
    if task.kind == "listops":
        values |= {key: g[key] for key in ("min_length", "max_depth", "max_args")}
    elif task.kind == "pathfinder":
        values["difficulty"] = g["difficulty"]
    else:
        values["source"] = g["source"]
    return replace(cfg, **values)


# ------------------------------------------------------------------------------------------------
# Cache


def cache_path(data: ResolvedData, cache_dir: str | None = None) -> Path:
    desc = {"version": CACHE_VERSION, "chunk": CHUNK, **data.describe()}
    key = hashlib.sha256(json.dumps(desc, sort_keys=True).encode()).hexdigest()[:16]
    root = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    return root / "lra" / f"{data.task}-{key}.npz"


def checksum(arrays: dict[str, np.ndarray]) -> str:
    """sha256 over every array but ``meta``: name, dtype, shape and bytes, in name order."""
    digest = hashlib.sha256()
    for name in sorted(arrays):
        if name == "meta":
            continue
        array = np.ascontiguousarray(arrays[name])
        digest.update(f"{name}|{array.dtype.str}|{array.shape}|".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def to_arrays(splits: dict[str, Examples], key: dict[str, Any]) -> dict[str, np.ndarray]:
    """The cache's arrays: per split tokens (uint8, concatenated), offsets, labels and metadata;
    ``meta`` holds the version, the making config and the checksum."""
    arrays: dict[str, np.ndarray] = {}
    for split, (examples, labels, extra) in splits.items():
        lengths = np.fromiter((len(e) for e in examples), dtype=np.int64, count=len(examples))
        arrays[f"{split}_tokens"] = np.frombuffer(b"".join(examples), dtype=np.uint8)
        arrays[f"{split}_offsets"] = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        arrays[f"{split}_labels"] = np.asarray(labels, dtype=np.int64)
        for name, values in extra.items():
            arrays[f"{split}_{name}"] = np.asarray(values)  # centres float32, lengths int16
    meta = {"version": CACHE_VERSION, "key": key, "checksum": checksum(arrays)}
    arrays["meta"] = np.array(json.dumps(meta))
    return arrays


def _save(path: Path, arrays: dict[str, np.ndarray]) -> None:
    try:
        files.atomic_write(path, lambda handle: np.savez(handle, **arrays))
    except files.PathError as err:  # it names the path and the cause
        raise DataError(
            f"cannot write the LRA data cache ({err}); set data.cache_dir=DIR (or "
            "$LLNBENCH_CACHE) to a writable folder"
        ) from None


def problem_with(arrays: dict[str, np.ndarray], key: dict[str, Any], classes: int) -> str | None:
    """Why the cached arrays cannot be used (in words), or None when they pass every check."""
    if "meta" not in arrays:
        return "has no meta record"
    try:
        meta = json.loads(str(arrays["meta"]))
    except (ValueError, TypeError):
        return "has a garbled meta record"
    if not isinstance(meta, dict) or meta.get("version") != CACHE_VERSION:
        return "is of another cache version"
    if meta.get("key") != json.loads(json.dumps(key)):
        return "was made by another data config"
    for split in SPLITS:
        for part in ("tokens", "offsets", "labels"):
            if f"{split}_{part}" not in arrays:
                return f"has no {split}_{part}"
        tokens, offsets = arrays[f"{split}_tokens"], arrays[f"{split}_offsets"]
        labels = arrays[f"{split}_labels"]
        if len(offsets) != key["sizes"][split] + 1 or len(labels) != len(offsets) - 1:
            return f"holds {len(labels)} {split} labels for {len(offsets) - 1} examples"
        if offsets[0] != 0 or offsets[-1] != len(tokens) or np.any(np.diff(offsets) < 0):
            return f"has bad {split} offsets"
        if labels.size and (labels.min() < 0 or labels.max() >= classes):
            return f"has {split} labels outside 0..{classes - 1}"
    if meta.get("checksum") != checksum(arrays):
        return "fails its checksum"
    return None


def _read(path: Path) -> tuple[dict[str, np.ndarray] | None, str | None]:
    """(the arrays, None), or (None, why they cannot be used); absent = (None, None)."""
    if not path.exists():
        return None, None
    if not path.is_file():
        raise DataError(
            f"the LRA data cache {path} is a directory or another non-file; remove it, or set "
            "data.cache_dir=DIR to another folder"
        )
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}, None
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:
        return None, f"cannot be read ({type(err).__name__})"


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
    arrays: dict[str, np.ndarray] = field(default_factory=dict, repr=False)  # the cache's

    @property
    def spec(self) -> TaskSpec:
        return task_spec(self.task)

    def majority(self, split: str) -> float:
        labels = np.asarray(self.splits[split].labels)
        return float(np.bincount(labels).max() / len(labels))

    def summary(self) -> dict[str, Any]:
        return {
            **self.resolved.describe(),
            "label": self.resolved.label,
            "standin": self.resolved.standin,
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
    """``[CLS]`` + tokens per example (pixels and bytes become their value + 2)."""
    shift = {"pathfinder": pathfinder.PIXEL0, "text": lra_text.BYTE0}.get(task.kind, 0)
    dtype = np.int16 if task.vocab_size > 255 else np.uint8
    ids = tokens.astype(dtype) + dtype(shift)
    rows = [
        np.concatenate([np.array([listops.CLS], dtype=dtype), ids[offsets[i] : offsets[i + 1]]])
        for i in range(len(offsets) - 1)
    ]
    labels = [int(y) for y in labels]
    return EncodedSplit(rows, labels, list(range(len(rows))))


def build(resolved: ResolvedData, cfg: LraDataConfig, progress=None) -> dict[str, Examples]:
    """Every split, from the generator or (Text) from the source's reviews."""
    if resolved.kind != "text":
        return generate_splits(resolved.task, resolved.generator, resolved.sizes,
                               resolved.seed, cfg.workers, progress)  # fmt: skip
    g = resolved.generator
    pools = lra_text.read_pools(g["source"], cfg.local_dir)
    splits = lra_text.assemble(pools, resolved.sizes, resolved.seed, resolved.max_length)
    return {split: (examples, labels, {}) for split, (examples, labels) in splits.items()}


def load_lra(task_name: str, cfg: LraDataConfig | None = None, progress=None) -> LraData:
    """The task's splits, built on the first call and cached (atomic write) afterwards; a cache
    that fails its check is rebuilt with one warning line."""
    task = get_lra_task(task_name)
    cfg = cfg or LraDataConfig()
    resolved = resolve_data(task, cfg)
    start = time.perf_counter()
    path = cache_path(resolved, cfg.cache_dir)
    key = {"chunk": CHUNK, **resolved.describe()}
    arrays, problem = _read(path)
    if arrays is not None:
        problem = problem_with(arrays, key, task.num_classes)
        if problem is not None:
            arrays = None
    if problem is not None:
        err_console.print(
            f"warning: the LRA data cache {path} {problem}; rebuilding it",
            markup=False,
            soft_wrap=True,  # one line, however long the path
        )
    from_cache = arrays is not None
    if arrays is None:
        arrays = to_arrays(build(resolved, cfg, progress), key)
        _save(path, arrays)
    encoded = {
        split: encode(task, arrays[f"{split}_tokens"], arrays[f"{split}_offsets"],
                      arrays[f"{split}_labels"])
        for split in SPLITS
    }  # fmt: skip
    seconds = time.perf_counter() - start
    return LraData(task, resolved, encoded, path, from_cache, seconds, arrays)
