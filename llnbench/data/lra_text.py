"""LRA's Text task (Tay et al. 2020): IMDb reviews as UTF-8 bytes, positive or negative.

Where the reviews come from (``data.source``):

    hub      ``stanfordnlp/imdb`` through ``datasets`` (25,000 train / 25,000 test reviews)
    local    ``data.local_dir``: ``train`` and ``test`` files (``validation`` optional), each
             .csv, .tsv (a header row) or .jsonl with the fields ``text`` and ``label`` (0/1 or
             neg/pos); or the aclImdb folders ``train/pos``, ``train/neg``, ``test/pos``,
             ``test/neg`` of one review per .txt file, as the Stanford archive unpacks
    standin  NOT IMDb: the 10,568 Rotten Tomatoes snippets vendored for GLUE's ``sst2_rt`` (score
             != 0, label = score > 0), one short snippet per example. Offline smoke runs only.
    auto     hub when online, the stand-in when offline (HF_HUB_OFFLINE / HF_DATASETS_OFFLINE),
             with a line saying so

A review becomes its first ``max_length - 1`` UTF-8 bytes (cut at a character boundary, so the
text written by ``data.export_dir`` encodes back to exactly these bytes); the tokens are
``[CLS]`` and byte + 2. A split the source lacks is drawn from its train split (seeded by
``data.seed``): validation always for IMDb, validation and test for the stand-in.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np

from llnbench.data import MOVIE_REVIEWS_ASSET, hub, read_asset
from llnbench.errors import ConfigError, DataError, one_of

IMDB_DATASET = "stanfordnlp/imdb"
HUB_HOST = "huggingface.co"
BYTE0 = 2  # token = byte + 2 (0 = padding, 1 = the classification token)
VOCAB_SIZE = BYTE0 + 256
NUM_CLASSES = 2
SOURCES = ("auto", "hub", "local", "standin")
STANDIN_NAME = "stand-in: Rotten Tomatoes snippets (NOT IMDb)"
FILE_SUFFIXES = (".csv", ".tsv", ".jsonl")
LABELS = {"0": 0, "1": 1, "neg": 0, "pos": 1, "negative": 0, "positive": 1}
SPLITS = ("train", "validation", "test")

Pools = dict[str, tuple[list[str], list[int]]]  # split -> (texts, labels), as the source has them


def offline() -> bool:
    return hub.offline_flag() is not None


def hub_reachable(timeout: float = hub.PROBE_TIMEOUT_S) -> bool:
    """One bounded connection to the hub (or the HTTPS proxy): fails in seconds, where
    ``datasets`` retries for long."""
    return hub.reachable(*hub.hub_address(), timeout=timeout) is None


def resolve_source(source: str, local_dir: str | None) -> str:
    """hub | local | standin: ``auto`` decided, and the source checked against its keys."""
    if source not in SOURCES:
        raise one_of("data.source", source, SOURCES)
    if source == "local" and not local_dir:
        raise ConfigError(
            "data.source=local needs data.local_dir=DIR (train and test .csv/.tsv/.jsonl files "
            "with text,label, or the aclImdb folders train/pos, train/neg, test/pos, test/neg)"
        )
    if source != "local" and local_dir:
        raise ConfigError(f"data.local_dir applies to data.source=local only, not {source}")
    if source == "auto":
        return "standin" if offline() else "hub"
    return source


def describe_source(source: str) -> str:
    return {"hub": f"IMDb ({IMDB_DATASET})", "local": "IMDb (local files)",
            "standin": STANDIN_NAME}[source]  # fmt: skip


# ------------------------------------------------------------------------------------------------
# Reading


def fingerprint(source: str, local_dir: str | None) -> dict[str, Any]:
    """What identifies the input, cheaply (for the cache key): any change, a new cache entry."""
    if source == "hub":
        return {"dataset": IMDB_DATASET}
    if source == "standin":
        return {"asset": MOVIE_REVIEWS_ASSET}
    root = Path(local_dir or "").expanduser().resolve()
    found = _local_files(root)
    stats = {}
    for split, paths in found.items():
        stats[split] = [[str(p.relative_to(root)), p.stat().st_size, p.stat().st_mtime_ns]
                        for p in paths]  # fmt: skip
    return {"local_dir": str(root), "files": stats}


def read_pools(source: str, local_dir: str | None) -> Pools:
    if source == "hub":
        return _read_hub()
    if source == "standin":
        return _read_standin()
    root = Path(local_dir or "").expanduser().resolve()
    pools: Pools = {}
    for split, paths in _local_files(root).items():
        if len(paths) == 1 and paths[0].suffix in FILE_SUFFIXES:
            pools[split] = _read_file(paths[0])
        else:
            pools[split] = _read_acl(root / split, paths)
    return pools


def _hub_error(why: str) -> DataError:
    return DataError(
        f"cannot load {IMDB_DATASET} from the hub ({why}); use data.source=local "
        "data.local_dir=DIR (README, LRA: the Text task), or data.source=standin for the "
        "offline stand-in (NOT IMDb)"
    )


def _read_hub() -> Pools:
    if not offline() and not hub_reachable():
        raise _hub_error(f"{HUB_HOST} is unreachable")
    import datasets

    try:
        raw = datasets.load_dataset(IMDB_DATASET)
    except Exception as exc:  # offline without a cached copy, or the hub refusing: one line
        why = "offline and not in the datasets cache" if offline() else type(exc).__name__
        raise _hub_error(why) from None
    pools: Pools = {}
    for split in ("train", "test"):
        if split not in raw:
            raise DataError(f"{IMDB_DATASET} has no split {split!r}")
        pools[split] = (list(raw[split]["text"]), [int(y) for y in raw[split]["label"]])
    return pools


def _read_standin() -> Pools:
    texts, labels = [], []
    raw = read_asset(MOVIE_REVIEWS_ASSET).decode("utf-8").replace("\r\n", "\n")
    for line in raw.split("\n"):
        if not line:
            continue
        _, score, text = line.split("\t", 2)
        if float(score) != 0.0:  # as sst2_rt: neutral snippets have no label
            texts.append(text)
            labels.append(int(float(score) > 0))
    return {"train": (texts, labels)}


def _local_files(root: Path) -> dict[str, list[Path]]:
    """split -> its file (one .csv/.tsv/.jsonl) or its aclImdb .txt files (pos first, sorted)."""
    if not root.is_dir():
        raise DataError(f"data.local_dir {str(root)!r} is not a directory")
    found: dict[str, list[Path]] = {}
    for split in SPLITS:
        files = [root / f"{split}{suffix}" for suffix in FILE_SUFFIXES]
        files = [p for p in files if p.is_file()]
        if len(files) > 1:
            raise DataError(f"{root} holds {len(files)} files for split {split}: "
                            f"{', '.join(p.name for p in files)}; keep one")  # fmt: skip
        if files:
            found[split] = files
        elif (root / split / "pos").is_dir() and (root / split / "neg").is_dir():
            found[split] = sorted((root / split / "pos").glob("*.txt")) + sorted(
                (root / split / "neg").glob("*.txt")
            )
    for split in ("train", "test"):
        if split not in found:
            raise DataError(
                f"{root} has no {split} split: expected {split}.csv, {split}.tsv or "
                f"{split}.jsonl (fields text, label), or folders {split}/pos and {split}/neg"
            )
    return found


def _label(value: Any, where: str) -> int:
    key = str(value).strip().lower()
    if key not in LABELS:
        raise DataError(f"{where}: label {value!r} is not one of 0, 1, neg, pos")
    return LABELS[key]


def _read_file(path: Path) -> tuple[list[str], list[int]]:
    texts, labels = [], []
    try:
        if path.suffix == ".jsonl":
            with path.open(encoding="utf-8") as handle:
                rows = [(i, json.loads(line)) for i, line in enumerate(handle, 1) if line.strip()]
        else:
            with path.open(encoding="utf-8", newline="") as handle:
                # a .tsv is read verbatim (reviews hold stray quotes); a .csv may quote fields
                options = (
                    {"delimiter": "\t", "quoting": csv.QUOTE_NONE} if path.suffix == ".tsv" else {}
                )
                rows = list(enumerate(csv.DictReader(handle, **options), 2))
    except (UnicodeDecodeError, json.JSONDecodeError, csv.Error) as exc:
        raise DataError(f"cannot read {path}: {type(exc).__name__}: {exc}") from None
    for line, row in rows:
        if not isinstance(row, dict) or "text" not in row or "label" not in row:
            raise DataError(f"{path} line {line}: expected the fields text and label")
        texts.append(str(row["text"]))
        labels.append(_label(row["label"], f"{path} line {line}"))
    if not texts:
        raise DataError(f"{path} holds no examples")
    return texts, labels


def _read_acl(folder: Path, paths: list[Path]) -> tuple[list[str], list[int]]:
    texts, labels = [], []
    for path in paths:
        try:
            texts.append(path.read_text(encoding="utf-8"))
        except UnicodeDecodeError:
            raise DataError(f"{path} is not UTF-8 text") from None
        labels.append(int(path.parent.name == "pos"))
    if not texts:
        raise DataError(f"{folder}/pos and {folder}/neg hold no .txt files")
    return texts, labels


# ------------------------------------------------------------------------------------------------
# Splits


def utf8_prefix(text: str, limit: int) -> bytes:
    """The text's first ``limit`` UTF-8 bytes, less a character cut in two at the end."""
    data = text.encode("utf-8")[:limit]
    return data.decode("utf-8", errors="ignore").encode("utf-8")


def assemble(
    pools: Pools, sizes: dict[str, int], seed: int, max_bytes: int
) -> dict[str, tuple[list[bytes], list[int]]]:
    """The three splits: a split the source lacks is drawn from its train pool first (seeded),
    then each split is a seeded sample of ``sizes[split]`` examples; too few is a ConfigError."""
    rng = np.random.default_rng([seed, 20])  # 20: the issue that asked for this task
    train_texts, train_labels = pools["train"]
    order = list(rng.permutation(len(train_texts)))
    chosen: dict[str, list[tuple[str, int]]] = {}
    for split in ("validation", "test"):
        if split in pools:
            texts, labels = pools[split]
            picked = rng.permutation(len(texts))[: sizes[split]]
            chosen[split] = [(texts[i], labels[i]) for i in picked]
            available = len(texts)
        else:
            available = len(order)
            chosen[split] = [(train_texts[i], train_labels[i]) for i in order[: sizes[split]]]
            order = order[sizes[split] :]
        _enough(split, sizes[split], available, split in pools)
    _enough("train", sizes["train"], len(order), True)
    chosen["train"] = [(train_texts[i], train_labels[i]) for i in order[: sizes["train"]]]
    return {
        split: (
            [utf8_prefix(t, max_bytes) for t, _ in chosen[split]],
            [y for _, y in chosen[split]],
        )
        for split in SPLITS
    }


def _enough(split: str, wanted: int, available: int, own: bool) -> None:
    if wanted > available:
        where = "the source's" if own else "the train pool left for"
        raise ConfigError(
            f"data.{split}_size={wanted} is more than {where} {split} split holds "
            f"({available:,} reviews); allowed: <= {available}"
        )
