"""Fine-tuning one GLUE task with one seed, on the shared training loop.

``llnbench glue`` calls :func:`run_seed` once per (task, seed). It builds the classifier (encoder
from a pretraining run, or fresh for a smoke run), plugs batches, loss and a per-epoch validation
into :class:`~llnbench.train.loop.Trainer`, then scores the best checkpoint (by the task's primary
metric) once more to write the validation predictions and the GLUE submission files. Each seed has
its own folder, so it resumes on its own and a finished seed is never trained again.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from llnbench import files
from llnbench.config import Seed, convert
from llnbench.data.batching import EncodedSplit, pad_batch
from llnbench.data.glue import (
    TaskSpec,
    compute_metrics,
    encode_task,
    to_predictions,
    write_submission,
)
from llnbench.errors import CheckpointError, ConfigError
from llnbench.tracking import Tracker, json_safe, to_number, truncate_metrics
from llnbench.train import checkpoint
from llnbench.train.config import TrainerConfig
from llnbench.train.distributed import DistInfo, barrier
from llnbench.train.loop import Task, Trainer
from llnbench.train.sampler import EpochSampler

RESULT = "result.json"  # a finished seed: its numbers; its presence means "do not train again"
BEST = "best.pt"
SUBSET_SEED = 0  # max_train/eval_samples: the same subset for every seed and every mechanism
SPLIT_SUFFIX = {"validation_mismatched": "_mm"}  # MNLI: accuracy (matched), accuracy_mm


@dataclass
class FinetuneTrainerConfig(TrainerConfig):
    """``trainer`` for fine-tuning: the budget is epochs (fairseq's recipe); null lr, batch size
    and epochs come from the task's recipe; ``seeds`` repeats the whole fine-tuning."""

    max_steps: int | None = None  # a number replaces the epoch budget (quick runs)
    epochs: float | None = None
    batch_size: int | None = None
    lr: float | None = None
    weight_decay: float = 0.1
    eval_every: int | None = None  # null: once per epoch
    checkpoint_every: int | None = None  # null: at every evaluation
    seeds: list[Seed] | None = None  # null: [seed]

    def validate(self) -> None:
        placeholders = {
            name: 1 if getattr(self, name) is None else getattr(self, name)
            for name in ("max_steps", "batch_size", "lr", "eval_every", "checkpoint_every")
        }
        self.to_loop(**placeholders)
        if self.epochs is not None and self.epochs <= 0:
            raise ConfigError(f"trainer.epochs must be positive, got {self.epochs}")
        if self.seeds is not None and (not self.seeds or len(set(self.seeds)) != len(self.seeds)):
            raise ConfigError(
                f"trainer.seeds must be a non-empty list of distinct integers, got {self.seeds}"
            )

    def to_loop(self, **values: Any) -> TrainerConfig:
        """The loop's own config: these values with ``values`` filled in, validated."""
        base = {f.name: getattr(self, f.name) for f in fields(TrainerConfig)}
        cfg = TrainerConfig(**{**base, **values})
        cfg.validate()
        return cfg

    def with_recipe(self, task: str, recipe: dict[str, Any]) -> FinetuneTrainerConfig:
        """Trainer values where set, else the task's recipe (lr, batch_size, epochs)."""
        values = {}
        for key, kind in (("lr", float), ("batch_size", int), ("epochs", float)):
            value = getattr(self, key)
            if value is None and recipe.get(key) is not None:
                value = convert(kind, recipe[key], f"task recipe of {task}: {key}")
            if value is None:
                raise ConfigError(
                    f"trainer.{key} is null and task {task} has no recipe value for it; set "
                    f"trainer.{key}=… or task.{key}=…"
                )
            values[key] = value
        cfg = replace(self, **values)
        cfg.validate()
        return cfg

    def budget(self, steps_per_epoch: int) -> TrainerConfig:
        """The loop config for one seed: steps from epochs, evaluation and checkpoint cadence."""
        assert self.epochs is not None, "with_recipe() first"
        max_steps = self.max_steps or max(1, round(self.epochs * steps_per_epoch))
        eval_every = self.eval_every or steps_per_epoch
        return self.to_loop(
            max_steps=max_steps,
            eval_every=eval_every,
            checkpoint_every=self.checkpoint_every or eval_every,
            resume="auto",  # the job checked trainer.resume against the whole run directory
        )


# ------------------------------------------------------------------------------------------------
# Data


@dataclass
class EncodedTask:
    """A task's splits, tokenised: train, the validation split(s) and the test split(s)."""

    spec: TaskSpec
    train: EncodedSplit
    validation: dict[str, EncodedSplit]
    test: dict[str, EncodedSplit]

    def majority_accuracy(self) -> float | None:
        """Accuracy of always answering the first validation split's most frequent class: the
        score a model that ignores its input can reach (classification only)."""
        if self.spec.is_regression:
            return None
        labels = next(iter(self.validation.values())).labels
        return float(np.bincount(labels).max() / len(labels)) if labels else None


def subset(split, n: int | None):
    """At most ``n`` rows: a fixed seeded random subset (not the first n: GLUE files and the
    stand-in can be sorted by label)."""
    if n is None or len(split) <= n:
        return split
    rows = np.random.default_rng(SUBSET_SEED).choice(len(split), size=n, replace=False)
    return split.select(np.sort(rows).tolist())


def encode_splits(
    spec: TaskSpec,
    splits: dict,
    tokenizer,
    max_length: int,
    max_train: int | None = None,
    max_eval: int | None = None,
) -> EncodedTask:
    def encode(name: str, n: int | None = None) -> EncodedSplit:
        return encode_task(subset(splits[name], n), spec, tokenizer, max_length)

    return EncodedTask(
        spec,
        train=encode("train", max_train),
        validation={s: encode(s, max_eval) for s in spec.validation_splits if s in splits},
        test={s: encode(s) for s in spec.test_splits if s in splits},
    )


# ------------------------------------------------------------------------------------------------
# Model, prediction, scores


@torch.no_grad()
def predict(
    model: torch.nn.Module, split: EncodedSplit, batch_size: int, pad_id: int, device
) -> torch.Tensor:
    """Logits (N, num_labels) in the split's order; batches sorted by length (less padding)."""
    order = sorted(range(len(split)), key=lambda i: len(split.input_ids[i]))
    out: torch.Tensor | None = None
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        batch = pad_batch([split[i] for i in rows], pad_id)
        _, logits = model(
            batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device)
        )
        if out is None:
            out = torch.empty(len(split), logits.shape[-1])
        out[rows] = logits.float().cpu()
    return out if out is not None else torch.empty(0, 1)


def validation_loss(spec: TaskSpec, logits: torch.Tensor, labels: list) -> float:
    if spec.is_regression:
        return float(F.mse_loss(logits.squeeze(-1), torch.tensor(labels, dtype=torch.float32)))
    return float(F.cross_entropy(logits, torch.tensor(labels, dtype=torch.long)))


def score(
    spec: TaskSpec, logits: dict[str, torch.Tensor], splits: dict[str, EncodedSplit]
) -> dict[str, float]:
    """The task's GLUE metrics and the loss on each validation split; the first split's keys are
    plain (``accuracy``), later ones carry a suffix (MNLI mismatched: ``accuracy_mm``)."""
    out: dict[str, float] = {}
    for i, (name, split_logits) in enumerate(logits.items()):
        labels = splits[name].labels
        metrics = compute_metrics(spec, split_logits, labels)
        metrics["loss"] = validation_loss(spec, split_logits, labels)
        suffix = "" if i == 0 else SPLIT_SUFFIX.get(name, f"_{name}")
        out.update({f"{key}{suffix}": value for key, value in metrics.items()})
    return out


def write_predictions(spec: TaskSpec, logits: torch.Tensor, split: EncodedSplit, path: Path):
    """``index, label, prediction`` per example (class ids, or scores for regression), so the
    reported metrics can be recomputed from the file."""
    preds = to_predictions(spec, logits)
    fmt = (lambda v: repr(float(v))) if spec.is_regression else (lambda v: str(int(v)))
    lines = ["index\tlabel\tprediction"]
    lines += [f"{i}\t{fmt(y)}\t{fmt(p)}" for i, y, p in zip(split.indices, split.labels, preds)]
    return files.write_text(path, "\n".join(lines) + "\n")


# ------------------------------------------------------------------------------------------------
# Logging


def epoch_of(step: int, steps_per_epoch: int) -> float:
    return round(step / steps_per_epoch, 3)


class SeedTracker:
    """The run's tracker with ``task``, ``seed`` and ``epoch`` stamped on every row the loop logs:
    one metrics.jsonl for all tasks and seeds. ``step`` (the loop's, restarting with each seed)
    is a column; W&B keeps its own increasing step, which a restart would otherwise break."""

    def __init__(self, tracker: Tracker, task: str, seed: int, steps_per_epoch: int):
        self.tracker, self.task, self.seed = tracker, task, seed
        self.steps_per_epoch = steps_per_epoch

    def log(self, metrics: dict[str, Any], *, step: int | None = None) -> None:
        step = step or 0
        epoch = epoch_of(step, self.steps_per_epoch)
        self.tracker.log(
            {"step": step, "task": self.task, "seed": self.seed, "epoch": epoch, **metrics}
        )


# ------------------------------------------------------------------------------------------------
# One seed


@dataclass
class FinetuneRun:
    """What every seed of one task shares."""

    data: EncodedTask
    # a fresh classifier, called once per seed after seeding: the job builds it (train/ builds none)
    new_model: Callable[[], torch.nn.Module]
    pad_id: int
    trainer: FinetuneTrainerConfig  # with the task's recipe filled in
    signature: dict[str, Any]  # refuses a checkpoint of another task, shape or initialisation
    config: dict[str, Any]  # the job's resolved config, stored in checkpoints
    device: torch.device
    dist: DistInfo
    submission: bool = True


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


RESULT_KEYS = ("metrics", "signature")
# what ran, kept apart per seed folder: a rerun may add seeds to a run directory
SEED_KEYS = ("seed", "trainer.seeds")


def read_result(folder: Path) -> dict[str, Any] | None:
    """A finished seed's result.json, or None; a damaged one is refused naming the way out."""
    path = folder / RESULT
    if not path.is_file():
        return None
    try:
        result = json.loads(path.read_text())
    except (ValueError, OSError) as err:  # JSONDecodeError, UnicodeDecodeError, unreadable
        result, reason = None, f"{type(err).__name__}: {str(err).splitlines()[0][:100]}"
    else:
        reason = f"no {', '.join(RESULT_KEYS)}"
    if not isinstance(result, dict) or any(key not in result for key in RESULT_KEYS):
        raise CheckpointError(
            f"{path} is damaged ({reason}); delete it to score that seed again from its "
            f"checkpoints (or delete {folder} to train it again), or choose another run_dir"
        )
    return result


def run_seed(run: FinetuneRun, seed: int, folder: Path, tracker: Tracker) -> dict[str, Any] | None:
    """Fine-tune (or continue) one seed in ``folder``; its result on rank 0, None elsewhere."""
    spec, data, dist = run.data.spec, run.data, run.dist
    seed_everything(seed)
    model = run.new_model()
    batch_size = run.trainer.batch_size or 1
    sampler = EpochSampler(len(data.train), batch_size, seed=seed, dist=dist)
    steps_per_epoch = max(1, sampler.batches_per_epoch // run.trainer.grad_accum)
    loop_cfg = run.trainer.budget(steps_per_epoch)
    eval_batch = loop_cfg.eval_batch_size or loop_cfg.batch_size

    def make_batch(indices: torch.Tensor) -> dict[str, torch.Tensor]:
        batch = pad_batch([data.train[i] for i in indices.tolist()], run.pad_id)
        return {k: batch[k].to(run.device) for k in ("input_ids", "attention_mask", "labels")}

    def loss(model: torch.nn.Module, b: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
        value, _ = model(b["input_ids"], b["labels"], b["attention_mask"])
        return value, int(b["attention_mask"].sum())

    def logits_of(model: torch.nn.Module, splits: dict[str, EncodedSplit]) -> dict:
        return {
            name: predict(model, split, eval_batch, run.pad_id, run.device)
            for name, split in splits.items()
        }

    def evaluate(model: torch.nn.Module) -> dict[str, float]:
        return score(spec, logits_of(model, data.validation), data.validation)

    task = Task(make_batch, loss, evaluate, select_metric=spec.primary_metric)
    trainer = Trainer(
        model, loop_cfg, task, sampler, device=run.device, dist=dist, run_dir=folder,
        signature=run.signature, config=run.config, label=f"{spec.name}-seed{seed}",
    )  # fmt: skip
    trainer.restore()
    if dist.is_main:
        where = {"task": spec.name, "seed": seed}
        truncate_metrics(tracker.metrics_path, trainer.step, where)
    first_step, start = trainer.step, time.perf_counter()
    trainer.fit(
        SeedTracker(tracker, spec.name, seed, steps_per_epoch),  # type: ignore[arg-type]
        eval_every=loop_cfg.eval_every,
        describe=f"{spec.name} seed {seed}",
    )
    seconds = time.perf_counter() - start
    result = None
    if dist.is_main:
        # the reported score is the best checkpoint's, scored again to write its predictions
        trainer.module.load_state_dict(checkpoint.load(folder / BEST)["model"])
        trainer.module.eval()
        with torch.no_grad(), trainer.autocast():
            val_logits = logits_of(trainer.module, data.validation)
            test_logits = logits_of(trainer.module, data.test) if run.submission else {}
        for name, logits in val_logits.items():
            write_predictions(
                spec, logits, data.validation[name], folder / f"predictions-{name}.tsv"
            )
        submission = [
            write_submission(spec, name, logits, data.test[name].indices, folder / "submission")
            for name, logits in test_logits.items()
        ]
        epochs_now = (trainer.step - first_step) / steps_per_epoch
        best_step = int(trainer.best["step"])
        result = {
            "task": spec.name,
            "seed": seed,
            "metrics": finite(score(spec, val_logits, data.validation)),
            "best_step": best_step,
            "best_epoch": epoch_of(best_step, steps_per_epoch),
            "steps": trainer.max_steps,
            "steps_per_epoch": steps_per_epoch,
            "epochs": epoch_of(trainer.max_steps, steps_per_epoch),
            "lr": loop_cfg.lr,
            "batch_size": loop_cfg.batch_size,
            "train_examples": len(data.train),
            "train_seconds_this_session": round(seconds, 2),
            "seconds_per_epoch": round(seconds / epochs_now, 2) if epochs_now > 0 else None,
            "history": [
                {"epoch": epoch_of(row["step"], steps_per_epoch), **finite(row)}
                for row in trainer.history
            ],
            "submission": [str(p.relative_to(folder)) for p in submission],
            "signature": run.signature,
        }
        files.write_json(folder / RESULT, json_safe(result))
    barrier(dist)
    return result


def finite(values: dict[str, Any]) -> dict[str, Any]:
    """NaN/inf (e.g. Pearson of constant predictions) as None: valid JSON."""
    return {k: to_number(v) for k, v in values.items()}
