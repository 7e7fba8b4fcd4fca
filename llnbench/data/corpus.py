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

from llnbench.data.corpus_config import CorpusConfig
from llnbench.data.documents import describe_inputs, read_documents
from llnbench.errors import ConfigError, DataError

if TYPE_CHECKING:
    from llnbench.data.tokenizer import RobertaTokenizer

CACHE_VERSION = 2  # 2: entries record the sha256 of their arrays, checked on every read


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


def content_sha256(arrays: dict[str, np.ndarray]) -> str:
    """sha256 of every array's name, dtype, shape and bytes, in name order."""
    digest = hashlib.sha256()
    for name in sorted(arrays):
        array = np.ascontiguousarray(arrays[name])
        digest.update(f"{name}:{array.dtype.str}:{array.shape};".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


ARRAYS = ("train", "validation", "unigram_counts")
NUMBERS = ("documents_train", "documents_validation", "tokens_train", "tokens_validation")


def _load(path: Path, desc: dict, block_size: int) -> tuple[dict[str, np.ndarray], dict] | None:
    """The cached arrays when present and proven (the config that made them equals ``desc``,
    their checksum matches); None when absent. A cache that cannot be read or fails the check
    gets one warning line and None (it is rebuilt)."""
    if not path.exists():
        return None
    if not path.is_file():  # a folder (or a FIFO) where the cache belongs cannot be replaced
        raise DataError(f"corpus cache {path} is not a regular file; move it away and rerun")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files if k != "meta"}
            meta = json.loads(str(z["meta"]))
        problem = _cache_problem(arrays, meta, desc, block_size)
    except (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile) as err:
        problem = f"unreadable: {type(err).__name__}"
    if problem is None:
        return arrays, meta
    from llnbench.console import err_console

    err_console.print(
        f"llnbench: warning: corpus cache {path} {problem}; rebuilding it",
        markup=False, highlight=False, soft_wrap=True,
    )  # fmt: skip
    return None


def _cache_problem(arrays: dict, meta: dict, desc: dict, block_size: int) -> str | None:
    """Why a read cache cannot be trusted, or None."""
    if not isinstance(meta, dict) or meta.get("key") != desc:
        return "was made by another config"
    missing = [k for k in ARRAYS if k not in arrays]
    if missing or not all(isinstance(meta.get("numbers", {}).get(k), int) for k in NUMBERS):
        return f"is missing {', '.join(missing) or 'its numbers'}"
    if meta.get("sha256") != content_sha256(arrays):
        return "fails its checksum"
    if any(
        arrays[k].ndim != 2 or arrays[k].shape[1] != block_size for k in ("train", "validation")
    ):
        return f"does not hold blocks of {block_size} tokens"
    return None


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
    cached = _load(path, desc, block_size)
    from_cache = cached is not None
    if cached is None:
        arrays, numbers = build_blocks(cfg, tokenizer, block_size, path.parent.parent)
        meta = {"key": desc, "numbers": numbers, "config": asdict(cfg)}
        _save(path, arrays, {**meta, "sha256": content_sha256(arrays)})
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
