"""Pretraining text: documents (read by ``llnbench.data.documents``: embedded SOTU / WikiText-103 /
local files, split by document) tokenised once, packed RoBERTa-style into ``<s> … </s>`` blocks
and cached.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from llnbench.config import Seed
from llnbench.data.documents import describe_inputs, read_documents
from llnbench.errors import ConfigError, DataError, one_of

if TYPE_CHECKING:
    from llnbench.data.tokenizer import RobertaTokenizer

SOURCES = ("embedded", "wikitext103", "local")
SAMPLE_BY = ("document", "paragraph")
CACHE_VERSION = 1


@dataclass
class CorpusConfig:
    """Where the pretraining text comes from and how validation is held out (``conf/data/``)."""

    source: str = "embedded"  # embedded | wikitext103 | local
    train_file: str | None = None  # local: a file, a folder of .txt files, or a glob
    validation_file: str | None = None  # local: same forms; None = hold out by document
    validation_years_from: int = 2010  # embedded: addresses from this year on are validation
    validation_fraction: float = 0.05  # local without validation_file: documents held out
    split_seed: Seed = 0  # local without validation_file: seed of the document split
    sample_by: str = "document"  # local .txt: one file = one document, or blank-line paragraphs
    text_column: str = "text"  # local .json/.jsonl
    max_documents: int | None = None  # cap per split, in corpus order (quick runs)
    tokenizer: str = "embedded"  # "embedded" or a hub id such as FacebookAI/roberta-base
    cache_dir: str | None = None  # default $LLNBENCH_CACHE or ~/.cache/llnbench

    def validate(self) -> None:
        """Cross-field checks, each a one-line ConfigError naming the value."""
        if self.source not in SOURCES:
            raise one_of("data.source", self.source, SOURCES)
        if self.sample_by not in SAMPLE_BY:
            raise one_of("data.sample_by", self.sample_by, SAMPLE_BY)
        if self.source == "local" and not self.train_file:
            raise ConfigError(
                "data=local needs data.train_file=PATH (a .txt/.json/.jsonl file, "
                "a folder of .txt files, or a glob)"
            )
        if not 0.0 < self.validation_fraction < 1.0:
            raise ConfigError(
                f"data.validation_fraction must be in (0, 1), got {self.validation_fraction}"
            )
        if self.max_documents is not None and self.max_documents < 1:
            raise ConfigError(f"data.max_documents must be ≥ 1 or null, got {self.max_documents}")


@dataclass
class PretrainingData:
    """Packed blocks ready for the MLM loop, plus the numbers printed at the start of a run."""

    train: torch.Tensor  # (n_blocks, block_size) int64
    validation: torch.Tensor  # (m_blocks, block_size) int64
    unigram_counts: torch.Tensor  # (vocab_size,) int64, training tokens, specials zeroed
    block_size: int
    documents_train: int
    documents_validation: int
    tokens_train: int  # content tokens (no <s>/</s>) before packing
    tokens_validation: int
    cache_path: Path | None = None
    from_cache: bool = False
    seconds: float = 0.0

    def summary(self) -> dict[str, int | str | bool]:
        return {
            "documents_train": self.documents_train,
            "documents_validation": self.documents_validation,
            "tokens_train": self.tokens_train,
            "tokens_validation": self.tokens_validation,
            "blocks_train": int(self.train.shape[0]),
            "blocks_validation": int(self.validation.shape[0]),
            "block_size": self.block_size,
            "cache": str(self.cache_path) if self.cache_path else "",
            "from_cache": self.from_cache,
        }

    def unigram_log_probs(self, smoothing: float = 1.0) -> torch.Tensor:
        """log p(token) under the training frequencies (add-``smoothing``): the context-free
        baseline whose cross entropy on masked targets a useful model must beat (spec §2.4)."""
        counts = self.unigram_counts.double() + smoothing
        return (counts / counts.sum()).log()


# ------------------------------------------------------------------------------------------------
# Tokenising and packing

_BATCH_CHARS = 1_000_000  # documents per tokenizer call, by size: SOTU ~20, WikiText ~200


def _batches(texts: Sequence[str]) -> Iterator[list[str]]:
    batch: list[str] = []
    size = 0
    for text in texts:
        batch.append(text)
        size += len(text)
        if size >= _BATCH_CHARS:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


def tokenize_documents(
    texts: Sequence[str], tokenizer: RobertaTokenizer, label: str = ""
) -> list[np.ndarray]:
    """Ids of each document (no specials), batched through the fast tokenizer, with progress on
    stderr (a bar on a terminal, plain lines in a log)."""
    from llnbench.console import err_console
    from llnbench.progress import ProgressBar

    out: list[np.ndarray] = []
    bar = ProgressBar(f"tokenising {label}", len(texts), unit="document", console=err_console,
                      every=max(1, len(texts) // 10), transient=True)  # fmt: skip
    with bar:
        for batch in _batches(texts):
            for ids in tokenizer.encode_batch(batch, add_special_tokens=False):
                out.append(np.asarray(ids, dtype=np.int32))
            bar.update(advance=len(batch))
    return out


def pack_blocks(
    docs: Sequence[np.ndarray], bos_id: int, eos_id: int, block_size: int
) -> np.ndarray:
    """RoBERTa packing: documents each followed by ``</s>``, concatenated, cut into pieces of
    ``block_size - 2``, each wrapped as ``<s> piece </s>``; the last partial piece is dropped."""
    body = block_size - 2
    total = sum(len(d) + 1 for d in docs)
    stream = np.empty(total, dtype=np.int32)
    pos = 0
    for d in docs:
        stream[pos : pos + len(d)] = d
        stream[pos + len(d)] = eos_id
        pos += len(d) + 1
    n = total // body
    blocks = np.empty((n, block_size), dtype=np.int32)
    blocks[:, 0] = bos_id
    blocks[:, -1] = eos_id
    blocks[:, 1:-1] = stream[: n * body].reshape(n, body)
    return blocks


def _blocks_or_error(
    docs: Sequence[np.ndarray],
    tokenizer: RobertaTokenizer,
    block_size: int,
    split: str,
    source: str,
) -> np.ndarray:
    blocks = pack_blocks(docs, tokenizer.bos_id, tokenizer.eos_id, block_size)
    if blocks.shape[0] == 0:
        tokens = sum(len(d) + 1 for d in docs)
        raise DataError(
            f"the {source} {split} split has {tokens} tokens, too few for one block of "
            f"{block_size} (needs {block_size - 2}); add text or lower the block size"
        )
    return blocks


# ------------------------------------------------------------------------------------------------
# Cache


def default_cache_dir() -> Path:
    return Path(os.environ.get("LLNBENCH_CACHE") or Path.home() / ".cache" / "llnbench")


def cache_key(cfg: CorpusConfig, tokenizer: RobertaTokenizer, block_size: int) -> tuple[str, dict]:
    """sha256 of (format version, source, input fingerprints, tokenizer name + fingerprint,
    block size, split rule, document cap): any change gives a new entry."""
    inputs, rule = describe_inputs(cfg)
    desc = {
        "version": CACHE_VERSION,
        "source": cfg.source,
        "inputs": inputs,
        "tokenizer": {"name": tokenizer.name, "sha256": tokenizer.fingerprint},
        "block_size": block_size,
        "split": rule,
        "max_documents": cfg.max_documents,
    }
    blob = json.dumps(desc, sort_keys=True).encode("utf-8")
    return hashlib.sha256(blob).hexdigest(), desc


def cache_path(
    cfg: CorpusConfig, tokenizer: RobertaTokenizer, block_size: int
) -> tuple[Path, dict]:
    key, desc = cache_key(cfg, tokenizer, block_size)
    root = Path(cfg.cache_dir).expanduser() if cfg.cache_dir else default_cache_dir()
    tok = re.sub(r"[^A-Za-z0-9_.-]+", "_", tokenizer.name)
    return root / "corpus" / f"{cfg.source}-{tok}-b{block_size}-{key[:16]}.npz", desc


def _save(path: Path, arrays: dict[str, np.ndarray], meta: dict) -> None:
    """Atomic: write a temporary file in the same folder, fsync, then rename over the target."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            np.savez(f, meta=np.array(json.dumps(meta)), **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _load(path: Path) -> tuple[dict[str, np.ndarray], dict] | None:
    """The cached arrays, or None when absent or unreadable (then it is rebuilt)."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files if k != "meta"}
            meta = json.loads(str(z["meta"]))
    except (OSError, ValueError, KeyError, zipfile.BadZipFile):
        return None
    return arrays, meta


# ------------------------------------------------------------------------------------------------
# Entry point


def _storage_dtype(vocab_size: int) -> type:
    return np.uint16 if vocab_size <= np.iinfo(np.uint16).max + 1 else np.int32


def build_blocks(
    cfg: CorpusConfig, tokenizer: RobertaTokenizer, block_size: int, cache_dir: Path
) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    """Read, tokenise and pack both splits: (arrays, summary numbers)."""
    docs = read_documents(cfg, cache_dir)
    train_ids = tokenize_documents(docs.train, tokenizer, f"{cfg.source} train")
    val_ids = tokenize_documents(docs.validation, tokenizer, f"{cfg.source} validation")
    train = _blocks_or_error(train_ids, tokenizer, block_size, "training", cfg.source)
    validation = _blocks_or_error(val_ids, tokenizer, block_size, "validation", cfg.source)
    counts = np.bincount(train.ravel(), minlength=len(tokenizer)).astype(np.int64)
    counts[list(tokenizer.special_ids)] = 0
    dtype = _storage_dtype(len(tokenizer))
    arrays = {
        "train": train.astype(dtype),
        "validation": validation.astype(dtype),
        "unigram_counts": counts,
    }
    numbers = {
        "documents_train": len(train_ids),
        "documents_validation": len(val_ids),
        "tokens_train": int(sum(len(d) for d in train_ids)),
        "tokens_validation": int(sum(len(d) for d in val_ids)),
    }
    return arrays, numbers


def load_pretraining_blocks(
    cfg: CorpusConfig, tokenizer: RobertaTokenizer | None = None, block_size: int = 128
) -> PretrainingData:
    """Packed training/validation blocks for ``cfg``; tokenises on the first call only.

    ``tokenizer`` defaults to ``load_tokenizer(cfg.tokenizer)``.
    The result is cached under ``cfg.cache_dir`` (default ``$LLNBENCH_CACHE`` or
    ``~/.cache/llnbench``) keyed by corpus, tokenizer, block size and split rule (``cache_key``).
    """
    cfg.validate()
    if tokenizer is None:
        from llnbench.data.tokenizer import load_tokenizer

        tokenizer = load_tokenizer(cfg.tokenizer)
    if block_size < 3:
        raise ConfigError(f"block size must be ≥ 3 (<s> + tokens + </s>), got {block_size}")
    start = time.perf_counter()
    path, desc = cache_path(cfg, tokenizer, block_size)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:  # a file in the way, no permission, a read-only filesystem
        where = "data.cache_dir" if cfg.cache_dir else "the cache ($LLNBENCH_CACHE)"
        raise ConfigError(
            f"{where}: cannot create {path.parent} ({err.strerror}); name a writable folder"
        ) from None
    cached = _load(path)
    from_cache = cached is not None
    if cached is None:
        arrays, numbers = build_blocks(cfg, tokenizer, block_size, path.parent.parent)
        _save(path, arrays, {"key": desc, "numbers": numbers, "config": asdict(cfg)})
    else:
        arrays, meta = cached
        numbers = meta["numbers"]
    return PretrainingData(
        train=torch.from_numpy(arrays["train"].astype(np.int64)),
        validation=torch.from_numpy(arrays["validation"].astype(np.int64)),
        unigram_counts=torch.from_numpy(arrays["unigram_counts"].astype(np.int64)),
        block_size=block_size,
        cache_path=path,
        from_cache=from_cache,
        seconds=time.perf_counter() - start,
        **numbers,
    )
