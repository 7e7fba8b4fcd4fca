"""Checkpoint mode of ``llnbench analyze``: concentration of pretrained models' layers on real text.

    llnbench analyze mode=checkpoint checkpoint=RUN_DIR
    llnbench analyze mode=checkpoint checkpoint=[SOFTMAX_RUN,LLN_RUN]    # side by side

Each run's encoder is rebuilt from its checkpoint and recorded model/attention config. Held-out
sequences: by default ``num_sequences`` evenly spaced validation blocks of the first run's own data
config (for the embedded corpus the addresses from 2010 on), cut to ``max_len`` tokens; or
``text_file`` tokenised and cut into sequences of ``max_len`` (the last one padded). Every run sees
the same token ids. One eval-mode forward per run with hooks on the attention cores captures q, k
and the mask of every layer; ``concentration.measure`` gives the instruments per layer and head,
padding excluded (each sequence at its real length), averaged over sequences.

For lln_diag the unprefixed instruments are those of the mixture 0.5·P_LLN + 0.5·P_block-softmax
(the matrix the layer applies) and ``lln_branch_*`` those of its LLN branch alone.

Outputs: results.json (per layer × head, per-layer and overall means), metrics.jsonl (one row per
run × layer), analyze_layers.csv, analyze_heads.csv, entropy_heatmap.png, gap_heatmap.png,
attention_examples.png, with several runs compare_matrices.png and compare_layers.png, and
instruments_over_training.png when a run logged ``analysis_every`` instruments; a rich table.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from rich import box
from rich.markup import escape
from rich.table import Table

from llnbench import files
from llnbench.analysis.capture import (
    attention_cores,
    capture_qk,
    example_matrices,
    measure_layers,
)
from llnbench.analysis.concentration import LLN_BRANCH
from llnbench.analysis.held_out import (
    Sequences,
    held_out,
    run_labels,
    shared_tokenizer,
)
from llnbench.analysis.probe import history
from llnbench.analysis.run_analysis import RunAnalysis
from llnbench.console import console
from llnbench.data.tokenizer import RobertaTokenizer, load_tokenizer
from llnbench.devices import resolve_device
from llnbench.errors import CheckpointError
from llnbench.model.pretrained import Pretrained, load_pretrained
from llnbench.model.roberta import RobertaForMaskedLM
from llnbench.runs import as_plain, open_run_dir, save_config
from llnbench.tracking import Tracker

if TYPE_CHECKING:
    from llnbench.analysis.config import AnalyzeConfig

LABELS = {
    "entropy": "mean row entropy −(1/n) Σ_ij P ln P (nats) over real tokens; uniform = ln n",
    "gap": "spectral gap 1 − |λ₂| of P (real block)",
    "log_mean": "mean of ln P_ij over real entries > 0",
    "log_var": "variance of ln P_ij over real entries > 0",
    "entry_var": "Var(P)·n²",
    "sigma_q": "std of the q entries the core received (before any 1/√d scaling)",
    "sigma_k": "std of the k entries",
    "tau": "softmax temperature 1/(σ_q σ_k)",
    "s2": "σ_q² σ_k², the logit variance of the Gaussian model",
    "alpha, beta, sigma_tilde": "LLN temperatures of this batch (α σ_q = β σ_k = σ̃)",
    "lln_diag": "unprefixed instruments: the mixture 0.5·P_LLN + 0.5·P_block-softmax, the matrix "
    f"the layer applies; {LLN_BRANCH}*: its LLN branch alone",
    "per_head": "mean over sequences; layer 'mean': mean over heads; run 'mean': over layers",
}


def run_checkpoint(cfg: AnalyzeConfig) -> Path:
    paths = cfg.checkpoints
    runs = [load_pretrained(p) for p in paths]  # CheckpointError: one line, nothing written
    labels = run_labels(paths, runs)
    tokenizer = load_tokenizer(shared_tokenizer(runs, labels))
    sequences = held_out(cfg, runs, labels, tokenizer)
    device = resolve_device(cfg.device)
    run_dir = open_run_dir("analyze", "checkpoint", cfg.run_dir)
    save_config(run_dir, cfg)
    tracker = Tracker(
        run_dir, job="analyze", name=f"analyze-checkpoint-{'-vs-'.join(labels)}",
        config=as_plain(cfg), wandb_cfg=cfg.wandb,
    )  # fmt: skip
    console.print(
        "[bold]llnbench analyze[/bold] "
        + escape(
            f"checkpoint: {', '.join(labels)} on {device}; "
            f"{len(sequences.input_ids)} sequence(s) of N={sequences.seq_len} from {sequences.source}"
        )
    )
    results = []
    for label, pretrained in zip(labels, runs):
        console.print(
            f"measuring {label} ({pretrained.path}, step {pretrained.step}) ...", markup=False
        )
        results.append(analyse_run(label, pretrained, sequences, tokenizer, device, gap=cfg.gap))
    rows = layer_rows(results, sequences)
    for row in rows:
        tracker.log(row)
    files.write_csv(run_dir / "analyze_layers.csv", rows)
    files.write_csv(run_dir / "analyze_heads.csv", head_rows(results))
    from llnbench.analysis.checkpoint_plots import write_checkpoint_plots

    plots = write_checkpoint_plots(results, sequences, run_dir)
    console.print(layer_table(results, sequences))
    tracker.table("analyze_layers", rows)
    for path in plots:
        tracker.image(path.stem, path)
    tracker.finish(
        {
            "mode": "checkpoint",
            "sequences": sequences.summary(),
            "device": str(device),
            "runs": [run_summary(r) for r in results],
            "labels": LABELS,
            "plots": [p.name for p in plots],
        }
    )
    console.print(f"run directory: [bold]{escape(str(run_dir))}[/bold]")
    return run_dir


def analyse_run(
    label: str,
    pretrained: Pretrained,
    sequences: Sequences,
    tokenizer: RobertaTokenizer,
    device: torch.device,
    *,
    gap: bool = True,
) -> RunAnalysis:
    model = RobertaForMaskedLM(pretrained.model, pretrained.attention, tokenizer.pad_id)
    try:
        model.encoder.load_state_dict(pretrained.encoder_state)
    except RuntimeError as err:
        first = str(err).strip().splitlines()[0]
        raise CheckpointError(f"{pretrained.path}: encoder weights do not fit: {first}") from None
    model.to(device)
    ids, mask = sequences.input_ids.to(device), sequences.mask.to(device)
    captured = capture_qk(model, ids, mask)
    cores = attention_cores(model)
    layers = measure_layers(cores, captured, gap=gap)
    examples = [example_matrices(core, inputs, 0) for core, inputs in zip(cores, captured)]
    logged = history(pretrained.path.parent / "metrics.jsonl")
    return RunAnalysis(label, pretrained, layers, examples, logged)


# ---------------------------------------------------------------------------------------------
# results


def run_summary(run: RunAnalysis) -> dict[str, Any]:
    p = run.pretrained
    out: dict[str, Any] = {
        "label": run.label, "checkpoint": str(p.path), "step": p.step,
        "attention": p.attention.to_dict(), "model": as_plain(p.model),
        "layers": [
            {"layer": i, "mean": m.means(), "per_head": m.per_head_lists()}
            for i, m in enumerate(run.layers)
        ],
        "mean": run.overall(),
        "logged_during_training": len(run.history),
    }  # fmt: skip
    if run.has_branch:
        out["note"] = LABELS["lln_diag"]
    return out


def layer_rows(results: list[RunAnalysis], sequences: Sequences) -> list[dict[str, Any]]:
    """One row per (run, layer): head means (metrics.jsonl, analyze_layers.csv, W&B)."""
    rows = []
    for run in results:
        for i, means in enumerate(run.layer_means()):
            rows.append(
                {
                    "run": run.label,
                    "attention": run.attention,
                    "layer": i,
                    "checkpoint_step": run.pretrained.step,
                    "seq_len": sequences.seq_len,
                    "sequences": int(sequences.input_ids.shape[0]),
                    **means,
                }
            )
    return rows


def head_rows(results: list[RunAnalysis]) -> list[dict[str, Any]]:
    rows = []
    for run in results:
        for i, m in enumerate(run.layers):
            per_head = m.per_head_lists()
            for h in range(len(next(iter(per_head.values())))):
                rows.append(
                    {"run": run.label, "layer": i, "head": h}
                    | {name: values[h] for name, values in per_head.items()}
                    | m.scalars
                )
    return rows


def _fmt(value: float | None, spec: str = ".3f") -> str:
    return "—" if value is None or not math.isfinite(value) else format(value, spec)


def layer_table(results: list[RunAnalysis], sequences: Sequences) -> Table:
    n = sequences.seq_len
    branch = any(r.has_branch for r in results)
    lln = any("alpha" in r.layers[0].scalars for r in results)
    caption = (
        "H row entropy (nats; uniform = ln N), γ = 1 − |λ₂|, Var ln P over real entries; σ_q, σ_k:"
        " std of the core's q, k" + ("; α, β: LLN temperatures" if lln else "")
        + (". lln_diag: its row is the mixture the layer applies, └ its LLN branch alone" if branch
           else "") + ". Per head: analyze_heads.csv"
    )  # fmt: skip
    table = Table(
        title=f"concentration per layer (mean over heads): {len(sequences.input_ids)} sequence(s), "
        f"N={n}, ln N = {math.log(n):.3f}",
        caption=caption, box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True,
        show_edge=False,
    )  # fmt: skip
    keys = ("entropy", "gap", "log_var", "entry_var", "sigma_q", "sigma_k")
    columns = ["run", "layer", "H", "γ", "Var\nln P", "Var(P)\n·N²", "σ_q", "σ_k"]
    if lln:
        keys, columns = (*keys, "alpha", "beta"), [*columns, "α", "β"]
    for column in columns:
        table.add_column(column, justify="left" if column == "run" else "right")
    for run in results:
        rows = [(str(i), m) for i, m in enumerate(run.layer_means())] + [("all", run.overall())]
        for layer, means in rows:
            style = "bold" if layer == "all" else ""
            table.add_row(
                escape(run.label), layer, *(_fmt(means.get(k)) for k in keys), style=style
            )
            if f"{LLN_BRANCH}entropy" in means:
                branch_cells = [_fmt(means.get(LLN_BRANCH + k)) for k in keys[:4]]
                table.add_row("└ LLN branch", layer, *branch_cells, *[""] * (len(keys) - 4),
                              style=f"dim {style}")  # fmt: skip
        table.add_section()
    return table
