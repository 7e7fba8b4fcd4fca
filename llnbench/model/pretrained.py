"""Load what a pretraining run left behind: its encoder weights and the config that shaped them.

(``llnbench.model.hf_checkpoint`` reads a transformers checkpoint into the same ``Pretrained``.)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from llnbench.config import from_dict
from llnbench.errors import CheckpointError, LlnbenchError
from llnbench.model.roberta import ModelConfig
from llnbench.schema import AttentionConfig
from llnbench.train import checkpoint


@dataclass
class Pretrained:
    path: Path
    model: ModelConfig
    attention: AttentionConfig
    tokenizer: str
    encoder_state: dict[str, torch.Tensor]
    step: int
    config: dict[str, Any]
    source: str = "llnbench"  # or the hf:PATH_OR_ID it was read from
    head_state: dict[str, torch.Tensor] | None = None  # the MLM head, where one was saved

    @property
    def is_hf(self) -> bool:
        return self.source != "llnbench"


def load_pretrained(path: str | Path) -> Pretrained:
    """A pretraining run directory (its checkpoint.pt) or a checkpoint file."""
    path = Path(path)
    file = path / checkpoint.CHECKPOINT if path.is_dir() else path
    state = checkpoint.load(file)
    config = state.get("config") or {}
    if "model" not in config or "attention" not in config:
        raise CheckpointError(
            f"{file} has no model/attention config (not a pretraining checkpoint)"
        )
    try:
        attention = AttentionConfig.from_config(config["attention"])
        model = from_dict(ModelConfig, config["model"], "model")
    except LlnbenchError as err:
        raise CheckpointError(f"checkpoint {file} cannot be used here: {err}") from None
    encoder = {
        key.removeprefix("encoder."): value
        for key, value in state["model"].items()
        if key.startswith("encoder.")
    }
    if not encoder:
        raise CheckpointError(f"{file} holds no encoder weights")
    head = {k: v for k, v in state["model"].items() if k.startswith("lm_")} or None
    tokenizer = (config.get("data") or {}).get("tokenizer", "embedded")
    return Pretrained(
        file, model, attention, tokenizer, encoder, int(state["step"]), config, head_state=head
    )
