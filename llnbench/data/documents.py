"""Reading pretraining documents: the embedded SOTU corpus, WikiText-103 (hub or cache) and local
files (.txt, a folder, a glob, .json/.jsonl), with validation held out by document.

Validation is held out by document, never by line or block: neighbouring lines leak (spec §2.3).
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from llnbench.data import SOTU_ASSET, asset_path, read_asset
from llnbench.data.hub import require_hub
from llnbench.errors import ConfigError, DataError

if TYPE_CHECKING:
    from llnbench.data.corpus_config import CorpusConfig

TEXT_SUFFIXES = (".txt",)
JSON_SUFFIXES = (".json", ".jsonl")
WIKITEXT = ("wikitext", "wikitext-103-raw-v1")
OFFLINE_FLAGS = "HF_DATASETS_OFFLINE/HF_HUB_OFFLINE"


@dataclass
class Documents:
    """Raw text of both splits, one string per document."""

    train: list[str]
    validation: list[str]


def read_embedded(cfg: CorpusConfig) -> Documents:
    """The vendored State of the Union addresses, one document per address, split by year."""
    rows = [json.loads(line) for line in read_asset(SOTU_ASSET).decode("utf-8").splitlines()]
    train = [r["text"] for r in rows if r["year"] < cfg.validation_years_from]
    validation = [r["text"] for r in rows if r["year"] >= cfg.validation_years_from]
    years = f"{rows[0]['year']}–{rows[-1]['year']}"
    if not validation or not train:
        raise ConfigError(
            f"data.validation_years_from={cfg.validation_years_from} leaves an empty split; the "
            f"embedded addresses span {years}"
        )
    return Documents(train, validation)


def is_article_title(line: str) -> bool:
    """WikiText's top-level headings look like `` = Title = `` (sections are `` = = … = = ``)."""
    s = line.strip()
    return len(s) > 4 and s.startswith("= ") and s.endswith(" =") and not s.startswith("= =")


def wikitext_articles(lines: Iterable[str]) -> Iterator[str]:
    """Join WikiText's line rows into one document per article, dropping empty lines."""
    current: list[str] = []
    for line in lines:
        if not line.strip():
            continue
        if is_article_title(line) and current:
            yield "".join(current)
            current = []
        current.append(line)
    if current:
        yield "".join(current)


OFFLINE_WAY_OUT = "use data=embedded, or data=local data.train_file=PATH"


def _hub_error(name: str, exc: Exception) -> DataError:
    return DataError(
        f"cannot load dataset {name!r} from the hub ({type(exc).__name__}); offline "
        f"({OFFLINE_FLAGS}=1) or without a network {OFFLINE_WAY_OUT}"
    )


def read_wikitext(cfg: CorpusConfig) -> Documents:
    """WikiText-103 (raw) from the hub, one document per article; the hub's validation split."""
    require_hub(f"dataset {'/'.join(WIKITEXT)!r}", OFFLINE_WAY_OUT)
    import datasets

    try:
        ds = datasets.load_dataset(*WIKITEXT)
    except (ConnectionError, datasets.exceptions.DatasetNotFoundError) as exc:
        raise _hub_error("/".join(WIKITEXT), exc) from exc

    def articles(split: str) -> list[str]:
        lines = (line for batch in ds[split].iter(batch_size=10_000) for line in batch["text"])
        return list(wikitext_articles(lines))

    return Documents(articles("train"), articles("validation"))


def resolve_files(spec: str, what: str) -> list[Path]:
    """A file, a folder (its .txt files, recursively) or a glob → sorted existing files."""
    path = Path(spec).expanduser()
    if any(ch in spec for ch in "*?["):
        files = sorted(Path(p) for p in glob.glob(str(path), recursive=True) if Path(p).is_file())
        if not files:
            raise DataError(f"{what} {spec!r} matches no files")
    elif path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in TEXT_SUFFIXES)
        if not files:
            raise DataError(f"{what} folder {str(path)!r} holds no .txt files")
    elif path.is_file():
        files = [path]
    else:
        raise DataError(f"{what} {str(path)!r} does not exist")
    kinds = {_file_kind(p, what) for p in files}
    if len(kinds) > 1:
        raise DataError(f"{what} {spec!r} mixes .txt and .json/.jsonl files; use one kind")
    return files


def _file_kind(path: Path, what: str) -> str:
    if path.suffix in TEXT_SUFFIXES:
        return "text"
    if path.suffix in JSON_SUFFIXES:
        return "json"
    raise DataError(
        f"{what} {str(path)!r} has an unsupported suffix; allowed: "
        f"{', '.join(TEXT_SUFFIXES + JSON_SUFFIXES)}"
    )


def fingerprint_files(files: Sequence[Path]) -> list[dict]:
    """Path, size and mtime of each file: cheap, and changes whenever a file is rewritten."""
    out = []
    for p in files:
        st = p.stat()
        out.append({"path": str(p.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns})
    return out


@contextlib.contextmanager
def _quiet_datasets() -> Iterator[None]:
    """Silence datasets' own progress bars while we show ours."""
    import datasets

    enabled = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if enabled:
            datasets.enable_progress_bars()


def read_local_documents(files: Sequence[Path], cfg: CorpusConfig, cache_dir: Path) -> list[str]:
    """Documents from .txt files (datasets' ``text`` builder) or .json/.jsonl (``json``)."""
    import datasets

    kind = _file_kind(files[0], "data file")
    kwargs: dict = {"sample_by": cfg.sample_by} if kind == "text" else {}
    try:
        with _quiet_datasets():
            ds = datasets.load_dataset(
                kind,
                data_files=[str(p) for p in files],
                split="train",
                cache_dir=str(cache_dir / "datasets"),
                **kwargs,
            )
    except datasets.exceptions.DatasetGenerationError as exc:
        cause = exc.__cause__ or exc
        raise DataError(f"cannot read {files[0]} as {kind}: {str(cause).splitlines()[0]}") from exc
    column = "text" if kind == "text" else cfg.text_column
    if column not in ds.column_names:
        raise DataError(
            f"{files[0]}: no column {column!r} (data.text_column); columns found: "
            f"{', '.join(ds.column_names)}"
        )
    return [t for t in ds[column] if isinstance(t, str) and t.strip()]


def split_by_document(n: int, fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Seeded document split: (train indices, validation indices), each in corpus order."""
    n_val = max(1, round(n * fraction))
    if n < 2 or n_val >= n:
        raise DataError(
            f"cannot hold out {fraction:.0%} of {n} document(s) for validation; give "
            "data.validation_file, more documents, or data.sample_by=paragraph"
        )
    perm = np.random.default_rng(seed).permutation(n)
    return sorted(perm[n_val:].tolist()), sorted(perm[:n_val].tolist())


def read_local(cfg: CorpusConfig, cache_dir: Path) -> Documents:
    """Local files; without a validation file, ``validation_fraction`` of documents is held out."""
    assert cfg.train_file is not None
    train_files = resolve_files(cfg.train_file, "data.train_file")
    docs = read_local_documents(train_files, cfg, cache_dir)
    if not docs:
        raise DataError(f"data.train_file {cfg.train_file!r} holds no text (empty corpus)")
    if cfg.validation_file:
        val_files = resolve_files(cfg.validation_file, "data.validation_file")
        validation = read_local_documents(val_files, cfg, cache_dir)
        if not validation:
            raise DataError(f"data.validation_file {cfg.validation_file!r} holds no text")
        return Documents(docs, validation)
    train_idx, val_idx = split_by_document(len(docs), cfg.validation_fraction, cfg.split_seed)
    return Documents([docs[i] for i in train_idx], [docs[i] for i in val_idx])


def describe_inputs(cfg: CorpusConfig) -> tuple[list, dict]:
    """What identifies the corpus without reading it (so a cache hit needs no hub or parsing)."""
    if cfg.source == "embedded":
        digest = hashlib.sha256(asset_path(SOTU_ASSET).read_bytes()).hexdigest()
        return [{"embedded": SOTU_ASSET, "sha256": digest}], {
            "validation_years_from": cfg.validation_years_from
        }
    if cfg.source == "wikitext103":
        return [{"hub": "/".join(WIKITEXT)}], {"hub_split": "validation"}
    assert cfg.train_file is not None
    inputs = [{"train": fingerprint_files(resolve_files(cfg.train_file, "data.train_file"))}]
    rule: dict = {"sample_by": cfg.sample_by, "text_column": cfg.text_column}
    if cfg.validation_file:
        val = resolve_files(cfg.validation_file, "data.validation_file")
        inputs.append({"validation": fingerprint_files(val)})
        rule["validation_file"] = True
    else:
        rule.update(fraction=cfg.validation_fraction, seed=cfg.split_seed)
    return inputs, rule


def read_documents(cfg: CorpusConfig, cache_dir: Path) -> Documents:
    """Both splits of the configured source, capped at ``max_documents`` each."""
    if cfg.source == "embedded":
        docs = read_embedded(cfg)
    elif cfg.source == "wikitext103":
        docs = read_wikitext(cfg)
    else:
        docs = read_local(cfg, cache_dir)
    if cfg.max_documents is not None:
        docs.train = docs.train[: cfg.max_documents]
        docs.validation = docs.validation[: cfg.max_documents]
    if not docs.train:
        raise DataError(f"the {cfg.source} corpus has no training documents (all empty?)")
    if not docs.validation:
        raise DataError(f"the {cfg.source} corpus has no validation documents (all empty?)")
    return docs
