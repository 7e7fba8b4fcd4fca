"""GLUE numbers as GLUE reports them: per-task mean ± std over seeds, the GLUE average (one number
per task: MNLI-m, the combined score for MRPC/QQP/STS-B) and the rich tables printed at the end.

Scores are fractions in results.json and ×100 in the tables, as on the GLUE leaderboard.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from rich.table import Table

from llnbench.data.glue import TaskSpec
from llnbench.train.finetune import EncodedTask, FinetuneTrainerConfig


def mean_std(values: list[float | None]) -> tuple[float | None, float | None]:
    """Mean and sample std (ddof 1; 0 for one seed); None when any value is missing (NaN)."""
    if not values or any(v is None or not math.isfinite(v) for v in values):
        return None, None
    array = np.asarray(values, dtype=np.float64)
    std = float(array.std(ddof=1)) if len(array) > 1 else 0.0
    return float(array.mean()), std


def summarize_task(
    spec: TaskSpec,
    data: EncodedTask,
    trainer: FinetuneTrainerConfig,
    per_seed: dict[int, dict[str, Any]],
) -> dict[str, Any]:
    """One task's entry in results.json. ``score`` is the task's number for the GLUE average:
    the mean over seeds of its primary metric (each seed at its best epoch)."""
    keys = list(next(iter(per_seed.values()))["metrics"])
    stats = {k: mean_std([r["metrics"].get(k) for r in per_seed.values()]) for k in keys}
    primary = spec.primary_metric
    ranked = [s for s in per_seed if per_seed[s]["metrics"].get(primary) is not None]
    best_seed = max(ranked, key=lambda s: per_seed[s]["metrics"][primary]) if ranked else None
    return {
        "description": spec.description,
        "metrics": [*spec.metrics, *(["combined_score"] if len(spec.metrics) > 1 else [])],
        "primary_metric": primary,
        "recipe": {"lr": trainer.lr, "batch_size": trainer.batch_size, "epochs": trainer.epochs},
        "train_examples": len(data.train),
        "validation_examples": {name: len(split) for name, split in data.validation.items()},
        "majority_accuracy": data.majority_accuracy(),
        "seeds": {
            str(seed): {k: v for k, v in r.items() if k not in ("task", "seed", "signature")}
            for seed, r in per_seed.items()
        },
        "mean": {k: m for k, (m, _) in stats.items()},
        "std": {k: s for k, (_, s) in stats.items()},
        "score": stats[primary][0],
        "score_std": stats[primary][1],
        "best_seed": best_seed,
    }


def glue_average(summaries: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The mean of the tasks' scores (None while any task has none)."""
    scores = {name: s["score"] for name, s in summaries.items()}
    values = list(scores.values())
    ok = all(v is not None for v in values)
    return {
        "score": float(np.mean(values)) if ok and values else None,
        "tasks": scores,
        "metric": {name: s["primary_metric"] for name, s in summaries.items()},
    }


def pct(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.2f}"


def pm(mean: float | None, std: float | None) -> str:
    return "—" if mean is None else f"{100 * mean:.2f} ± {100 * (std or 0.0):.2f}"


def shown_metrics(summary: dict[str, Any]) -> list[str]:
    """GLUE metrics in table order (MNLI: matched, then mismatched); losses are left out."""
    keys = list(summary["mean"])
    ordered = [k for k in summary["metrics"] if k in keys]
    return ordered + [k for k in keys if k not in ordered and not k.startswith("loss")]


def task_table(spec: TaskSpec, summary: dict[str, Any]) -> Table:
    """Metric per seed (its best epoch), then mean ± std."""
    metrics = shown_metrics(summary)
    title = f"glue {spec.name}" + (
        " (SST-2 stand-in, not SST-2)" if spec.hub_config is None else ""
    )
    if summary["majority_accuracy"] is not None:
        title += f" — majority class {pct(summary['majority_accuracy'])}"
    table = Table(title=title)
    table.add_column("seed", justify="right")
    for key in metrics:
        table.add_column(key + (" ★" if key == spec.primary_metric else ""), justify="right")
    for column in ("best epoch", "epochs", "s / epoch"):
        table.add_column(column, justify="right")
    for seed, r in summary["seeds"].items():
        per_epoch = r["seconds_per_epoch"]
        table.add_row(
            seed, *(pct(r["metrics"].get(k)) for k in metrics), f"{r['best_epoch']:g}",
            f"{r['epochs']:g}", "—" if per_epoch is None else f"{per_epoch:.1f}",
        )  # fmt: skip
    table.add_row(
        "mean ± std", *(pm(summary["mean"][k], summary["std"][k]) for k in metrics), "", "", "",
        style="bold",
    )  # fmt: skip
    return table


def suite_table(name: str, summaries: dict[str, dict[str, Any]], average: dict[str, Any]) -> Table:
    """One row per task (its GLUE number, mean ± std over seeds), then the GLUE average."""
    table = Table(title=f"glue task={name}")
    for column in ("task", "metric", "score", "seeds"):
        table.add_column(column, justify="left" if column in ("task", "metric") else "right")
    for task, s in summaries.items():
        table.add_row(task, s["primary_metric"], pm(s["score"], s["score_std"]),
                      str(len(s["seeds"])))  # fmt: skip
    table.add_row("GLUE average", f"{len(summaries)} tasks", pct(average["score"]), "",
                  style="bold")  # fmt: skip
    return table
