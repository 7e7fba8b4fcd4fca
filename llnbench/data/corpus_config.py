"""``CorpusConfig``: where the pretraining text comes from (``conf/data/``).

It sits below both ``documents`` (which reads the text it names) and ``corpus`` (which tokenises
and packs it), so neither of the two imports the other.
"""

from __future__ import annotations

from dataclasses import dataclass

from llnbench.config import Seed
from llnbench.errors import ConfigError, one_of

SOURCES = ("embedded", "wikitext103", "local")
SAMPLE_BY = ("document", "paragraph")


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
