"""Synthetic mode of ``llnbench analyze``: instruments of attention mechanisms on Gaussian q, k.

For each mechanism, Gaussian q ~ N(0, σ² I) and k ~ N(0, I) of shape (1, H, N, d) in float64 at a
sweep of σ² (the softmax logit variance), a few draws each. Every mechanism sees the same draws, so
differences between curves are not sampling noise. Per (mechanism, σ²): row entropy, spectral gap,
log-entry mean and variance, entry variance, σ_q, σ_k, τ and LLN's α, β, σ̃, with the softmax
theory of measurements.md §3.1 beside them and the §3.2 reference table recomputed. Outputs:
results.json, metrics.jsonl (one row per mechanism × σ²), analyze.csv, entropy_vs_s2.png,
gap_vs_s2.png, logvar_vs_s2.png, rich tables, W&B when enabled.
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Any

import torch
from rich import box
from rich.markup import escape
from rich.table import Table

from llnbench import files
from llnbench.analysis.concentration import (
    LLN_BRANCH,
    REFERENCE_ENTROPY,
    REFERENCE_GAP,
    REFERENCE_SEQ_LEN,
    entropy_theory,
    entry_var_theory,
    gap_theory,
    log_mean_theory,
    log_var_theory,
    measure,
)
from llnbench.analysis.config import (
    EXP_ALIAS,
    EXP_LABEL,
    AnalyzeConfig,
    registry_name,
)
from llnbench.attention import build_attention
from llnbench.attention.base import Attention
from llnbench.bench.cells import check_builds, option_error
from llnbench.console import console
from llnbench.devices import resolve_device
from llnbench.errors import ConfigError
from llnbench.progress import ProgressBar
from llnbench.runs import as_plain, open_run_dir, save_config
from llnbench.tracking import Tracker

# Numbers of one (mechanism, σ²) that get a mean and a spread over draws in every row.
ROW_INSTRUMENTS = ("entropy", "gap", "log_mean", "log_var", "entry_var")


def label_of(name: str) -> str:
    return EXP_LABEL if name == EXP_ALIAS else name


def mechanism_options(cfg: AnalyzeConfig, name: str) -> dict[str, Any]:
    base = {"moment_matching": False} if name == EXP_ALIAS else {}
    return {**base, **cfg.options.get(name, {})}


def run_synthetic(cfg: AnalyzeConfig) -> Path:
    device = resolve_device(cfg.device)
    modules, skipped = build_mechanisms(cfg)
    run_dir = open_run_dir("analyze", "synthetic", cfg.run_dir)
    save_config(run_dir, cfg)
    tracker = Tracker(
        run_dir, job="analyze", name=f"analyze-synthetic-N{cfg.seq_len}",
        config=as_plain(cfg), wandb_cfg=cfg.wandb,
    )  # fmt: skip
    console.print(
        f"[bold]llnbench analyze[/bold] synthetic: q ~ N(0, σ² I), k ~ N(0, I), float64 on "
        f"{device}, N={cfg.seq_len} d={cfg.head_dim} H={cfg.heads}, {cfg.draws} draw(s) per σ², "
        f"σ² in {', '.join(f'{s:g}' for s in cfg.s2)}"
    )
    for name, reason in skipped.items():
        console.print(f"[yellow]skipping {name}: {escape(reason)}[/yellow]")

    rows = sweep(cfg, modules, device, tracker)
    theory = theory_rows(cfg.seq_len, cfg.s2)
    reference = reference_table(rows, cfg.s2)
    files.write_csv(run_dir / "analyze.csv", [_flat_row(r) for r in rows])
    from llnbench.analysis.plots import write_plots

    plots = write_plots(rows, theory, cfg, run_dir)
    console.print(rows_table(rows, theory, cfg))
    console.print(reference_rich_table(reference, cfg.seq_len))
    tracker.table("analyze", [_flat_row(r) for r in rows])
    for path in plots:
        tracker.image(path.stem, path)
    tracker.finish(
        {
            "mode": "synthetic",
            "setup": setup_info(cfg, device),
            "mechanisms": {
                label_of(n): {"attention": registry_name(n), "options": mechanism_options(cfg, n)}
                for n in modules
            },
            "skipped": skipped,
            "labels": LABELS,
            "rows": rows,
            "theory": theory,
            "reference_table": reference,
        }
    )
    console.print(f"run directory: [bold]{escape(str(run_dir))}[/bold]")
    return run_dir


LABELS = {
    "entropy": "mean row entropy −(1/n) Σ_ij P ln P (nats); uniform = ln N",
    "gap": "spectral gap 1 − |λ₂| of P",
    "log_mean": "mean of ln P_ij over entries > 0",
    "log_var": "variance of ln P_ij over entries > 0",
    "entry_var": "Var(P)·N²",
    "sigma_q": "std of q entries",
    "sigma_k": "std of k entries",
    "tau": "softmax temperature 1/(σ_q σ_k)",
    "s2_measured": "σ_q² σ_k² of the drawn inputs",
    "alpha, beta, sigma_tilde": "LLN temperatures from last_stats (α σ_q = β σ_k = σ̃)",
    "lln_diag": "unprefixed instruments: the mixture 0.5·P_LLN + 0.5·P_block-softmax; "
    f"{LLN_BRANCH}*: the LLN branch alone",
    EXP_LABEL: "lln with moment_matching=false (α = β = d^-1/4)",
    "*_sd": "standard deviation over draws",
}


def build_mechanisms(cfg: AnalyzeConfig) -> tuple[dict[str, Attention], dict[str, str]]:
    """Build every requested mechanism; one whose module cannot be imported is skipped, not fatal.

    Mechanisms are developed in parallel, so a registered name may not be importable yet.
    """
    modules: dict[str, Attention] = {}
    skipped: dict[str, str] = {}
    for name in cfg.attentions:
        try:
            modules[name] = build_attention(
                registry_name(name), num_heads=cfg.heads, head_dim=cfg.head_dim,
                **mechanism_options(cfg, name),
            )  # fmt: skip
        except ImportError as err:
            skipped[name] = f"cannot be imported ({type(err).__name__}: {err})"
        except (TypeError, ValueError) as err:  # an option value the mechanism cannot take
            raise option_error(name, mechanism_options(cfg, name), err) from None
    for name in set(cfg.options) - set(cfg.attentions):  # options set but not run: still valid?
        check_builds(registry_name(name), mechanism_options(cfg, name), heads=cfg.heads,
                      head_dim=cfg.head_dim, causal=False)  # fmt: skip
    if not modules:
        raise ConfigError(
            "none of the requested mechanisms can be imported: "
            + "; ".join(f"{n} {r}" for n, r in skipped.items())
        )
    return modules, skipped


def draw_inputs(cfg: AnalyzeConfig) -> dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor]]:
    """(σ² index, draw) -> (q, k), drawn once on the CPU so every mechanism sees the same inputs."""
    gen = torch.Generator().manual_seed(cfg.seed)
    shape = (1, cfg.heads, cfg.seq_len, cfg.head_dim)
    out = {}
    for i, s2 in enumerate(cfg.s2):
        for r in range(cfg.draws):
            q = math.sqrt(s2) * torch.randn(shape, generator=gen, dtype=torch.float64)
            k = torch.randn(shape, generator=gen, dtype=torch.float64)
            out[(i, r)] = (q, k)
    return out


def sweep(
    cfg: AnalyzeConfig, modules: dict[str, Attention], device: torch.device, tracker: Tracker
) -> list[dict[str, Any]]:
    """One row per (mechanism, σ²): instruments averaged over draws, with their spread."""
    inputs = draw_inputs(cfg)
    rows = []
    progress = ProgressBar("analyze", len(modules) * len(cfg.s2) * cfg.draws, unit="draw")
    with progress:
        for name, module in modules.items():
            module.to(device)
            for i, s2 in enumerate(cfg.s2):
                per_draw: list[dict[str, float]] = []
                for r in range(cfg.draws):
                    progress.update(description=f"{label_of(name):<13} σ²={s2:<5g} #{r}")
                    q, k = (t.to(device) for t in inputs[(i, r)])
                    per_draw.append(measure(module, q, k).means())
                    progress.update(advance=1)
                row = summarise_draws(cfg, name, s2, per_draw)
                rows.append(row)
                tracker.log(_flat_row(row))
    return rows


def summarise_draws(
    cfg: AnalyzeConfig, name: str, s2: float, per_draw: list[dict[str, float]]
) -> dict[str, Any]:
    """Mean over draws of every instrument, standard deviation of the main ones."""
    row: dict[str, Any] = {
        "mechanism": label_of(name), "attention": registry_name(name), "s2": s2,
        "seq_len": cfg.seq_len, "head_dim": cfg.head_dim, "heads": cfg.heads,
        "draws": len(per_draw),
    }  # fmt: skip
    keys = list(dict.fromkeys(k for d in per_draw for k in d))
    for key in keys:
        values = [d[key] for d in per_draw if key in d and math.isfinite(d[key])]
        column = "s2_measured" if key == "s2" else key
        row[column] = statistics.fmean(values) if values else None
        base = key.removeprefix(LLN_BRANCH)
        if base in ROW_INSTRUMENTS:
            row[f"{column}_sd"] = statistics.pstdev(values) if len(values) > 1 else 0.0
    row["per_draw"] = {
        key: [d.get(key) for d in per_draw]
        for key in keys
        if key.removeprefix(LLN_BRANCH) in ROW_INSTRUMENTS
    }
    return row


def _flat_row(row: dict[str, Any]) -> dict[str, Any]:
    """A row without its per-draw lists (metrics.jsonl, CSV, W&B)."""
    return {k: v for k, v in row.items() if k != "per_draw"}


def theory_rows(n: int, s2_values: list[float]) -> list[dict[str, float]]:
    """Softmax on Gaussian inputs, measurements.md §3.1, at this run's N."""
    return [
        {
            "s2": s2,
            "entropy": entropy_theory(n, s2),
            "gap": gap_theory(n, s2),
            "log_mean": log_mean_theory(n, s2),
            "log_var": log_var_theory(s2),
            "entry_var": entry_var_theory(s2),
        }
        for s2 in s2_values
    ]


def reference_table(rows: list[dict[str, Any]], s2_values: list[float]) -> list[dict[str, Any]]:
    """measurements.md §3.2 recomputed: entropy and gap per σ² and mechanism, spec values beside."""
    out = []
    for s2 in s2_values:
        here = [r for r in rows if r["s2"] == s2]
        out.append(
            {
                "s2": s2,
                "entropy": {r["mechanism"]: r["entropy"] for r in here},
                "gap": {r["mechanism"]: r["gap"] for r in here},
                "spec_entropy": REFERENCE_ENTROPY.get(s2, {}),
                "spec_gap": REFERENCE_GAP.get(s2, {}),
            }
        )
    return out


def setup_info(cfg: AnalyzeConfig, device: torch.device) -> dict[str, Any]:
    return {
        "seq_len": cfg.seq_len, "head_dim": cfg.head_dim, "heads": cfg.heads,
        "draws": cfg.draws, "s2": cfg.s2, "q": "N(0, s2 I)", "k": "N(0, I)",
        "dtype": "float64", "device": str(device), "torch": torch.__version__,
        "threads": torch.get_num_threads(), "seed": cfg.seed, "ln_N": math.log(cfg.seq_len),
    }  # fmt: skip


# ---------------------------------------------------------------------------------------------
# tables


def _fmt(value: Any, spec: str = ".3f") -> str:
    return "—" if value is None else format(value, spec)


def _with_sd(row: dict[str, Any], key: str) -> str:
    """``3.899±.011``: compact enough for an 80-column terminal."""
    value, sd = row.get(key), row.get(f"{key}_sd")
    if value is None:
        return "—"
    return f"{value:.3f}" + (f"±{sd:.3f}".replace("0.", ".", 1) if sd else "")


def rows_table(rows: list[dict[str, Any]], theory: list[dict[str, float]], cfg) -> Table:
    """Every (mechanism, σ²) row, the softmax theory row first in each σ² group."""
    table = Table(
        title=f"concentration, synthetic: N={cfg.seq_len}, d={cfg.head_dim}, "
        f"ln N = {math.log(cfg.seq_len):.3f}",
        caption=f"H row entropy (nats), γ = 1 − |λ₂|, ± sd over {cfg.draws} draw(s); ln P over "
        "entries > 0; α, β: LLN temperatures; lln_diag: the mixture, └ its LLN branch alone. "
        "τ, σ_q, σ_k, mean ln P: analyze.csv",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        collapse_padding=True,
        show_edge=False,
    )
    for column in ("mechanism", "σ²", "H", "γ", "Var\nln P", "Var(P)\n·N²", "α", "β"):
        left = column == "mechanism"
        table.add_column(column, justify="left" if left else "right", no_wrap=left)
    for s2, th in zip(cfg.s2, theory):
        table.add_row(
            "[dim]softmax theory[/dim]", f"{s2:g}",
            *(f"[dim]{th[k]:.3f}[/dim]" for k in ("entropy", "gap", "log_var", "entry_var")),
            "", "",
        )  # fmt: skip
        for row in (r for r in rows if r["s2"] == s2):
            table.add_row(
                row["mechanism"], f"{s2:g}", _with_sd(row, "entropy"), _with_sd(row, "gap"),
                _fmt(row.get("log_var")), _fmt(row.get("entry_var")), _fmt(row.get("alpha")),
                _fmt(row.get("beta")),
            )  # fmt: skip
            if f"{LLN_BRANCH}entropy" in row:
                p = LLN_BRANCH
                table.add_row(
                    "└ LLN branch", f"{s2:g}", _with_sd(row, f"{p}entropy"),
                    _with_sd(row, f"{p}gap"), _fmt(row.get(f"{p}log_var")),
                    _fmt(row.get(f"{p}entry_var")), "", "",
                )  # fmt: skip
        table.add_section()
    return table


def reference_rich_table(reference: list[dict[str, Any]], n: int) -> Table:
    """The §3.2 table recomputed, one row per (instrument, mechanism), one column per σ².

    Below each value, in brackets, the spec's measurement where it has one (only at N=512).
    """
    names = list(dict.fromkeys(m for r in reference for m in r["entropy"]))
    show_spec = n == REFERENCE_SEQ_LEN
    caption = (
        f"in brackets: measurements.md §3.2 (N={REFERENCE_SEQ_LEN})"
        if show_spec
        else f"measurements.md §3.2 is for N={REFERENCE_SEQ_LEN}; this run has N={n}"
    )
    table = Table(
        title="reference table, recomputed", caption=caption, box=box.SIMPLE_HEAD,
        pad_edge=False,
        collapse_padding=True,
        show_edge=False,
    )  # fmt: skip
    table.add_column("")
    for entry in reference:
        table.add_column(f"σ²={entry['s2']:g}", justify="right")
    for key, spec_key, symbol, spec in (
        ("entropy", "spec_entropy", "H", ".2f"),
        ("gap", "spec_gap", "γ", ".3f"),
    ):
        for name in names:
            cells = []
            for entry in reference:
                cell = _fmt(entry[key].get(name), spec)
                ref = entry[spec_key].get(name) if show_spec else None
                cells.append(cell + (f"\n[dim]\\[{ref:{spec}}][/dim]" if ref is not None else ""))
            table.add_row(f"{symbol} {name}", *cells)
        table.add_section()
    return table
