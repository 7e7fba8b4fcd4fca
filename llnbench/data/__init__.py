"""Data layer: tokenizer, pretraining corpora, MLM masking and GLUE tasks.

Modules (import them directly; this package stays light so ``import llnbench.data`` is cheap):

- ``tokenizer``  RoBERTa byte-level BPE, from the vendored GPT-2 files or a hub id
- ``corpus``     pretraining text (embedded / WikiText-103 / local files) packed into blocks, cached
- ``masking``    dynamic MLM masking with a resumable generator
- ``glue``       the GLUE task table, loading (hub / local / embedded), metrics, submissions
- ``build_assets``  rebuilds ``assets/`` from the npm and PyPI registries

The vendored files live in ``assets/`` with their licences (``assets/LICENSES.md``) and provenance
(``assets/SOURCES.json``).
"""

from __future__ import annotations

import lzma
from pathlib import Path

from llnbench.errors import DataError

ASSETS_DIR = Path(__file__).resolve().parent / "assets"

# Vendored file names, shared by the builder and the readers.
SOTU_ASSET = "sotu.jsonl.xz"
MOVIE_REVIEWS_ASSET = "movieReviewSnippets_GroundTruth.txt.xz"
GPT2_VOCAB_ASSET = "gpt2-vocab.json.xz"
GPT2_MERGES_ASSET = "gpt2-merges.txt.xz"


def asset_path(name: str) -> Path:
    """Path of a vendored asset; a missing one is a DataError naming ``make assets``."""
    path = ASSETS_DIR / name
    if not path.is_file():
        raise DataError(
            f"vendored asset {path} is missing; rebuild it with `make assets` "
            "(python -m llnbench.data.build_assets)"
        )
    return path


def read_asset(name: str) -> bytes:
    """The bytes of a vendored asset, decompressed when it ends in ``.xz``."""
    path = asset_path(name)
    data = path.read_bytes()
    return lzma.decompress(data) if path.suffix == ".xz" else data
