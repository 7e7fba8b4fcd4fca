"""Read scale rows: ratios to softmax, crossover lengths, growth per doubling, table and plot."""

from __future__ import annotations

import itertools
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

from rich.markup import escape
from rich.table import Table

from llnbench import files


def _ok(row: dict[str, Any]) -> bool:
    return row["status"] == "ok" and row.get("ms_median") is not None


def series(row: dict[str, Any]) -> str:
    """The line a row belongs to: its mechanism, or mechanism/backend when several were timed."""
    return row.get("series") or row["attention"]


def baseline_index(rows: list[dict[str, Any]]) -> dict[tuple[int, str], dict[str, Any]]:
    """Softmax's row at each (seq_len, mode): the reference for every ratio. With several SDPA
    backends timed (series ``softmax[cudnn]``, ...) it is the row ``softmax``, their fastest."""
    return {
        (r["seq_len"], r["mode"]): r
        for r in rows
        if r["attention"] == "softmax" and series(r) == "softmax" and _ok(r)
    }


def speedup(row: dict[str, Any], base: dict[str, Any] | None) -> float | None:
    if base is None or not _ok(row):
        return None
    return base["ms_median"] / row["ms_median"]


def memory_ratio(row: dict[str, Any], base: dict[str, Any] | None) -> float | None:
    """softmax_mib / mib: how many times less memory than softmax (None where not measured)."""
    if base is None or not row.get("peak_mib") or not base.get("peak_mib"):
        return None
    return base["peak_mib"] / row["peak_mib"]


def growth_per_doubling(points: list[tuple[int, float]]) -> float | None:
    """Geometric-mean factor between consecutive doublings of N (2.0 linear, 4.0 quadratic)."""
    points = sorted(p for p in points if p[1] and p[1] > 0)
    if len(points) < 2:
        return None
    logs = [math.log(b[1] / a[1]) / math.log2(b[0] / a[0]) for a, b in itertools.pairwise(points)]
    return math.exp(sum(logs) / len(logs))


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per (attention, mode): speed-up and memory ratio vs softmax by N, crossover, growth."""
    base = baseline_index(rows)
    summary: dict[str, Any] = {}
    groups = _groups(rows)
    for (name, mode), group in groups.items():
        group.sort(key=lambda r: r["seq_len"])
        ups = {r["seq_len"]: speedup(r, base.get((r["seq_len"], r["mode"]))) for r in group}
        mems = {r["seq_len"]: memory_ratio(r, base.get((r["seq_len"], r["mode"]))) for r in group}
        crossover = next((n for n, s in ups.items() if s is not None and s > 1.0), None)
        summary[f"{name}/{mode}"] = {
            "speedup_vs_softmax": ups,
            "memory_vs_softmax": mems,
            "crossover_len": crossover,
            "time_growth_per_doubling": growth_per_doubling(
                [(r["seq_len"], r["ms_median"]) for r in group if _ok(r)]
            ),
            "memory_growth_per_doubling": growth_per_doubling(
                [(r["seq_len"], r["peak_mib"]) for r in group if _ok(r)]
            ),
            "statuses": {r["seq_len"]: r["status"] for r in group},
        }
    return summary


def _ms(value: float) -> str:
    """Milliseconds with as many decimals as they deserve: 0.123, 12.3, 1234."""
    return f"{value:.0f}" if value >= 100 else f"{value:.1f}" if value >= 10 else f"{value:.3g}"


def _fmt(value: float | None, spec: str) -> str:
    return "—" if value is None else format(value, spec)


def _rate(row: dict[str, Any]) -> str:
    """GB/s for memory-bound rows, TFLOP/s for compute-bound ones; without device peaks, by
    arithmetic intensity (above 100 FLOP/byte counts as compute-bound, as on every GPU listed)."""
    tflops, gbps, bound = row.get("tflops"), row.get("gbps"), row.get("bound")
    if bound is None and tflops is not None and gbps:
        bound = "compute" if tflops * 1e3 / gbps > 100 else "memory"
    if gbps is not None and bound != "compute":
        return f"{gbps:.4g} GB/s"
    return "—" if tflops is None else f"{tflops:.3g} TFLOP/s"


def ratio_table(rows: list[dict[str, Any]], machine: dict[str, Any]) -> Table:
    base = baseline_index(rows)
    title = (
        f"attention scale: {machine.get('gpu') or machine.get('cpu')}, {machine.get('dtype')}, "
        f"torch {machine.get('torch')}"
    )
    peak = machine.get("peak")
    roof = (f"; % roof = roofline floor ÷ time, peaks: {peak['device']} {peak['bf16_tflops']:g} "
            f"TFLOP/s bf16, {peak['hbm_gbps']:g} GB/s" if isinstance(peak, dict)
            else "; device peaks unknown")  # fmt: skip
    caption = ("× = softmax (SDPA) time or memory ÷ this mechanism's; softmax = the fastest "
               "SDPA backend timed at that N" + roof)  # fmt: skip
    table = Table(title=title, caption=caption)
    for column in ("attention", "N", "mode", "ms", "p20–p80", "× softmax", "MiB", "mem ×",
                   "rate", "% roof", "backend", "status"):  # fmt: skip
        left = column in ("attention", "mode", "backend")
        table.add_column(column, justify="left" if left else "right")
    for row in sorted(rows, key=lambda r: (r["mode"], r["seq_len"], series(r))):
        ref = base.get((row["seq_len"], row["mode"]))
        ok = _ok(row)
        status = row["status"] + (f": {row['reason']}" if row.get("reason") else "")
        table.add_row(
            escape(series(row)), str(row["seq_len"]), row["mode"],
            _ms(row["ms_median"]) if ok else "—",
            f"{_ms(row['ms_p20'])}–{_ms(row['ms_p80'])}" if ok else "—",
            _fmt(speedup(row, ref), ".2f"),
            _fmt(row.get("peak_mib"), ".0f") if row.get("peak_mib") is not None else "n/m",
            _fmt(memory_ratio(row, ref), ".2f"), _rate(row),
            _fmt(row["peak_fraction"] * 100 if row.get("peak_fraction") else None, ".0f"),
            row.get("backend") or row.get("sdpa_backend") or "—", escape(status),
        )  # fmt: skip
    return table


def write_plot(rows: list[dict[str, Any]], path: Path, machine: dict[str, Any]) -> None:
    """Log-log time and memory vs N, one colour per mechanism, dashed = forward only."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    memory_measured = any(r.get("peak_mib") for r in rows)
    panels = [("ms_median", "time per call (ms, median)")]
    if memory_measured:
        panels.append(("peak_mib", "peak memory (MiB, inputs excluded)"))
    fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 4.8), squeeze=False)
    names = list(dict.fromkeys(series(r) for r in rows))
    colours = {n: plt.cm.tab10(i % 10) for i, n in enumerate(names)}
    lengths = sorted({r["seq_len"] for r in rows})
    for ax, (key, label) in zip(axes[0], panels):
        # one legend entry per mechanism (its colour); the title explains solid and dashed
        labelled: set[str] = set()
        for (name, mode), group in _groups(rows).items():
            pts = [(r["seq_len"], r[key]) for r in group if _ok(r) and r.get(key)]
            style = "-" if mode == "fwdbwd" else "--"
            if pts:
                ax.plot(*zip(*pts), style, marker="o", ms=3, color=colours[name],
                        label=None if name in labelled else name)  # fmt: skip
                labelled.add(name)
            for r in group:
                if r["status"] in ("oom", "error") or (r["status"] == "skipped" and pts):
                    y = pts[-1][1] if pts else 1.0
                    ax.plot(r["seq_len"], y, "x", color=colours[name], ms=8)
                    ax.annotate(r["status"], (r["seq_len"], y), fontsize=7, color=colours[name],
                                xytext=(3, 3), textcoords="offset points")  # fmt: skip
        _slope_guides(ax, rows, key, lengths)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("sequence length N")
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
    if axes[0][0].get_legend_handles_labels()[0]:
        axes[0][0].legend(fontsize=7, loc="upper left")
    fig.suptitle(
        f"{machine.get('gpu') or machine.get('cpu')} · {machine.get('dtype')} · "
        f"torch {machine.get('torch')}"
        + ("" if memory_measured else " · peak memory not measured on CPU")
        + "\nsolid: forward+backward, dashed: forward; dotted guides: slope 1 (linear), 2 (quadratic)",
        fontsize=9,
    )
    fig.tight_layout()
    files.save_figure(fig, path, dpi=120)  # the folder made, OS errors one line
    plt.close(fig)


def _groups(rows: list[dict[str, Any]]) -> dict[tuple[str, str], list[dict[str, Any]]]:
    groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        groups[(series(row), row["mode"])].append(row)
    return groups


def _slope_guides(ax, rows, key: str, lengths: list[int]) -> None:
    values = [r[key] for r in rows if _ok(r) and r.get(key)]
    if len(lengths) < 2 or not values:
        return
    x0, y0 = lengths[0], min(values)
    for slope in (1, 2):
        ax.plot([x0, lengths[-1]], [y0, y0 * (lengths[-1] / x0) ** slope], ":", color="grey",
                lw=0.8)  # fmt: skip
