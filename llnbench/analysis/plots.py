"""Figures of synthetic mode: entropy, spectral gap and log-entry variance against σ²."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llnbench import files
from llnbench.analysis.concentration import LLN_BRANCH, entropy_theory, gap_theory, log_var_theory
from llnbench.analysis.config import EXP_LABEL

if TYPE_CHECKING:
    from llnbench.analysis.config import AnalyzeConfig

BRANCH_LABEL = "lln_diag: LLN branch alone"


def pyplot():
    """matplotlib.pyplot on the Agg backend (no display needed), imported on first use."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


@dataclass(frozen=True)
class PlotSpec:
    key: str  # instrument column
    filename: str
    title: str
    ylabel: str
    theory_label: str
    reference: float | None = None  # the no-concentration value (ln N, γ = 1), drawn and named
    reference_label: str = ""
    flat_tol: float = 0.02  # a curve this close to ``reference`` at every σ² is called flat
    note: str = ""  # one line under the axes for what a reader would otherwise stumble on


def plot_specs(n: int) -> list[PlotSpec]:
    ln_n = math.log(n)
    return [
        PlotSpec(
            "entropy", "entropy_vs_s2.png", "Row entropy vs logit variance σ²",
            "mean row entropy H (nats)", "softmax theory ln N − σ²/2 (drifts above for σ² ≥ 3)",
            ln_n, f"ln N = {ln_n:.3f} (uniform attention)", 0.05,
        ),
        PlotSpec(
            "gap", "gap_vs_s2.png", "Spectral gap vs logit variance σ²",
            "spectral gap γ = 1 − |λ₂|", "softmax theory 1 − √((e^σ² − 1)/N) (breaks for σ² ≳ 3)",
            1.0, "γ = 1 (uniform or rank-one attention)", 0.01,
            "lln_diag stays near γ = ½: its block-softmax half keeps eigenvalue 1 once per "
            "diagonal block, so |λ₂| ≥ ~½ whatever the scale",
        ),
        PlotSpec(
            "log_var", "logvar_vs_s2.png", "Variance of log-entries vs logit variance σ²",
            "Var ln P (entries > 0)", "identity Var ln P = σ² (softmax theory)",
            0.0, "Var ln P = 0 (uniform attention)", 0.05,
            note="lln_diag mixes small LLN entries with large in-block softmax entries, so its "
            "log-entries are bimodal and their variance exceeds either branch's",
        ),
    ]  # fmt: skip


LEGEND = {
    "softmax": "softmax",
    "lln": "lln (exp features, moment-matched α, β)",
    "lln_diag": "lln_diag (½ LLN + ½ block-diagonal softmax)",
    "linear_elu": "linear_elu (elu + 1 features)",
    EXP_LABEL: f"{EXP_LABEL}: exp features, α = β = d^-1/4",
}
MARKERS = "osD^vP*Xh<>"


def write_plots(
    rows: list[dict[str, Any]], theory: list[dict[str, float]], cfg: AnalyzeConfig, run_dir: Path
) -> list[Path]:
    """entropy_vs_s2.png, gap_vs_s2.png, logvar_vs_s2.png: a curve per mechanism, theory dashed."""
    plt = pyplot()
    names = list(dict.fromkeys(r["mechanism"] for r in rows))
    styles = {
        name: (plt.cm.tab10(i % 10), MARKERS[i % len(MARKERS)]) for i, name in enumerate(names)
    }
    subtitle = (
        f"q ~ N(0, σ² I), k ~ N(0, I), N={cfg.seq_len}, d={cfg.head_dim}, {cfg.draws} draw(s) "
        f"× {cfg.heads} head(s), float64; bars: ± sd over draws"
    )
    paths = []
    for spec in plot_specs(cfg.seq_len):
        fig, ax = plt.subplots(figsize=(10.0, 5.4))
        _plot_panel(ax, spec, rows, theory, names, styles, cfg.seq_len)
        ax.set_title(f"{spec.title}\n{subtitle}", fontsize=10)
        present = spec.key != "gap" or "lln_diag" in names
        if spec.note and "lln_diag" in names and present:
            fig.text(0.01, 0.01, spec.note, fontsize=8, color="dimgrey")
        fig.tight_layout(rect=(0, 0.03 if spec.note else 0, 1, 1))
        path = run_dir / spec.filename
        files.save_figure(fig, path, dpi=120)
        plt.close(fig)
        paths.append(path)
    return paths


def _plot_panel(ax, spec: PlotSpec, rows, theory, names, styles, n: int) -> None:
    s2 = [t["s2"] for t in theory]
    fine = [min(s2) + (max(s2) - min(s2)) * i / 100 for i in range(101)]
    curve = {"entropy": lambda s: entropy_theory(n, s), "gap": lambda s: gap_theory(n, s),
             "log_var": log_var_theory}[spec.key]  # fmt: skip
    ax.plot(fine, [curve(s) for s in fine], "--", color="black", lw=1.4, label=spec.theory_label,
            zorder=3)  # fmt: skip
    if spec.reference is not None:
        ax.axhline(spec.reference, color="grey", lw=1.0, ls="-.", label=spec.reference_label)
    branch_is_lln = _branch_equals_lln(rows)
    for name in names:
        group = sorted((r for r in rows if r["mechanism"] == name), key=lambda r: r["s2"])
        colour, marker = styles[name]
        label = LEGEND.get(name, name)
        if name == "lln" and branch_is_lln:
            label += "\n= lln_diag's LLN branch on these inputs"
        _curve(ax, group, spec.key, label, colour, "-", marker)
        if not branch_is_lln and any(f"{LLN_BRANCH}{spec.key}" in r for r in group):
            _curve(ax, group, f"{LLN_BRANCH}{spec.key}", BRANCH_LABEL, colour, ":", marker)
    flat = _flat_at(rows, names, spec)
    if flat:
        highest = max(r[spec.key] for r in rows if r.get(spec.key) is not None)
        below = spec.reference >= highest - spec.flat_tol  # the line tops the data: write under it
        ax.annotate(
            f"flat at {spec.reference_label.split(' (')[0]}: {', '.join(flat)} (cannot concentrate)",
            (max(s2), spec.reference), xytext=(0, -14 if below else 6), textcoords="offset points",
            ha="right",
            fontsize=8, color="dimgrey",
        )  # fmt: skip
    ax.set_xlabel("σ² = σ_q² σ_k² (softmax logit variance)")
    ax.set_ylabel(spec.ylabel)
    ax.set_xticks(s2)
    ax.set_xticklabels([f"{s:g}" for s in s2])
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)


def _flat_at(rows, names, spec: PlotSpec) -> list[str]:
    """Mechanisms whose curve lies on the no-concentration line at every σ² (they overlap there)."""
    if spec.reference is None:
        return []
    tol = spec.flat_tol
    return [
        name
        for name in names
        if all(
            r.get(spec.key) is not None and abs(r[spec.key] - spec.reference) < tol
            for r in rows
            if r["mechanism"] == name
        )
    ]


def _branch_equals_lln(rows: list[dict[str, Any]]) -> bool:
    """True when lln_diag's LLN branch measured the same as lln (same inputs, same statistics).

    Synthetic mode feeds both the same q, k, so the branch's curve would hide lln's exactly.
    """
    lln = {r["s2"]: r for r in rows if r["mechanism"] == "lln"}
    diag = [r for r in rows if r["attention"] == "lln_diag"]
    if not lln or not diag:
        return False
    return all(
        r["s2"] in lln
        and all(
            r.get(f"{LLN_BRANCH}{k}") is not None
            and math.isclose(r[f"{LLN_BRANCH}{k}"], lln[r["s2"]][k], rel_tol=1e-9, abs_tol=1e-12)
            for k in ("entropy", "gap", "log_var")
        )
        for r in diag
    )


def _curve(ax, group: list[dict[str, Any]], key: str, label: str, colour, style: str, marker: str):
    pts = [(r["s2"], r[key], r.get(f"{key}_sd") or 0.0) for r in group if r.get(key) is not None]
    if not pts:
        return
    x, y, err = zip(*pts)
    ax.errorbar(x, y, yerr=err, fmt=style, marker=marker, ms=5, capsize=3, color=colour,
                label=label, mfc="none" if marker in "sD^v" else colour)  # fmt: skip
