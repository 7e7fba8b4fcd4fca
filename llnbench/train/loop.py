"""One training loop for pretraining and fine-tuning.

AdamW with linear warm-up and decay, gradient clipping and accumulation, autocast (GradScaler for
fp16 only), periodic evaluation with best-checkpoint selection, atomic checkpoints that resume
exactly (model, optimiser, scheduler, scaler, RNG states, data position, the job's own stateful
objects such as the masking generator), DDP under torchrun, progress with rate and ETA (a rich
bar on a terminal, plain lines in logs), SIGTERM as a clean stop at a step boundary, and a NaN or
infinite loss as a stop that leaves the last good checkpoint as it was.

The job supplies what differs: how a batch is built from indices, the loss, and the evaluation.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from llnbench import stopping
from llnbench.compiling import maybe_compile, step_begin
from llnbench.console import console
from llnbench.errors import CheckpointError, LlnbenchError
from llnbench.progress import ProgressBar
from llnbench.runs import held_run_dirs
from llnbench.tracking import Tracker, truncate_metrics
from llnbench.train import checkpoint
from llnbench.train.config import TrainerConfig, resolve_precision
from llnbench.train.distributed import DistInfo, any_across, barrier, mean_across
from llnbench.train.optim import build_optimizer, linear_schedule
from llnbench.train.sampler import EpochSampler


class NonFiniteLoss(LlnbenchError):
    """The training loss became NaN or infinite; nothing of that step was saved."""


class Stateful(Protocol):
    def state_dict(self) -> dict[str, Any]: ...
    def load_state_dict(self, state: dict[str, Any]) -> None: ...


@dataclass
class Task:
    """What a job plugs into the loop."""

    make_batch: Callable[[torch.Tensor], dict[str, torch.Tensor]]  # indices -> batch on device
    loss: Callable[[nn.Module, dict[str, torch.Tensor]], tuple[torch.Tensor, int]]  # (loss, tokens)
    evaluate: Callable[[nn.Module], dict[str, float]]
    select_metric: str | None = None  # keep best.pt by this evaluation metric
    greater_is_better: bool = True
    extras: dict[str, Stateful] = field(default_factory=dict)  # checkpointed with the run
    # called with the weights after `step` updates: once before training, then after each step
    # (outside the timed region); e.g. concentration instruments every K steps
    on_step: Callable[[nn.Module, int], None] | None = None


def attention_stats(model: nn.Module) -> dict[str, float]:
    """Mean over layers of each attention core's ``last_stats`` (LLN: sigma_q, alpha, ...)."""
    totals: dict[str, list[float]] = {}
    for module in model.modules():
        stats = getattr(module, "last_stats", None)
        if isinstance(stats, dict) and hasattr(module, "supports_causal"):
            for key, value in stats.items():
                totals.setdefault(key, []).append(float(value))
    return {f"attn/{k}": sum(v) / len(v) for k, v in totals.items()}


class Trainer:
    def __init__(
        self,
        model: nn.Module,
        cfg: TrainerConfig,
        task: Task,
        sampler: EpochSampler,
        *,
        device: torch.device,
        dist: DistInfo,
        run_dir: Path,
        signature: dict[str, Any],
        config: dict[str, Any],
        max_steps: int | None = None,
        label: str = "train",
    ):
        self.cfg, self.task, self.sampler = cfg, task, sampler
        self.device, self.dist, self.run_dir = device, dist, run_dir
        self.tracker: Tracker | None = None  # set by fit()
        self.signature, self.config, self.label = signature, config, label
        self.max_steps = max_steps or cfg.max_steps
        self.dtype = resolve_precision(cfg.precision, device)
        self.model = model.to(device)
        self.module = model  # unwrapped: evaluation, checkpoints
        if dist.enabled:
            ids = [device.index] if device.type == "cuda" else None
            self.model = nn.parallel.DistributedDataParallel(model, device_ids=ids)
        self.model = maybe_compile(self.model, cfg.compile)  # training steps; eval uses module
        self.optimizer = build_optimizer(model, cfg)
        warmup = round(cfg.warmup_ratio * self.max_steps)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, linear_schedule(warmup, self.max_steps)
        )
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.dtype == torch.float16)
        self.step = 0
        self.best: dict[str, Any] = {}
        self.history: list[dict[str, Any]] = []  # evaluation rows
        self._interval = {"loss": 0.0, "steps": 0, "tokens": 0, "seconds": 0.0}
        self._describe = label
        # this session's training steps (compile time included in the first): tokens/s
        self.throughput = {"steps": 0, "tokens": 0, "seconds": 0.0, "first_step_s": 0.0}

    # -- checkpoints ----------------------------------------------------------------------------

    @property
    def checkpoint_path(self) -> Path:
        return self.run_dir / checkpoint.CHECKPOINT

    def state(self) -> dict[str, Any]:
        return {
            "model": self.module.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "step": self.step,
            "sampler": self.sampler.state_dict(),
            "rng": checkpoint.rng_state(),
            "extras": {k: v.state_dict() for k, v in self.task.extras.items()},
            "interval": dict(self._interval),
            "best": self.best,
            "history": self.history,
            "signature": self.signature,
            "config": self.config,
        }

    def save(self) -> None:
        if self.dist.is_main:
            checkpoint.save(self.checkpoint_path, self.state())
        barrier(self.dist)

    def restore(self) -> bool:
        """Continue from run_dir/checkpoint.pt when present (trainer.resume=auto|true).

        Call before writing anything into the run directory: a checkpoint that cannot be used
        stops the job while every file of the earlier run is still intact.
        """
        resume, exists = self.cfg.resume, self.checkpoint_path.exists()
        if resume is True and not exists:
            raise CheckpointError(f"trainer.resume=true but {self.checkpoint_path} is missing")
        if resume is False and exists:
            raise CheckpointError(
                f"{self.run_dir} already holds a checkpoint and trainer.resume=false; choose "
                "another run_dir (or trainer.resume=auto to continue it)"
            )
        if not exists:
            if self.dist.is_main:  # rows a run killed before its first checkpoint logged
                truncate_metrics(self.run_dir / "metrics.jsonl", -1)
            return False
        state = checkpoint.load(self.checkpoint_path)
        checkpoint.check_signature(self.checkpoint_path, state["signature"], self.signature)
        self.module.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.sampler.load_state_dict(state["sampler"])
        for key, obj in self.task.extras.items():
            obj.load_state_dict(state["extras"][key])
        checkpoint.set_rng_state(state["rng"])
        self.step = int(state["step"])
        self._interval = dict(state["interval"])
        self.best, self.history = dict(state["best"]), list(state["history"])
        if self.dist.is_main:
            truncate_metrics(self.run_dir / "metrics.jsonl", self.step)
            console.print(
                f"resuming {self.checkpoint_path} at step {self.step}/{self.max_steps}",
                markup=False,
            )
        return True

    # -- the loop -------------------------------------------------------------------------------

    def autocast(self) -> contextlib.AbstractContextManager:
        enabled = self.dtype != torch.float32
        return torch.autocast(self.device.type, dtype=self.dtype, enabled=enabled)

    def train_step(self) -> tuple[torch.Tensor, torch.Tensor | None, int]:
        step_begin(self.cfg.compile)
        self.model.train()
        total, tokens = torch.zeros((), device=self.device), 0
        for micro in range(self.cfg.grad_accum):
            batch = self.task.make_batch(self.sampler.next())
            last = micro == self.cfg.grad_accum - 1
            sync = (
                contextlib.nullcontext() if last or not self.dist.enabled else self.model.no_sync()
            )
            with sync:
                with self.autocast():
                    loss, count = self.task.loss(self.model, batch)
                self.scaler.scale(loss / self.cfg.grad_accum).backward()
            total += loss.detach()
            tokens += count
        grad_norm = None
        if self.cfg.clip_norm > 0:
            self.scaler.unscale_(self.optimizer)
            grad_norm = nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.clip_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        return total / self.cfg.grad_accum, grad_norm, tokens * self.dist.world

    def evaluate(self) -> dict[str, float]:
        self.module.eval()
        with torch.no_grad(), self.autocast():
            metrics = self.task.evaluate(self.module)
        row = {"step": self.step, **metrics}
        self.history.append(row)
        key = self.task.select_metric
        if key is not None and key in metrics:
            better = (lambda a, b: a > b) if self.task.greater_is_better else (lambda a, b: a < b)
            # a NaN best (e.g. Pearson of constant predictions) is replaced by any later score
            if not self.best or math.isnan(self.best[key]) or better(metrics[key], self.best[key]):
                self.best = dict(row)
                if self.dist.is_main:
                    checkpoint.save(self.run_dir / "best.pt", {**self.state(), "best": self.best})
        return metrics

    def fit(
        self, tracker: Tracker, eval_every: int | None = None, describe: str = ""
    ) -> dict[str, float]:
        """Train from the current step (see ``restore``) to ``max_steps``; final evaluation.

        SIGTERM (a scheduler's stop, ``kill``) finishes the current step, writes the checkpoint
        and raises :class:`~llnbench.stopping.Terminated` naming the step; a rerun with the same
        run directory continues from it exactly."""
        self.tracker = tracker
        self._describe = describe or self.label
        eval_every = eval_every or self.cfg.eval_every
        last_eval: dict[str, float] | None = None
        progress = ProgressBar(
            self._describe, self.max_steps, completed=self.step, unit="step",
            fields={"loss": "loss {:.3f}", "rate": "{:,.0f} tok/s"}, every=self.cfg.log_every,
            enabled=self.dist.is_main,
        )  # fmt: skip
        with stopping.deferred() as stop, progress:
            self._on_step()
            while self.step < self.max_steps:
                start = time.perf_counter()
                loss, grad_norm, tokens = self.train_step()
                self.step += 1
                value = float(mean_across(loss, self.dist))  # every rank sees a NaN of any
                if not math.isfinite(value):
                    raise NonFiniteLoss(self._non_finite_message(value))
                self._accumulate(value, tokens, time.perf_counter() - start)
                self._on_step()
                shown = {}  # the progress line of a logged step carries that step's numbers
                if self.step % self.cfg.log_every == 0 or self.step == self.max_steps:
                    row = self._log(grad_norm)
                    shown = {"loss": row["loss"], "rate": row["tokens_per_s"]}
                if self.step % eval_every == 0 or self.step == self.max_steps:
                    last_eval = self._evaluate_and_log()
                saved = self.step % self.cfg.checkpoint_every == 0 or self.step == self.max_steps
                if saved:
                    self.save()
                progress.update(completed=self.step, **shown)
                if any_across(stop.requested, self.dist, self.device):
                    if not saved:
                        self.save()
                    raise stopping.Terminated(self._stopped_message())
        if last_eval is None:  # resumed an already finished run: report its last evaluation
            last_eval = {k: v for k, v in self.history[-1].items() if k != "step"}
        return last_eval

    def _stopped_message(self) -> str:
        held = held_run_dirs()
        run_dir = held[-1] if held else self.run_dir  # the job's folder, not a seed's sub-folder
        return (
            f"stopped by SIGTERM after step {self.step}/{self.max_steps} of {self._describe}; "
            f"checkpoint {self.checkpoint_path} written; to resume, rerun the same command with "
            f"run_dir={run_dir}"
        )

    def _non_finite_message(self, value: float) -> str:
        attention = self.signature.get("attention")
        name = attention.get("name") if isinstance(attention, dict) else None
        kept = (
            f"the last good checkpoint {self.checkpoint_path} is intact"
            if self.checkpoint_path.exists()
            else "no checkpoint was written yet"
        )
        return (
            f"the training loss is {value} at step {self.step}/{self.max_steps} of "
            f"{self._describe}{f' (attention={name})' if name else ''}; stopped before saving "
            f"that step, {kept}; lower trainer.lr, use trainer.precision=fp32, or check the "
            "mechanism's forward for overflow"
        )

    def _on_step(self) -> None:
        if self.task.on_step is not None and self.dist.is_main:
            self.task.on_step(self.module, self.step)

    def _accumulate(self, loss: float, tokens: int, seconds: float) -> None:
        self._interval["loss"] += loss
        self._interval["steps"] += 1
        self._interval["tokens"] += tokens
        self._interval["seconds"] += seconds
        t = self.throughput
        t["first_step_s"] = t["first_step_s"] or seconds
        t["steps"] += 1
        t["tokens"] += tokens
        t["seconds"] += seconds

    def _log(self, grad_norm: torch.Tensor | None) -> dict[str, float]:
        i = self._interval
        row: dict[str, Any] = {
            "loss": i["loss"] / max(1, i["steps"]),
            "lr": self.scheduler.get_last_lr()[0],
            "grad_norm": None if grad_norm is None else float(grad_norm),
            "tokens_per_s": i["tokens"] / max(i["seconds"], 1e-9),
            "step_time_s": i["seconds"] / max(1, i["steps"]),
        }
        if self.device.type == "cuda":
            row["peak_mem_mib"] = torch.cuda.max_memory_allocated(self.device) / 2**20
            torch.cuda.reset_peak_memory_stats(self.device)
        row.update(attention_stats(self.module))
        if self.dist.is_main:
            self.tracker.log({f"train/{k}": v for k, v in row.items()}, step=self.step)
        self._interval = {"loss": 0.0, "steps": 0, "tokens": 0, "seconds": 0.0}
        return row

    def _evaluate_and_log(self) -> dict[str, float]:
        if self.dist.is_main:
            metrics = self.evaluate()
            self.tracker.log({f"val/{k}": v for k, v in metrics.items()}, step=self.step)
        barrier(self.dist)
        return metrics if self.dist.is_main else {}
