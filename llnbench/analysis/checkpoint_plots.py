"""Figures of checkpoint mode: heat maps, example matrices, run comparisons, training curves.

- ``entropy_heatmap.png``, ``gap_heatmap.png``: layer × head, one panel per run (lln_diag: the
  mixture and its LLN branch as two panels), a shared absolute colour scale, values written in.
- ``attention_examples.png``: the example sequence's matrices, a row per layer, a column per head
  (up to a few per run), every run side by side, log colour scale.
- ``compare_matrices.png`` (several runs): the same sequence, the mean over each layer's heads,
  runs side by side. ``compare_layers.png``: entropy, gap and Var ln P against layer, a line per run.
- ``instruments_over_training.png``: the ``analysis_every`` rows of each run's metrics.jsonl.
"""

from __future__ import annotations

import math
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from llnbench import files
from llnbench.analysis.concentration import LLN_BRANCH
from llnbench.analysis.plots import pyplot

if TYPE_CHECKING:
    from llnbench.analysis.held_out import Sequences
    from llnbench.analysis.run_analysis import RunAnalysis

MAX_EXAMPLE_COLUMNS = 8  # panels per row of attention_examples.png
BRANCH = "LLN branch alone"
MIXTURE = "½ LLN + ½ block softmax"


def write_checkpoint_plots(
    results: list[RunAnalysis], sequences: Sequences, run_dir: Path
) -> list[Path]:
    n = sequences.seq_len
    paths = [
        heatmap(results, "entropy", run_dir / "entropy_heatmap.png",
                f"Row entropy H per layer and head (nats): 0 = one-hot rows, ln N = "
                f"{math.log(n):.3f} = uniform", (math.log(n), "ln N"), sequences),
    ]  # fmt: skip
    if all("gap" in r.layers[0].per_head for r in results):  # gap=false skips eigenvalues
        paths.append(heatmap(
            results, "gap", run_dir / "gap_heatmap.png",
            "Spectral gap γ = 1 − |λ₂| per layer and head: ≈ 0 tokens kept apart, 1 uniform (or "
            "every query on the same keys)", (1.0, "γ = 1"), sequences,
        ))  # fmt: skip
    paths.append(example_matrices(results, sequences, run_dir / "attention_examples.png"))
    if len(results) > 1:
        paths.append(compare_matrices(results, sequences, run_dir / "compare_matrices.png"))
        paths.append(compare_layers(results, sequences, run_dir / "compare_layers.png"))
    if any(r.history for r in results):
        paths.append(over_training(results, run_dir / "instruments_over_training.png"))
    return paths


def _panels(results: list[RunAnalysis]) -> list[tuple[RunAnalysis, str, str]]:
    """(run, instrument prefix, title) per panel: lln_diag gets its mixture and its LLN branch."""
    out = []
    for run in results:
        if run.has_branch:
            out.append((run, "", f"{run.label}: {MIXTURE}"))
            out.append((run, LLN_BRANCH, f"{run.label}: {BRANCH}"))
        else:
            out.append((run, "", run.label))
    return out


def _subtitle(sequences: Sequences) -> str:
    count = len(sequences.input_ids)
    return f"{count} held-out sequence(s) of N={sequences.seq_len} tokens, {sequences.source}"


def heatmap(results, key: str, path: Path, title: str, reference: tuple[float, str], sequences):
    """Layer × head grid per panel; one colour scale over every panel (the data's range)."""
    plt = pyplot()
    panels = _panels(results)
    layers = max(len(r.layers) for r in results)
    heads = max(len(r.layers[0].per_head[key]) for r in results)
    grids = [
        torch.stack([m.per_head[prefix + key] for m in run.layers]).cpu().numpy()
        for run, prefix, _ in panels
    ]
    finite = [float(v) for g in grids for v in g.ravel() if math.isfinite(v)]
    vmin, vmax = (min(finite), max(finite)) if finite else (0.0, 1.0)
    if vmax - vmin < 1e-3:
        vmin, vmax = vmin - 5e-4, vmax + 5e-4
    width = 1.6 + len(panels) * (0.7 * heads + 1.3)
    fig, axes = plt.subplots(1, len(panels), figsize=(max(width, 7.0), 2.3 + 0.45 * layers),
                             squeeze=False, layout="constrained")  # fmt: skip
    for ax, grid, (_, _, name) in zip(axes[0], grids, panels):
        image = ax.imshow(grid, vmin=vmin, vmax=vmax, cmap="viridis", aspect="auto")
        if grid.size <= 256:
            for (i, h), value in _cells(grid):
                colour = "white" if value < vmin + 0.6 * (vmax - vmin) else "black"
                ax.text(h, i, f"{value:.3f}", ha="center", va="center", fontsize=7, color=colour)
        ax.set_title(_wrap(name, 26), fontsize=9)
        ax.set_xlabel("head")
        ax.set_ylabel("layer")
        ax.set_xticks(range(grid.shape[1]))
        ax.set_yticks(range(grid.shape[0]))
    bar = fig.colorbar(image, ax=axes[0].tolist(), shrink=0.9, pad=0.02)
    value, name = reference
    label = "colour: this figure's range"
    if vmin <= value <= vmax:
        bar.ax.axhline(value, color="red", lw=1.5)
        label += f"; red line: {name}"
    bar.set_label(label, fontsize=8)
    _suptitle(fig, title, _subtitle(sequences))
    files.save_figure(fig, path, dpi=110)
    plt.close(fig)
    return path


def _suptitle(fig, *lines: str, tail: str = "") -> None:
    """A figure title whose lines are wrapped to the figure's width (9 pt); ``tail`` as given."""
    width = max(40, int(fig.get_figwidth() * 13))
    text = "\n".join(_wrap(line, width) for line in lines)
    fig.suptitle(f"{text}\n{tail}" if tail else text, fontsize=9)


def _wrap(text: str, width: int) -> str:
    return "\n".join(textwrap.wrap(text, width, break_long_words=False))


def _cells(grid):
    for i in range(grid.shape[0]):
        for h in range(grid.shape[1]):
            if math.isfinite(grid[i, h]):
                yield (i, h), float(grid[i, h])


def _matrix_norm(n: int):
    from matplotlib.colors import LogNorm

    return LogNorm(vmin=min(1e-4, 0.01 / n), vmax=1.0)


def _example_title(sequences: Sequences, fig) -> str:
    """The example sequence's opening words, wrapped to the figure's width (≤ 2 lines)."""
    width = max(40, int(fig.get_figwidth() * 13))  # characters of a 9 pt line
    text = " ".join("".join(sequences.example_tokens).split())
    head = f"sequence 0 ({len(sequences.example_tokens)} tokens): "
    short = textwrap.shorten(head + f"“{text}", 2 * width - 12, placeholder=" …")
    return "\n".join(textwrap.wrap(short + "”", width))


def _show(ax, matrix: torch.Tensor, norm, title: str, *, left: bool, bottom: bool):
    image = ax.imshow(matrix.clamp_min(norm.vmin).numpy(), norm=norm, cmap="magma",
                      interpolation="nearest")  # fmt: skip
    ax.set_title(title, fontsize=8)
    ax.set_xticks([])
    ax.set_yticks([])
    if left:
        ax.set_ylabel("query i", fontsize=8)
    if bottom:
        ax.set_xlabel("key j", fontsize=8)
    return image


def _colorbar(fig, image, axes, n: int) -> None:
    bar = fig.colorbar(image, ax=axes, shrink=0.6, pad=0.01)
    bar.set_label(f"P_ij (log scale); uniform = 1/n = {1 / n:.1e}", fontsize=8)
    bar.ax.axhline(1 / n, color="cyan", lw=1.5)


def example_matrices(results, sequences, path: Path) -> Path:
    """Rows: layers; columns: (run [, LLN branch], head), up to ``MAX_EXAMPLE_COLUMNS``."""
    plt = pyplot()
    groups = _panels(results)
    heads = max(1, MAX_EXAMPLE_COLUMNS // len(groups))
    columns = [
        (run, prefix, title, h)
        for run, prefix, title in groups
        for h in range(min(heads, run.examples[0][prefix].shape[0]))
    ]
    layers = max(len(r.layers) for r in results)
    size = 2.3 if len(columns) <= 4 else 1.9
    fig, axes = plt.subplots(layers, len(columns), figsize=(1.6 + size * len(columns),
                             1.6 + size * layers), squeeze=False, layout="constrained")  # fmt: skip
    n = len(sequences.example_tokens)
    norm = _matrix_norm(n)
    image = None
    for col, (run, prefix, title, h) in enumerate(columns):
        for layer in range(layers):
            ax = axes[layer][col]
            if layer >= len(run.examples):
                ax.axis("off")
                continue
            matrix = run.examples[layer][prefix][h]
            label = f"layer {layer}, head {h}"
            if layer == 0:
                label = f"{_wrap(title, 24)}\n{label}"
            image = _show(ax, matrix, norm, label, left=col == 0, bottom=layer == layers - 1)
    _colorbar(fig, image, axes.ravel().tolist(), n)
    total = max(r.examples[0][""].shape[0] for r in results)
    shown = f"heads 0–{heads - 1} of {total}" if heads < total else "every head"
    _suptitle(fig, f"Attention matrices of one held-out sequence, {shown}",
              tail=_example_title(sequences, fig))  # fmt: skip
    files.save_figure(fig, path, dpi=100)
    plt.close(fig)
    return path


def compare_matrices(results, sequences, path: Path) -> Path:
    """Rows: layers; columns: runs (lln_diag: mixture and LLN branch); mean over heads."""
    plt = pyplot()
    groups = _panels(results)
    layers = max(len(r.layers) for r in results)
    size = 3.0 if layers <= 4 else 2.2
    fig, axes = plt.subplots(layers, len(groups), figsize=(1.8 + size * len(groups),
                             1.6 + size * layers), squeeze=False, layout="constrained")  # fmt: skip
    n = len(sequences.example_tokens)
    norm = _matrix_norm(n)
    image = None
    for col, (run, prefix, title) in enumerate(groups):
        for layer in range(layers):
            ax = axes[layer][col]
            if layer >= len(run.examples):
                ax.axis("off")
                continue
            matrix = run.examples[layer][prefix].mean(0)
            means = run.layers[layer].means()
            stats = f"H={means[prefix + 'entropy']:.3f}"
            if prefix + "gap" in means:
                stats += f", γ={means[prefix + 'gap']:.3f}"
            heading = f"{_wrap(title, 30)}\n" if layer == 0 else ""
            image = _show(ax, matrix, norm, f"{heading}layer {layer}: {stats}",
                          left=col == 0, bottom=layer == layers - 1)  # fmt: skip
    _colorbar(fig, image, axes.ravel().tolist(), n)
    _suptitle(
        fig,
        "Same sequence, runs side by side. Panel: the mean of the layer's heads' "
        "matrices; H, γ: means of the heads' values",
        tail=_example_title(sequences, fig),
    )
    files.save_figure(fig, path, dpi=100)
    plt.close(fig)
    return path


LAYER_PANELS = (
    ("entropy", "row entropy H (nats)"),
    ("gap", "spectral gap γ = 1 − |λ₂|"),
    ("log_var", "Var ln P"),
)


def compare_layers(results, sequences, path: Path) -> Path:
    """Entropy, gap and Var ln P against layer: a line per run (head mean), dots per head."""
    plt = pyplot()
    fig, axes = plt.subplots(1, len(LAYER_PANELS), figsize=(4.6 * len(LAYER_PANELS), 4.4),
                             layout="constrained")  # fmt: skip
    colours = {run.label: plt.cm.tab10(i % 10) for i, run in enumerate(results)}
    for ax, (key, ylabel) in zip(axes, LAYER_PANELS):
        for run, prefix, title in _panels(results):
            if prefix + key not in run.layers[0].per_head:
                continue
            per_head = torch.stack([m.per_head[prefix + key] for m in run.layers]).cpu()
            x = list(range(len(run.layers)))
            style = ":" if prefix else "-"
            ax.plot(x, per_head.nanmean(1).tolist(), style, marker="o", color=colours[run.label],
                    label=title)  # fmt: skip
            for h in range(per_head.shape[1]):
                ax.plot(x, per_head[:, h].tolist(), ".", color=colours[run.label], alpha=0.35,
                        ms=5)  # fmt: skip
        if key == "entropy":
            ln_n = math.log(sequences.seq_len)
            ax.axhline(ln_n, color="grey", ls="-.", lw=1, label=f"ln N = {ln_n:.2f} (uniform)")
        if key == "gap":
            ax.axhline(1.0, color="grey", ls="-.", lw=1, label="γ = 1 (uniform / rank one)")
        ax.set_xlabel("layer")
        ax.set_ylabel(ylabel)
        ax.set_xticks(range(max(len(r.layers) for r in results)))
        ax.grid(True, alpha=0.3)
    handles = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, handle)
    fig.legend(handles.values(), handles.keys(), loc="outside lower center", fontsize=8,
               ncol=min(4, len(handles)), frameon=False)  # fmt: skip
    _suptitle(fig, "Concentration per layer (line: mean over heads, dots: single heads)",
              _subtitle(sequences))  # fmt: skip
    files.save_figure(fig, path, dpi=110)
    plt.close(fig)
    return path


TRAINING_ROWS = (
    ("entropy", "row entropy H (nats)"),
    ("gap", "spectral gap γ"),
    ("log_var", "Var ln P"),
)


def over_training(results, path: Path) -> Path:
    """Rows: instruments; columns: runs that logged ``analysis_every``; a line per layer."""
    plt = pyplot()
    runs = [r for r in results if r.history]
    fig, axes = plt.subplots(len(TRAINING_ROWS), len(runs), sharex="col", sharey="row",
                             figsize=(1.4 + 4.6 * len(runs), 1.0 + 2.6 * len(TRAINING_ROWS)),
                             squeeze=False, layout="constrained")  # fmt: skip
    for col, run in enumerate(runs):
        layers = len(run.layers)
        colours = [plt.cm.viridis(i / max(1, layers - 1) * 0.9) for i in range(layers)]
        steps = [row["step"] for row in run.history]
        for r, (key, ylabel) in enumerate(TRAINING_ROWS):
            ax = axes[r][col]
            for i in range(layers):
                _training_line(ax, run.history, steps, f"layer{i}/{key}", "-", colours[i],
                               f"layer {i}")  # fmt: skip
                _training_line(ax, run.history, steps, f"layer{i}/{LLN_BRANCH}{key}", ":",
                               colours[i], None)  # fmt: skip
            if key == "entropy":
                n = run.history[-1].get("seq_len")
                if n:
                    ax.axhline(math.log(n), color="grey", ls="-.", lw=1,
                               label=f"ln N = {math.log(n):.2f}")  # fmt: skip
            if col == 0:
                ax.set_ylabel(ylabel)
            if r == 0:
                what = f"\nsolid: {MIXTURE}, dotted: {BRANCH}" if run.has_branch else ""
                ax.set_title(f"{run.label}{what}", fontsize=9)
                ax.legend(fontsize=7, ncol=2 if layers > 6 else 1)
            if r == len(TRAINING_ROWS) - 1:
                ax.set_xlabel("training step")
            ax.grid(True, alpha=0.3)
    seq_len = runs[0].history[-1].get("seq_len", "?")
    _suptitle(
        fig,
        "Instruments over training (pretrain analysis_every)",
        f"mean over heads, a fixed batch of validation blocks of N={seq_len} tokens",
    )
    files.save_figure(fig, path, dpi=110)
    plt.close(fig)
    return path


def _training_line(ax, rows: list[dict[str, Any]], steps, key: str, style, colour, label) -> None:
    points = [(s, row[key]) for s, row in zip(steps, rows) if row.get(key) is not None]
    if points:
        x, y = zip(*points)
        ax.plot(x, y, style, marker=".", color=colour, label=label)
