"""``AnalyzeConfig``: what ``llnbench analyze`` measures, validated once at the edge.

It lives beside the instruments (not in ``llnbench.jobs``) so that ``llnbench.analysis`` needs
nothing from the layer above it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

from llnbench.attention import ATTENTIONS, attention_class, attention_options, check_options
from llnbench.attention.external import is_spec
from llnbench.config import Seed
from llnbench.errors import ConfigError, one_of
from llnbench.schema import WandbConfig

# ``exp`` is not a registered mechanism: it is lln without moment matching (α = β = d^-1/4), the
# untuned exponential feature map the LLN paper starts from; it cannot concentrate at any scale.
EXP_ALIAS = "exp"
EXP_LABEL = "exp (d^-1/4)"
DEFAULT_ATTENTIONS = ["softmax", "lln", "lln_diag", "linear_elu", EXP_ALIAS]
DEFAULT_S2 = [0.25, 0.5, 1.0, 2.0, 3.0, 4.0]
MAX_SEQ_LEN = 1024  # dense N × N float64 matrices and their eigenvalues


def registry_name(name: str) -> str:
    return "lln" if name == EXP_ALIAS else name


def known_options(name: str) -> list[str] | None:
    """A mechanism's options, or None when its module cannot be imported (reported at run time)."""
    try:
        return list(attention_options(name))
    except ImportError:
        return None


# checkpoint mode: dense N × N matrices of real text, at most 512 tokens (measurements.md §3)
MAX_CHECKPOINT_LEN = 512


@dataclass
class AnalyzeConfig:
    mode: Literal["synthetic", "checkpoint"] = "synthetic"
    attentions: list[str] = field(default_factory=lambda: list(DEFAULT_ATTENTIONS))
    options: dict[str, dict[str, Any]] = field(default_factory=dict)  # per-mechanism options
    s2: list[float] = field(default_factory=lambda: list(DEFAULT_S2))  # logit variance σ²
    seq_len: int = 512
    head_dim: int = 64
    heads: int = 1
    draws: int = 3
    device: str = "auto"
    seed: Seed = 0
    run_dir: str | None = None
    wandb: WandbConfig = field(default_factory=WandbConfig)
    # checkpoint mode
    checkpoint: str | list[str] | None = None  # pretraining run dir(s): "a,b" or [a, b]
    text_file: str | None = None  # held-out text; default: the (first) run's validation blocks
    num_sequences: int = 8
    max_len: int | None = None  # tokens per sequence; default min(512, block size, model.max_len)
    gap: bool = True  # spectral gap (eigenvalues: the one costly instrument)

    def validate(self) -> None:
        if not self.attentions:
            raise ConfigError("attentions is empty; give at least one mechanism")
        allowed = [*ATTENTIONS, EXP_ALIAS]
        for name in self.attentions:
            if is_spec(name):
                attention_class(name)  # module.path:ClassName: importable, or says why not
            elif name not in allowed:
                raise one_of("attention", name, allowed)
        if len(set(self.attentions)) != len(self.attentions):
            raise ConfigError(f"attentions lists a mechanism twice: {self.attentions}")
        for name, opts in self.options.items():
            if not is_spec(name) and name not in allowed:
                raise one_of("attention in options", name, allowed)
            if known_options(registry_name(name)) is not None:  # importable: check names, types
                check_options(registry_name(name), opts, prefix=f"options.{name}")
        if not self.s2 or any(not (math.isfinite(s) and s > 0) for s in self.s2):
            raise ConfigError(f"s2 must be a non-empty list of positive numbers, got {self.s2}")
        if not 2 <= self.seq_len <= MAX_SEQ_LEN:
            raise ConfigError(
                f"seq_len must be in 2..{MAX_SEQ_LEN} (dense N x N matrices), got {self.seq_len}"
            )
        for name in ("head_dim", "heads", "draws", "num_sequences"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)}")
        self._validate_checkpoint_mode()

    def _validate_checkpoint_mode(self) -> None:
        if self.max_len is not None and not 2 <= self.max_len <= MAX_CHECKPOINT_LEN:
            raise ConfigError(
                f"max_len must be in 2..{MAX_CHECKPOINT_LEN} (dense N x N matrices of real "
                f"text), got {self.max_len}"
            )
        if self.mode == "checkpoint" and not self.checkpoints:
            raise ConfigError(
                "analyze mode=checkpoint needs checkpoint=RUN_DIR (a pretraining run directory, "
                "or a list: checkpoint=[RUN_A,RUN_B])"
            )
        if self.mode == "synthetic" and (self.checkpoints or self.text_file):
            given = "checkpoint" if self.checkpoints else "text_file"
            raise ConfigError(
                f"{given} is only read in checkpoint mode; add mode=checkpoint (synthetic mode "
                "draws Gaussian q, k)"
            )

    @property
    def checkpoints(self) -> list[str]:
        """``checkpoint`` as a list of run directories (a comma list or a YAML list)."""
        if self.checkpoint is None:
            return []
        items = self.checkpoint if isinstance(self.checkpoint, list) else [self.checkpoint]
        return [part.strip() for item in items for part in str(item).split(",") if part.strip()]
