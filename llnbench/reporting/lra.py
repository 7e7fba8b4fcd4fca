"""The LRA section of ``llnbench report``: accuracy, training speed and working memory per
mechanism, and LRA's chart (Tay et al. 2020, Fig. 3): accuracy against training steps per second,
marker area proportional to memory, one point per mechanism.

Runs are grouped by (task, sequence length, data): Pathfinder's difficulty and Text's source (IMDb
or the offline stand-in) are part of the group, and each row names its data. Within a group the
latest run of a mechanism is its point (older ones are named). Nothing is re-run; a missing number
is shown as "—".
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from llnbench import files
from llnbench.reporting import published
from llnbench.reporting.discover import Run
from llnbench.reporting.sections import Section, fmt, table

Group = tuple[str, int, str]  # task, seq_len, data


def _key(run: Run) -> Group:
    r = run.results
    return str(r.get("task")), int(r.get("seq_len") or 0), data_label(r)


def data_label(results: dict[str, Any]) -> str:
    """Which data a run used, in words; runs from before the label say what they can."""
    if results.get("data_label"):
        return str(results["data_label"])
    if str(results.get("task", "")).startswith("pathfinder"):
        return "Pathfinder of the first generator (6 dashes, label shortcut; issue 20)"
    return "ListOps, LRA's generator" if results.get("task") == "listops" else "?"


def _group(runs: list[Run]) -> dict[Group, dict[str, Run]]:
    """(task, seq_len, data) -> mechanism -> its latest run (by results.json's mtime)."""
    groups: dict[Group, dict[str, Run]] = {}
    ordered = sorted(runs, key=lambda run: (run.path / "results.json").stat().st_mtime)
    for run in ordered:
        groups.setdefault(_key(run), {})[_mechanism(run)] = run
    return groups


def _mechanism(run: Run) -> str:
    return (run.results.get("attention") or {}).get("name", "?")


def _pm(mean: float | None, std: float | None) -> str | None:
    if mean is None:
        return None
    return f"{100 * mean:.1f}" + (f" ± {100 * std:.1f}" if std else "")


HEADER = ["attention", "data", "pooling", "test acc", "val acc", "seeds", "steps/s",
          "steps/s median", "memory MiB", "LARA paper LRA avg", "device", "run"]  # fmt: skip
CSV_KEYS = (
    "test_accuracy", "test_accuracy_std", "validation_accuracy", "validation_accuracy_std",
    "majority_accuracy", "steps_per_s", "steps_per_s_std", "steps_per_s_median", "memory_mib",
    "batch_size", "steps", "device", "precision", "threads",
)  # fmt: skip


def _row(name: str, run: Run) -> list[Any]:
    r = run.results
    return [
        name, data_label(r), r.get("pooling") or "cls",
        _pm(r.get("test_accuracy"), r.get("test_accuracy_std")),
        _pm(r.get("validation_accuracy"), r.get("validation_accuracy_std")),
        len(r.get("seed_list") or []), fmt(r.get("steps_per_s"), ".2f"),
        fmt(r.get("steps_per_s_median"), ".2f"), fmt(r.get("memory_mib"), ".1f"), published.LRA_AVERAGE_LARA.get(name),
        f"{r.get('device')} {r.get('precision')}", run.path.name,
    ]  # fmt: skip


def _csv_row(name: str, run: Run) -> dict[str, Any]:
    r = run.results
    return {
        "run": run.path.name, "task": r.get("task"), "seq_len": r.get("seq_len"),
        "data": data_label(r), "difficulty": r.get("difficulty"), "standin": r.get("standin"),
        "pooling": r.get("pooling") or "cls", "attention": name, **{k: r.get(k) for k in CSV_KEYS},
        "seeds": len(r.get("seed_list") or []),
        "published_lra_average": published.LRA_AVERAGE_LARA.get(name),
    }  # fmt: skip


def _setup(task: str, seq_len: int, data: str, first: dict[str, Any]) -> str:
    model, sizes = first.get("model") or {}, (first.get("data") or {}).get("sizes") or {}
    majority, machine = first.get("majority_accuracy"), first.get("machine") or {}
    where = machine.get("gpu") or machine.get("cpu") or first.get("device")
    recipe = first.get("recipe") or {}
    standin = "**A stand-in, NOT IMDb: not an LRA Text result.** " if first.get("standin") else ""
    return (
        f"### {task}, N = {seq_len} (incl. [CLS]), {data}\n\n{standin}Model {model.get('name')} "
        f"({model.get('layers')} layers × {model.get('hidden')}, {model.get('heads')} heads), "
        f"{first.get('pooling') or 'cls'} pooling, batch {first.get('batch_size')}, "
        f"{_recipe(recipe)}{first.get('steps')} steps, train "
        f"{sizes.get('train')} examples; majority class "
        f"{'—' if majority is None else f'{100 * majority:.1f}'} (validation); "
        f"{where}, torch {machine.get('torch')}, {first.get('threads')} threads, llnbench "
        f"{machine.get('llnbench_commit')}.\n"
    )


def _recipe(recipe: dict[str, Any]) -> str:
    """lr, betas, weight decay and clipping, as recorded (older runs record less)."""
    parts = []
    if recipe.get("lr") is not None:
        parts.append(f"lr {recipe['lr']:g}")
    if recipe.get("betas"):
        parts.append(f"betas {tuple(recipe['betas'])}")
    if recipe.get("weight_decay") is not None:
        parts.append(f"weight decay {recipe['weight_decay']:g}")
    if recipe.get("clip_norm") is not None:
        parts.append(f"clip {recipe['clip_norm']:g}" if recipe["clip_norm"] else "no clipping")
    return "".join(f"{p}, " for p in parts)


def lra_section(runs: list[Run], out_dir: Path) -> Section:
    if not runs:
        return "", [], ["no `llnbench lra` runs (long-context accuracy vs speed and memory)"]
    parts = [
        "## Long-context quality (LRA tasks, trained from scratch)\n",
        "Accuracy on the test split (the best-validation checkpoint, mean ± std over seeds) "
        "against training speed (steps/s: 1 / the mean train-step time of the fastest logging "
        "interval, which other jobs on a shared machine disturb least, and of the median one; "
        "evaluation excluded) and the "
        "working memory of one training step (peak allocator bytes above the step's start). "
        "The LARA paper's numbers are LRA averages over five tasks at LRA's sizes: compare the "
        "order of mechanisms, not the values.\n",
    ]
    csv_rows, missing = [], []
    for i, ((task, seq_len, data), by_name) in enumerate(sorted(_group(runs).items())):
        ranked = sorted(by_name.items(), key=lambda kv: -(kv[1].results.get("test_accuracy") or 0))
        first = ranked[0][1].results
        parts.append(_setup(task, seq_len, data, first))
        parts.append(table(HEADER, [_row(name, run) for name, run in ranked]) + "\n")
        csv_rows += [_csv_row(name, run) for name, run in ranked]
        chart = f"lra_{i}_{task}_{seq_len}.png"
        write_chart(f"{task} ({data})", seq_len, by_name, first.get("majority_accuracy"),
                    out_dir / chart)  # fmt: skip
        parts.append(f"![{chart}]({chart})\n")
        absent = [m for m in published.LRA_MECHANISMS if m not in by_name]
        if absent:
            missing.append(
                f"no `llnbench lra` runs of {', '.join(absent)} for {task} at N={seq_len}"
            )
        shown = set(map(id, by_name.values()))
        older = [run.path.name for run in runs if _key(run) == (task, seq_len, data)
                 and id(run) not in shown]  # fmt: skip
        if older:
            parts.append(f"Older runs of the same mechanisms, not shown: {', '.join(older)}.\n")
    return "\n".join(parts), csv_rows, missing


def write_chart(
    task: str, seq_len: int, by_name: dict[str, Run], majority: float | None, path: Path
) -> Path:
    """Accuracy (y) against steps/s (x), marker area ∝ working memory, one point per mechanism."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = []
    for name, run in by_name.items():
        r = run.results
        if r.get("test_accuracy") is not None and r.get("steps_per_s"):
            points.append((name, r["steps_per_s"], 100 * r["test_accuracy"], r.get("memory_mib")))
    memories = [m for *_, m in points if m]
    largest = max(memories) if memories else None
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    # names in a legend (markers of equal size there): labels beside markers collide when two
    # mechanisms train at the same speed
    for i, (name, speed, accuracy, memory) in enumerate(sorted(points, key=lambda p: p[1])):
        area = max(1500 * memory / largest if memory and largest else 60, 25)
        label = f"{name} ({memory:.0f} MiB)" if memory else f"{name} (memory n/m)"
        ax.scatter(speed, accuracy, s=area, color=plt.cm.tab10(i % 10), alpha=0.55,
                   edgecolors="black", linewidths=0.6, label=label)  # fmt: skip
    if majority is not None:
        ax.axhline(100 * majority, ls="--", lw=1, color="grey")
        ax.annotate("majority class", (ax.get_xlim()[0], 100 * majority), fontsize=7,
                    color="grey", va="bottom")  # fmt: skip
    xs = [p[1] for p in points] or [1.0]
    ax.set_xlim(min(xs) * 0.85, max(xs) * 1.15)
    ys = [p[2] for p in points] + ([100 * majority] if majority is not None else [])
    if ys:
        ax.set_ylim(min(ys) - 4, max(ys) + 4)
    ax.set_xlabel("training speed (steps/s)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(
        f"{task}, N={seq_len}: accuracy vs speed; marker area ∝ working memory per step",
        fontsize=10,
    )
    ax.grid(alpha=0.3)
    if points:
        legend = ax.legend(fontsize=8, loc="center right", title="marker area ∝ memory",
                           title_fontsize=8)  # fmt: skip
        for handle in legend.legend_handles:
            handle.set_sizes([50])
    fig.tight_layout()
    files.save_figure(fig, path, dpi=120)
    plt.close(fig)
    return path
