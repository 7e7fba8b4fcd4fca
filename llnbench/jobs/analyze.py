"""``llnbench analyze``: attention-concentration instruments (measurements.md §3.3).

Two modes, one config:

- ``mode=synthetic`` (default, no checkpoint needed): Gaussian q, k at a sweep of logit variances σ²
  through each chosen mechanism (``llnbench.analysis.synthetic``).
- ``mode=checkpoint checkpoint=RUN_DIR`` (or a list of run dirs, e.g. a softmax and an LLN run on
  the same data): the instruments of every layer and head of pretrained models on held-out text,
  q and k captured by hooks in eval mode (``llnbench.analysis.checkpoint_mode``).

This module is the dispatch; the config and its validation live in ``llnbench.analysis.config``,
the work in the rest of ``llnbench/analysis/``.
"""

from __future__ import annotations

from pathlib import Path

from llnbench.analysis.config import AnalyzeConfig
from llnbench.devices import resolve_device
from llnbench.testing.outside import broken_outside_attentions

__all__ = ["AnalyzeConfig", "run"]


def run(cfg: AnalyzeConfig) -> Path:
    if cfg.mode == "checkpoint":
        from llnbench.analysis.checkpoint_mode import run_checkpoint

        return run_checkpoint(cfg)
    from llnbench.analysis.synthetic import run_synthetic

    # a mechanism from outside llnbench passes the interface check before any file exists
    broken_outside_attentions(
        cfg.attentions, cfg.options, skip_broken=False, causal=False, num_heads=cfg.heads,
        head_dim=cfg.head_dim, device=resolve_device(cfg.device),
    )  # fmt: skip
    return run_synthetic(cfg)
