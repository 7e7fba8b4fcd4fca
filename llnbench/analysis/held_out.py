"""What checkpoint mode measures on: the pretrained runs and the held-out token ids they all see.

``held_out`` gives the sequences every compared run sees: by
default evenly spaced validation blocks of the first run's own data config (for the embedded corpus
the addresses from 2010 on), cut to ``max_len`` tokens and ending in ``</s>`` like the blocks the
model was trained on; or ``text_file`` tokenised and cut into ``<s> piece </s>`` sequences of
``max_len`` tokens, the last one padded (its padding excluded from every instrument).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from llnbench.analysis.probe import probe_batch
from llnbench.config import from_dict
from llnbench.data.corpus import CorpusConfig, load_pretraining_blocks
from llnbench.data.tokenizer import RobertaTokenizer
from llnbench.errors import ConfigError, DataError
from llnbench.model.pretrained import Pretrained

if TYPE_CHECKING:
    from llnbench.analysis.config import AnalyzeConfig

MAX_LEN = 512  # dense N × N float64 matrices of real text


@dataclass
class Sequences:
    """The held-out token ids every run sees, and the example (sequence 0) for the figures."""

    input_ids: Tensor  # (S, N) int64
    mask: Tensor  # (S, N) bool, True = real token
    source: str
    example_tokens: list[str] = field(default_factory=list)  # sequence 0, real tokens

    @property
    def seq_len(self) -> int:
        return int(self.input_ids.shape[1])

    def summary(self) -> dict[str, Any]:
        return {
            "source": self.source, "count": int(self.input_ids.shape[0]), "seq_len": self.seq_len,
            "lengths": self.mask.sum(1).tolist(), "ln_N": math.log(self.seq_len),
            "example_text": "".join(self.example_tokens),
        }  # fmt: skip


def run_labels(paths: list[str], runs: list[Pretrained]) -> list[str]:
    """The attention name where it tells the runs apart, else ``name (run dir name)``."""
    names = [r.attention.name for r in runs]
    labels = [
        name if names.count(name) == 1 else f"{name} ({Path(p).resolve().name})"
        for name, p in zip(names, paths)
    ]
    if len(set(labels)) != len(labels):
        raise ConfigError(f"checkpoint lists the same run twice: {paths}")
    return labels


def shared_tokenizer(runs: list[Pretrained], labels: list[str]) -> str:
    names = {r.tokenizer for r in runs}
    if len(names) > 1:
        listing = ", ".join(f"{label}: {r.tokenizer}" for label, r in zip(labels, runs))
        raise ConfigError(f"the runs use different tokenizers ({listing}); compare like with like")
    return names.pop()


def held_out(
    cfg: AnalyzeConfig, runs: list[Pretrained], labels: list[str], tokenizer: RobertaTokenizer
) -> Sequences:
    """``text_file`` cut into sequences, or evenly spaced validation blocks of the first run."""
    positions = min(r.model.max_len for r in runs)
    if cfg.max_len is not None and cfg.max_len > positions:
        which = labels[[r.model.max_len for r in runs].index(positions)]
        raise ConfigError(
            f"max_len={cfg.max_len} exceeds model.max_len={positions} of run {which} (its "
            "learned positions); lower max_len"
        )
    limit = min(MAX_LEN, positions)
    if cfg.text_file:
        n = cfg.max_len or limit
        ids, mask = text_sequences(Path(cfg.text_file), tokenizer, n, cfg.num_sequences)
        source = f"{cfg.text_file} (cut into sequences of {n} tokens)"
    else:
        ids, source = validation_sequences(cfg, runs[0], labels[0], tokenizer, limit)
        mask = torch.ones_like(ids, dtype=torch.bool)
    real = ids[0][mask[0]].tolist()
    return Sequences(ids, mask, source, [tokenizer.decode([t], False) for t in real])


def validation_sequences(
    cfg: AnalyzeConfig, run: Pretrained, label: str, tokenizer: RobertaTokenizer, limit: int
) -> tuple[Tensor, str]:
    data = run.config.get("data")
    if not isinstance(data, dict):
        raise ConfigError(f"run {label} recorded no data config; give text_file=PATH")
    corpus = from_dict(CorpusConfig, data, "data")
    block = int(run.config.get("block_size") or run.model.max_len)
    n = cfg.max_len or min(block, limit)
    blocks = load_pretraining_blocks(corpus, tokenizer, max(n, block))  # cached by pretraining
    chosen = probe_batch(blocks.validation, cfg.num_sequences, n)
    if n < block:  # cut blocks end with </s>, as the blocks the model was trained on
        chosen[:, -1] = tokenizer.eos_id
    split = {
        "embedded": f"embedded corpus, addresses from {corpus.validation_years_from} on",
        "local": f"local, {corpus.validation_file or 'held-out documents'}",
    }.get(corpus.source, corpus.source)
    source = f"{label}'s validation blocks ({split})"
    return chosen, source


def text_sequences(
    path: Path, tokenizer: RobertaTokenizer, n: int, count: int
) -> tuple[Tensor, Tensor]:
    """``<s> piece </s>`` sequences of ``n`` tokens from a text file; the last one padded."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"cannot read text_file {path}: {err}") from None
    ids = tokenizer.encode(text)
    if not ids:
        raise DataError(f"text_file {path} holds no text")
    body = n - 2
    pieces = [ids[i : i + body] for i in range(0, len(ids), body)][:count]
    width = len(pieces[0]) + 2  # a text shorter than one piece gives one shorter sequence
    input_ids = torch.full((len(pieces), width), tokenizer.pad_id, dtype=torch.long)
    mask = torch.zeros(len(pieces), width, dtype=torch.bool)
    for i, piece in enumerate(pieces):
        row = [tokenizer.bos_id, *piece, tokenizer.eos_id]
        input_ids[i, : len(row)] = torch.tensor(row)
        mask[i, : len(row)] = True
    return input_ids, mask
