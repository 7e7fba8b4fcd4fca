"""``TrainerConfig``: the ``trainer.*`` keys every training job shares, and the precision."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch

from llnbench.compiling import CompileBackend, compile_backend
from llnbench.errors import ConfigError

Precision = Literal["auto", "fp32", "bf16", "fp16"]


@dataclass
class TrainerConfig:
    max_steps: int = 1000
    epochs: float | None = None  # fine-tuning: the step budget is epochs x batches per epoch
    batch_size: int = 32  # per device
    grad_accum: int = 1
    lr: float = 1e-3
    weight_decay: float = 0.01
    betas: list[float] = field(default_factory=lambda: [0.9, 0.98])
    adam_eps: float = 1e-6
    warmup_ratio: float = 0.06
    clip_norm: float = 1.0  # 0 disables clipping
    precision: Precision = "auto"  # auto: bf16 on CUDA that has it, else fp16 on CUDA; CPU fp32
    device: str = "auto"
    log_every: int = 25
    eval_every: int = 250  # steps; fine-tuning evaluates once per epoch instead
    eval_batch_size: int | None = None
    checkpoint_every: int = 250
    resume: bool | Literal["auto"] = "auto"  # auto: continue when run_dir holds a checkpoint
    compile: bool | CompileBackend = False  # torch.compile the model (true = inductor)

    def validate(self) -> None:
        for name in ("max_steps", "batch_size", "grad_accum", "log_every", "eval_every",
                     "checkpoint_every"):  # fmt: skip
            if getattr(self, name) < 1:
                raise ConfigError(f"trainer.{name} must be positive, got {getattr(self, name)}")
        for name in ("lr", "adam_eps", "epochs", "eval_batch_size"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ConfigError(f"trainer.{name} must be positive, got {value}")
        for name in ("weight_decay", "clip_norm"):  # clip_norm 0 = off
            if getattr(self, name) < 0:
                raise ConfigError(f"trainer.{name} must be >= 0, got {getattr(self, name)}")
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise ConfigError(f"trainer.warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            raise ConfigError(f"trainer.betas must be two numbers in [0, 1), got {self.betas}")
        compile_backend(self.compile)


def resolve_precision(name: str, device: torch.device) -> torch.dtype:
    if name == "auto":
        if device.type != "cuda":
            return torch.float32
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[name]
