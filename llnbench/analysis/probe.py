"""Concentration instruments during pretraining (measurements.md §4): ``analysis_every`` steps.

Every ``every`` steps (and at step 0 and the final step) the probe runs the model in eval mode on a
fixed small validation batch, captures q, k per layer (``capture.capture_qk``) and logs per layer,
mean over heads: entropy, spectral gap, log-entry variance, entry variance, σ_q, σ_k, τ, and LLN's
α, β, σ̃ (for lln_diag the mixture and, as ``lln_branch_*``, its LLN branch alone). Keys:
``analysis/layer{i}/{name}``, ``analysis/mean/{name}`` (mean over layers) and ``analysis/seq_len``
(ln N bounds the entropy), into metrics.jsonl and W&B at the step whose weights were measured.

The probe does not perturb training: no gradients, RNG streams forked, ``last_stats`` and the
training mode restored; with ``analysis_every=0`` nothing is built and nothing runs.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from llnbench.analysis.capture import layer_instruments
from llnbench.tracking import read_jsonl

PREFIX = "analysis/"
# what a probe logs per layer; the LLN temperatures appear only for LLN-style mechanisms
PROBE_INSTRUMENTS = (
    "entropy", "gap", "log_var", "entry_var", "sigma_q", "sigma_k", "tau",
    "alpha", "beta", "sigma_tilde",
)  # fmt: skip
PROBE_SEQUENCES = 2
PROBE_MAX_LEN = 512


def probe_batch(
    blocks: Tensor, sequences: int = PROBE_SEQUENCES, max_len: int = PROBE_MAX_LEN
) -> Tensor:
    """A fixed batch of validation blocks: ``sequences`` evenly spaced ones, ≤ ``max_len`` tokens."""
    if len(blocks) == 0:
        raise ValueError("no validation blocks to probe")
    count = min(sequences, len(blocks))
    index = torch.linspace(0, len(blocks) - 1, count).round().long()
    return blocks[index, :max_len].clone()


class TrainingProbe:
    """Log ``layer_instruments`` of a fixed batch at steps 0, every, 2·every, … and the last one."""

    def __init__(
        self, every: int, input_ids: Tensor, metrics_path: Path, *, max_steps: int, gap=True
    ):
        self.every, self.max_steps, self.gap = every, max_steps, gap
        self.input_ids = input_ids
        self.metrics_path = Path(metrics_path)
        self._done: set[int] | None = None  # steps already in metrics.jsonl (read lazily)
        self.seconds: list[float] = []  # cost per call

    @classmethod
    def for_pretraining(
        cls, every: int, validation: Tensor, device: torch.device, run_dir: Path, max_steps: int
    ) -> TrainingProbe:
        batch = probe_batch(validation).to(device)
        return cls(every, batch, Path(run_dir) / "metrics.jsonl", max_steps=max_steps)

    def due(self, step: int) -> bool:
        return step % self.every == 0 or step == self.max_steps

    def __call__(self, model: nn.Module, step: int, tracker: Any) -> dict[str, float] | None:
        """Measure and log when ``step`` is due and not logged yet (a resumed run keeps its rows)."""
        if not self.due(step) or step in self.done:
            return None
        start = time.perf_counter()
        values = layer_instruments(model, self.input_ids, gap=self.gap, keys=PROBE_INSTRUMENTS)
        row = {f"{PREFIX}{k}": v for k, v in values.items()}
        row[f"{PREFIX}seq_len"] = int(self.input_ids.shape[1])
        self.seconds.append(time.perf_counter() - start)
        row[f"{PREFIX}seconds"] = round(self.seconds[-1], 4)
        tracker.log(row, step=step)
        self.done.add(step)
        return row

    @property
    def done(self) -> set[int]:
        if self._done is None:
            self._done = logged_steps(self.metrics_path)
        return self._done


def logged_steps(metrics_path: Path) -> set[int]:
    """Steps of the probe rows already in a run's metrics.jsonl."""
    return {int(row.get("step", -1)) for row in _probe_rows(metrics_path)}


def history(metrics_path: Path) -> list[dict[str, Any]]:
    """The probe rows of a run (``analysis/`` prefix dropped), in step order."""
    rows = [
        {"step": row.get("step")}
        | {k.removeprefix(PREFIX): v for k, v in row.items() if k.startswith(PREFIX)}
        for row in _probe_rows(metrics_path)
    ]
    return sorted(rows, key=lambda r: r["step"])


def _probe_rows(metrics_path: Path) -> list[dict[str, Any]]:
    """The rows with instruments; unreadable lines (a torn last line) are skipped."""
    rows, _ = read_jsonl(metrics_path)
    return [
        row
        for row in rows
        if isinstance(row.get("step"), int) and any(k.startswith(PREFIX) for k in row)
    ]
