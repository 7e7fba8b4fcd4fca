"""One Markdown section per kind of run, each with the published numbers beside the measured ones.

Every section returns (markdown, csv rows, missing-piece notes). Nothing is re-run or filled in:
a number the runs do not contain is shown as "—" and named in the missing list.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from llnbench import files
from llnbench.bench.scale_report import baseline_index, memory_ratio, series, speedup
from llnbench.errors import DataError
from llnbench.reporting import published
from llnbench.reporting.discover import Run

Section = tuple[str, list[dict[str, Any]], list[str]]


def cell(value: Any) -> str:
    """A value as report text: ``—`` for none, ``k=v, ...`` for a mapping, ``a, b`` for a list
    (never a Python repr)."""
    if value is None:
        return "—"
    if isinstance(value, dict):
        return ", ".join(f"{k}={cell(v)}" for k, v in value.items()) or "—"
    if isinstance(value, (list, tuple)):
        return ", ".join(cell(v) for v in value) or "—"
    return str(value)


def table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def fmt(value: float | None, spec: str = ".3g") -> str | None:
    return None if value is None else format(value, spec)


def copy_figure(src: Path, out_dir: Path, name: str) -> str | None:
    """Copy a run's PNG next to report.md; the Markdown link to it, or None if absent."""
    if not src.exists():
        return None
    files.atomic_write(out_dir / name, lambda handle: handle.write(src.read_bytes()))
    return f"![{name}]({name})"


def machine_line(machine: dict[str, Any]) -> str:
    device = machine.get("gpu") or machine.get("cpu") or machine.get("device")
    return (
        f"{device}, {machine.get('dtype')}, torch {machine.get('torch')}"
        + (f", CUDA {machine['cuda']}" if machine.get("cuda") else "")
        + f", {machine.get('threads')} threads, SDPA backend {machine.get('sdpa_backend')}, "
        f"llnbench {machine.get('llnbench_commit')}"
    )


# ---------------------------------------------------------------------------------------------
# Scale: the paper's Table 2 shape


def scale_section(runs: list[Run], out_dir: Path) -> Section:
    if not runs:
        return "", [], ["no `llnbench scale` runs (time and memory vs length)"]
    parts, csv_rows = ["## Time and memory vs sequence length (Table 2 shape)\n"], []
    scopes: set[str] = set()
    skipped = []
    for i, run in enumerate(runs):
        try:
            text, rows, scope = _scale_run(run, i, out_dir)
        except DataError as err:  # a torn or damaged scale.json: name it, keep the others
            skipped.append(f"skipped {err}")
            continue
        except (KeyError, IndexError, TypeError) as err:
            skipped.append(f"skipped {run.path / 'scale.json'}: unexpected content ({err!r})")
            continue
        parts.append(text)
        csv_rows += rows
        scopes.add(scope)
    parts.append(_paper_table2())
    missing = skipped + ([] if "model" in scopes else [
        "no model-scope scale run (`llnbench scale --scope model`), the paper's Table 2 setting"
    ])  # fmt: skip
    return "\n".join(parts), csv_rows, missing


def _scale_run(run: Run, i: int, out_dir: Path) -> tuple[str, list[dict[str, Any]], str]:
    """One scale run's subsection, its CSV rows and its scope."""
    parts, csv_rows = [], []
    data = run.json("scale.json")
    rows, machine = data["rows"], data["machine"]
    scope = data["config"].get("scope", "layer")
    memory = any(r.get("peak_mib") is not None for r in rows)
    model = data["config"].get("model") or {}
    shape = (
        f"model {model.get('name')} ({model.get('layers')} layers × {model.get('hidden')}, "
        f"{rows[0]['heads']} heads), one training step (fwd+bwd+AdamW)"
        if scope == "model"
        else f"H={rows[0]['heads']}, d={rows[0]['head_dim']}"
    )
    parts.append(f"### {run.path.name}: {scope} scope\n\n{machine_line(machine)}; "
                 f"B={rows[0]['batch']}, {shape}"
                 f"{', causal' if rows[0]['causal'] else ''}"
                 f"{'' if memory else '; peak memory not measured on CPU'}.\n")  # fmt: skip
    base = baseline_index(rows)
    for mode in sorted({r["mode"] for r in rows}):
        names = list(dict.fromkeys(series(r) for r in rows if r["mode"] == mode))
        lengths = sorted({r["seq_len"] for r in rows if r["mode"] == mode})
        cells = {(series(r), r["seq_len"]): r for r in rows if r["mode"] == mode}
        body = []
        for n in lengths:
            line = [n]
            for name in names:
                r = cells.get((name, n))
                line.append(_scale_cell(r, base.get((n, mode))))
                if r is not None:
                    csv_rows.append({"run": run.path.name, **{k: v for k, v in r.items()
                                     if k != "options"}})  # fmt: skip
            body.append(line)
        parts.append(f"**{mode}** — ms (× softmax time), MiB (× softmax memory) where "
                     "measured:\n\n" + table(["N", *names], body) + "\n")  # fmt: skip
    figure = copy_figure(run.path / "scale.png", out_dir, f"scale_{i}.png")
    if figure:
        parts.append(figure + "\n")
    return "\n".join(parts), csv_rows, scope


def _scale_cell(row: dict[str, Any] | None, base: dict[str, Any] | None) -> str | None:
    if row is None:
        return None
    if row["status"] != "ok":
        return row["status"]
    text = f"{row['ms_median']:.4g} ms"
    if (s := speedup(row, base)) is not None and row["attention"] != "softmax":
        text += f" ({s:.2f}×)"
    if row.get("peak_mib") is not None:
        text += f", {row['peak_mib']:.0f} MiB"
        if (m := memory_ratio(row, base)) is not None and row["attention"] != "softmax":
            text += f" ({m:.2f}×)"
    return text


def _paper_table2() -> str:
    names = ["softmax", "nystrom", "lln", "lln_diag"]
    body = []
    for n, cells in published.TABLE2.items():
        line: list[Any] = [n]
        for name in names:
            if name not in cells:
                line.append(None)
            else:
                value = cells[name]
                line.append("OOM" if value is None else f"{value[0]} GB / {value[1]} s")
        body.append(line)
    lara = published.LARA_VS_SOFTMAX
    return (
        "**Published (LLN paper, Table 2):** RoBERTa-base, batch 1, one training iteration, on "
        "an unnamed GPU with > 32 GB; softmax was not a flash kernel. Compare shapes and ratios, "
        "not absolute values: at 4096 softmax used 4.3× LLN's memory and 2.1× its time; LLN's "
        "time grows ×1.9 per doubling of N.\n\n"
        + table(["N", *names], body)
        + "\n\n**Published (LARA paper, chart):** LARA / vanilla softmax at N = "
        + ", ".join(map(str, lara["seq_len"]))
        + f": memory {', '.join(map(str, lara['memory']))}; time "
        + f"{', '.join(map(str, lara['time']))} (against SDPA/flash the crossover moves later).\n"
    )


# ---------------------------------------------------------------------------------------------
# Pretraining


def pretrain_section(runs: list[Run], out_dir: Path) -> Section:
    if not runs:
        return "", [], ["no `llnbench pretrain` runs (MLM validation loss)"]
    rows, csv_rows, curves = [], [], {}
    for run in runs:
        r = run.results
        final = r.get("final") or {}
        name = (r.get("attention") or {}).get("name", "?")
        label = f"{name} ({run.path.name})"
        rows.append([label, r.get("model"), r.get("steps"), f"{r.get('tokens', 0):,}",
                     r.get("global_batch"), fmt(final.get("loss"), ".3f"),
                     fmt(final.get("ppl"), ".1f"), fmt(final.get("accuracy"), ".3f"),
                     fmt(final.get("unigram_loss"), ".3f"), r.get("device")])  # fmt: skip
        csv_rows.append({"run": run.path.name, "attention": name, "model": r.get("model"),
                         "steps": r.get("steps"), "tokens": r.get("tokens"),
                         **{f"val_{k}": v for k, v in final.items()}})  # fmt: skip
        points = [(m["step"], m["val/loss"]) for m in run.metrics() if "val/loss" in m]
        if points:
            curves[label] = (points, final.get("unigram_loss"))
    text = (
        "## Masked-language-model pretraining\n\n"
        "Validation loss against the unigram baseline: the loss of a model that ignores context "
        "(the training set's token frequencies). Below it, a model has learned from context.\n\n"
        + table(
            [
                "run",
                "model",
                "steps",
                "tokens",
                "global batch",
                "val loss",
                "ppl",
                "masked acc",
                "unigram",
                "device",
            ],
            rows,
        )
        + "\n"
    )
    if curves:
        _plot_curves(curves, out_dir / "mlm_curves.png")
        text += "\n![mlm_curves.png](mlm_curves.png)\n"
    return text, csv_rows, []


def _plot_curves(curves: dict[str, tuple[list, float | None]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for i, (label, (points, unigram)) in enumerate(curves.items()):
        colour = plt.cm.tab10(i % 10)
        ax.plot(*zip(*points), marker="o", ms=3, color=colour, label=label)
        if unigram is not None:
            ax.axhline(unigram, ls="--", lw=0.8, color=colour, alpha=0.6)
    ax.set_xlabel("step")
    ax.set_ylabel("validation MLM loss (nats)")
    ax.set_title("MLM validation loss; dashed: unigram baseline of each run", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    files.save_figure(fig, path, dpi=120)
    plt.close(fig)


# ---------------------------------------------------------------------------------------------
# GLUE


def glue_section(runs: list[Run], pretrain_runs: list[Run]) -> Section:
    if not runs:
        return "", [], ["no `llnbench glue` runs (GLUE scores)"]
    by_mechanism: dict[str, dict[str, tuple[float | None, float | None]]] = {}
    context: dict[str, list[str]] = {}
    for run in runs:
        name, tasks = _glue_row_label(run), run.results.get("tasks") or {}
        if set(tasks) & set(by_mechanism.get(name, {})):  # a second run of the same task: own row
            name = f"{name} [{run.path.name}]"
        for task, summary in tasks.items():
            by_mechanism.setdefault(name, {})[task] = (summary.get("score"),
                                                       summary.get("score_std"))  # fmt: skip
        context.setdefault(name, []).append(_glue_context(run))
    task_names = sorted({t for tasks in by_mechanism.values() for t in tasks})
    rows, csv_rows, missing = [], [], []
    for name, tasks in sorted(by_mechanism.items()):
        cells = [_pm(*tasks[t]) if t in tasks else None for t in task_names]
        paper = [tasks.get(t, (None, None))[0] for t in published.GLUE_TASKS]
        average = 100 * sum(paper) / len(paper) if all(p is not None for p in paper) else None
        rows.append([name, *cells, fmt(average, ".1f"), published.GLUE_AVERAGE.get(name)])
        for t in task_names:
            if t in tasks:
                csv_rows.append({"attention": name, "task": t, "score": tasks[t][0],
                                 "std": tasks[t][1]})  # fmt: skip
        if average is None and name in published.GLUE_AVERAGE:  # controls need no average
            absent = [t for t in published.GLUE_TASKS if t not in tasks]
            missing.append(f"GLUE average for {name}: no runs of {', '.join(absent)}")
    for name in published.CORE_MECHANISMS:
        if name not in by_mechanism:
            missing.append(f"no GLUE runs found for {name}")
    text = (
        "## GLUE (validation; mean ± std over seeds, ×100)\n\n"
        "The paper's average is over MNLI, QNLI, QQP and SST-2 with RoBERTa-base pretrained on "
        "WikiText-103; small models from a short pretraining score lower, so compare the order "
        "and gaps between mechanisms, not the absolute values. `sst2_rt` is an embedded SST-2 "
        "stand-in, not SST-2.\n\n"
        + table(["attention", *task_names, "avg (paper's 4)", "paper avg"], rows)
        + "\n\n"
        + "\n".join(f"- {name}: {c}" for name, lines in sorted(context.items()) for c in lines)
        + "\n"
    )
    return text, csv_rows, missing


def _glue_row_label(run: Run) -> str:
    """The attention, marked when fine-tuned from scratch (a control, not the mechanism's score)."""
    name = (run.results.get("attention") or {}).get("name", "?")
    pretrained = (run.results.get("init") or {}).get("pretrained")
    return name if pretrained else f"{name} (from scratch)"


def _glue_context(run: Run) -> str:
    """Model size and pretraining budget: small models from short pretraining score lower."""
    r, init = run.results, run.results.get("init") or {}
    model = r.get("model") or {}
    source = (
        f"pretrained to step {init['step']:,} ({init['pretrained']})"
        if init.get("pretrained")
        else "from scratch (no pretraining)"
    )
    return (
        f"{model.get('name')} ({model.get('layers')} layers × {model.get('hidden')}), {source}, "
        f"{r.get('device')} {r.get('precision')}, seeds {cell(r.get('seeds'))} [{run.path.name}]"
    )


def _pm(mean: float | None, std: float | None) -> str | None:
    if mean is None:
        return None
    return f"{100 * mean:.1f}" + (f" ± {100 * std:.1f}" if std else "")


# ---------------------------------------------------------------------------------------------
# Concentration


def analyze_section(runs: list[Run], out_dir: Path) -> Section:
    if not runs:
        return "", [], ["no `llnbench analyze` runs (concentration instruments)"]
    parts, csv_rows = ["## Attention concentration\n"], []
    for i, run in enumerate(runs):
        r = run.results
        if r.get("mode") == "synthetic":
            parts.append(_synthetic(run, out_dir, i, csv_rows))
        elif r.get("mode") == "checkpoint":
            parts.append(_checkpoint(run, out_dir, i, csv_rows))
    return "\n".join(parts), csv_rows, []


def _synthetic(run: Run, out_dir: Path, i: int, csv_rows: list) -> str:
    r = run.results
    setup = r.get("setup", {})
    names = list(r.get("mechanisms", {}))
    rows = []
    for entry in r.get("reference_table", []):
        rows.append([entry["s2"], *[fmt(entry["entropy"].get(n), ".2f") for n in names],
                     *[fmt(entry["gap"].get(n), ".3f") for n in names]])  # fmt: skip
        csv_rows.append({"run": run.path.name, "s2": entry["s2"],
                         **{f"entropy/{n}": entry["entropy"].get(n) for n in names},
                         **{f"gap/{n}": entry["gap"].get(n) for n in names}})  # fmt: skip
    figures = [copy_figure(run.path / f, out_dir, f"analyze{i}_{f}")
               for f in ("entropy_vs_s2.png", "gap_vs_s2.png", "logvar_vs_s2.png")]  # fmt: skip
    return (
        f"### Synthetic Gaussian inputs ({run.path.name})\n\nq ~ N(0, σ² I), k ~ N(0, I), "
        f"N={setup.get('seq_len')}, d={setup.get('head_dim')}: row entropy H (ln N = uniform) and "
        "spectral gap γ = 1 − |λ₂|. Softmax and moment-matched LLN concentrate as σ² grows; "
        "untuned exp features and elu+1 stay near ln N.\n\n"
        + table(["σ²", *[f"H {n}" for n in names], *[f"γ {n}" for n in names]], rows)
        + "\n\n" + "\n".join(f for f in figures if f) + "\n"
    )  # fmt: skip


def _checkpoint(run: Run, out_dir: Path, i: int, csv_rows: list) -> str:
    r = run.results
    rows = []
    for entry in r.get("runs", []):
        mean = entry.get("mean", {})
        for layer in entry.get("layers", []):
            lm = layer.get("mean", {})
            rows.append([entry.get("label"), layer.get("layer"), fmt(lm.get("entropy"), ".3f"),
                         fmt(lm.get("gap"), ".3f"), fmt(lm.get("log_var"), ".2f"),
                         fmt(lm.get("sigma_q"), ".3f"), fmt(lm.get("sigma_k"), ".3f")])  # fmt: skip
            csv_rows.append({"run": run.path.name, "model_run": entry.get("label"),
                             "layer": layer.get("layer"), **lm})  # fmt: skip
        rows.append([entry.get("label"), "all", fmt(mean.get("entropy"), ".3f"),
                     fmt(mean.get("gap"), ".3f"), fmt(mean.get("log_var"), ".2f"),
                     fmt(mean.get("sigma_q"), ".3f"), fmt(mean.get("sigma_k"), ".3f")])  # fmt: skip
    seqs = r.get("sequences", {})
    figures = [copy_figure(run.path / f, out_dir, f"analyze{i}_{f}")
               for f in ("compare_layers.png", "compare_matrices.png", "entropy_heatmap.png",
                         "gap_heatmap.png", "instruments_over_training.png")]  # fmt: skip
    return (
        f"### Trained models on held-out text ({run.path.name})\n\n{seqs.get('count')} "
        f"sequences of {seqs.get('seq_len')} tokens (ln N = {fmt(seqs.get('ln_N'), '.3f')}); "
        "means over heads; for lln_diag the mixture (the LLN branch is in the run's files).\n\n"
        + table(["run", "layer", "entropy", "gap", "Var ln P", "σ_q", "σ_k"], rows)
        + "\n\n" + "\n".join(f for f in figures if f) + "\n"
    )  # fmt: skip
