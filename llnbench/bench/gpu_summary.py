"""The ``gpu-check`` summary: each goal of issue 19 measured from the run's own files.

Read-only over the results folder that ``llnbench.bench.gpu_check`` filled. The scale rows give
the speed ratios, all against the fastest softmax of the same run at the same N (the minimum over
every SDPA backend timed), and the roofline multiple; the probes give the bf16 verdicts, the
layer profile and the longest model step; the pretraining runs their throughput with and
without compile. A scale step cut by its budget leaves no scale.json: its metrics.jsonl rows
(one per finished cell) are read instead. ``markdown`` is the tables printed at the end, in the
form the README's GPU section takes.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from llnbench.bench.gpu_plan import Step

BIDIR, CAUSAL = "lln/triton", "lln/triton"  # the own kernels the goals are about
GOALS = [  # (key, what, target, comparison)
    ("bidir16k_ms", "bidirectional LLN (triton) layer fwd+bwd, N=16k, ms", 0.25, "<="),
    ("bidir16k", "bidirectional LLN (triton) vs fastest softmax, N=16k", 25.0, ">="),
    ("bidir64k_ms", "bidirectional LLN (triton) layer fwd+bwd, N=64k, ms", 0.6, "<="),
    ("floor64k", "bidirectional LLN (triton) time / bandwidth floor, N=64k", 2.5, "<="),
    ("causal16k", "causal LLN (triton) vs fastest causal softmax, N=16k", 6.0, ">="),
    ("causal64k", "causal LLN (triton) vs fastest causal softmax, N=64k", 20.0, ">="),
    ("model4k", "compiled model=base train step, LLN vs compiled softmax, N=4k", 1.5, ">="),
    ("model16k", "compiled model=base train step, LLN vs compiled softmax, N=16k", 5.0, ">="),
    ("model64k", "compiled model=base train step, LLN vs compiled softmax, N=64k", 15.0, ">="),
    ("longest", "model=base LLN train step at the longest N (256k), bf16, finite loss", None, "=="),
    ("nan64k", "bf16 LLN layer at N=64k: no NaN or inf (fwd+bwd, every backend)", None, "=="),
]


def scale_rows(out: Path, name: str) -> list[dict[str, Any]]:
    """A scale step's rows: scale.json, else (cut by its budget) its metrics.jsonl."""
    path = out / name / "scale.json"
    if path.exists():
        return json.loads(path.read_text())["rows"]
    metrics = out / name / "metrics.jsonl"
    if not metrics.exists():
        return []
    rows = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    return [r for r in rows if "seq_len" in r and "status" in r]


def _ok(row: dict[str, Any], n: int) -> bool:
    return (row["seq_len"] == n and row["status"] == "ok" and row.get("mode") == "fwdbwd"
            and row.get("ms_median") is not None)  # fmt: skip


def _ms(rows: list[dict[str, Any]], series: str, n: int) -> float | None:
    for row in rows:
        if (row.get("series") or row["attention"]) == series and _ok(row, n):
            return row["ms_median"]
    return None


def fastest_softmax(rows: list[dict[str, Any]], n: int) -> tuple[float, str] | None:
    """The fastest softmax row at N over every SDPA backend timed: (ms, its series)."""
    timed = [r for r in rows if r["attention"] == "softmax" and _ok(r, n)]
    if not timed:
        return None
    best = min(timed, key=lambda r: r["ms_median"])
    label = best.get("sdpa_backend") or best.get("series") or "softmax"
    return best["ms_median"], f"softmax[{label}]" if "[" not in label else label


def _ratio(rows, fast: str, n: int) -> tuple[float | None, str]:
    base, ms = fastest_softmax(rows, n), _ms(rows, fast, n)
    if base is None or ms is None:
        return None, f"{fast} or softmax has no ok row at N={n}"
    return base[0] / ms, f"{base[1]} {base[0]:.3g} ms, {fast} {ms:.3g} ms"


def _load(path: Path) -> Any:
    return json.loads(path.read_text()) if path.exists() else None


def goals(out: Path, n: dict[str, Any]) -> list[dict]:
    """Each goal's measured value from this run's files, and pass / gap / not measured."""
    bidir, causal, model = (scale_rows(out, f"scale-{s}") for s in ("bidir", "causal", "model"))
    n_long, n_mid = n["bidir"], n["mid"]
    measured: dict[str, tuple[float | bool | None, str]] = {
        "bidir16k": _ratio(bidir, BIDIR, n_mid),
        "causal16k": _ratio(causal, CAUSAL, n_mid),
        "causal64k": _ratio(causal, CAUSAL, n_long),
    }
    for key, at in (("bidir16k_ms", n_mid), ("bidir64k_ms", n_long)):
        ms = _ms(bidir, BIDIR, at)
        measured[key] = (ms, f"{BIDIR} at N={at}" if ms else f"no ok {BIDIR} row at N={at}")
    others = (("bidir16k", bidir, "lln/torch", n_mid), ("causal16k", causal, "lln/fla", n_mid),
              ("causal64k", causal, "lln/fla", n_long))  # fmt: skip
    for key, rows, series, at in others:  # the other backends, for the record
        other = _ratio(rows, series, at)[0]
        if other is not None:
            value, note = measured[key]
            measured[key] = (value, note + f"; {series} {other:.1f}x")
    for key, at in zip(("model4k", "model16k", "model64k"), n["model"]):
        measured[key] = _ratio(model, "lln", at)
    floor_row = next((r for r in bidir if r.get("series") == BIDIR and _ok(r, n_long)), None)
    if floor_row and floor_row.get("x_floor"):
        measured["floor64k"] = (floor_row["x_floor"], f"{floor_row['ms_median']:.3g} ms vs "
                                f"floor {floor_row['floor_ms']:.3g} ms ({floor_row['bound']})")  # fmt: skip
    else:
        measured["floor64k"] = (None, f"no {BIDIR} row with a roofline floor at this N")
    measured["longest"] = longest_verdict(_load(out / "longest.json"), max(n["longest"]))
    measured["nan64k"] = nan_verdict(_load(out / "probe-64k.json"))
    table = []
    for key, what, target, op in GOALS:
        value, note = measured.get(key, (None, "not measured"))
        if value is None:
            verdict = "not measured"
        elif op == "==":
            verdict = "pass" if value is True else "fail"
        else:
            good = value >= target if op == ">=" else value <= target
            verdict = "pass" if good else "gap"
        shown = value if isinstance(value, bool) or value is None else round(value, 3)
        table.append({"key": key, "goal": what, "target": f"{op} {target}" if target else "true",
                      "measured": shown, "verdict": verdict, "note": note})  # fmt: skip
    return table


def longest_verdict(rows: list[dict] | None, n: int) -> tuple[bool | None, str]:
    if not rows:
        return None, "the longest-step probe did not run"
    notes = [f"{_k(r['seq_len'])}: {r['status']}"
             + (f" {r['step_ms']:.0f} ms, {r['peak_gib']:.1f} GiB, finite {r['finite']}"
                if r["status"] == "ok" and r.get("peak_gib") is not None else "")
             + (f" ({r['reason']})" if r.get("reason") else "") for r in rows]  # fmt: skip
    at_n = next((r for r in rows if r["seq_len"] == n), None)
    if at_n is None or at_n["status"] != "ok":
        return (None if at_n is None else False), "; ".join(notes)
    return bool(at_n["finite"]), "; ".join(notes)


def _k(n: int) -> str:
    return f"{n // 1024}k" if n >= 1024 and n % 1024 == 0 else str(n)


def nan_verdict(probe: dict | None) -> tuple[bool | None, str]:
    if not probe:
        return None, "probe did not run"
    flags = [r.get("finite") for r in probe.values()]
    note = ", ".join(f"{k}: {r.get('finite') if r.get('finite') is not None else r.get('error')}"
                     for k, r in probe.items())  # fmt: skip
    if any(f is False for f in flags):
        return False, note
    ok = [f for f in flags if f is not None]
    return (True if ok else None), note + ("" if ok else "; no backend ran")


def pretrain_rows(out: Path) -> list[dict[str, Any]]:
    rows = []
    for run in sorted(out.glob("pretrain-*")):
        metrics = run / "metrics.jsonl"
        if not metrics.exists():
            continue
        train = [json.loads(ln) for ln in metrics.read_text().splitlines() if "train/loss" in ln]
        results = _load(run / "results.json") or {}
        last = train[-1] if train else {}
        rows.append({"run": run.name, "steps": last.get("step"),
                     "compile": results.get("compile"),
                     "tokens_per_s": results.get("tokens_per_s_after_first_step")
                     or last.get("train/tokens_per_s"),
                     "first_step_s": results.get("first_step_s"),
                     "step_time_s": last.get("train/step_time_s"),
                     "peak_mem_mib": last.get("train/peak_mem_mib"),
                     "val_loss": results.get("final", {}).get("loss"),
                     "finite": all(_finite(r.get("train/loss")) for r in train) if train else None})  # fmt: skip
    return rows


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def _num(x: Any, spec: str) -> str:
    return "—" if x is None else format(x, spec)


def _cell(text: Any) -> str:
    return str(text).replace("|", "/")


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]


def baseline_lines(out: Path, n: dict[str, Any]) -> list[str]:
    """Softmax on each SDPA backend at the goal lengths: which one is the baseline, and by how
    much it beats the others."""
    cells = []
    for step in ("bidir", "causal"):
        rows = scale_rows(out, f"scale-{step}")
        for at in sorted({n["mid"], n["bidir"]}):
            timed = [r for r in rows if r["attention"] == "softmax" and r["seq_len"] == at
                     and r.get("series", "").startswith("softmax[")]  # fmt: skip
            for r in timed:
                cells.append([step, at, r["series"], _num(r.get("ms_median"), ".3f"),
                              r["status"] + (f": {r['reason']}" if r.get("reason") else "")])  # fmt: skip
    return _table(["scale", "N", "softmax on", "ms fwd+bwd", "status"], cells) if cells else []


def profile_lines(out: Path) -> list[str]:
    rows = _load(out / "profile.json") or []
    cells = [[r["series"], r["seq_len"], r.get("backend") or "—", _num(r.get("wall_ms"), ".3f"),
              _num(r.get("kernel_ms"), ".3f"), _num(r.get("launches"), ".0f"),
              _num(r.get("graph_ms"), ".3f"),
              r["status"] + (f": {r.get('reason') or r.get('graph_error')}"
                             if r.get("reason") or r.get("graph_error") else ""),
              "; ".join(r.get("top_kernels") or [])] for r in rows]  # fmt: skip
    header = ["layer", "N", "backend", "wall ms", "kernel ms", "launches", "CUDA graph ms",
              "status", "heaviest kernels"]  # fmt: skip
    return _table(header, cells) if cells else []


def model_lines(out: Path) -> list[str]:
    rows = [r for r in scale_rows(out, "scale-model") if r.get("mode") == "fwdbwd"]
    cells = [[r.get("series") or r["attention"], r["seq_len"], r.get("compile"),
              _num(r.get("ms_median"), ".1f"), _num(r.get("peak_mib"), ".0f"),
              r.get("backend") or r.get("sdpa_backend") or "—",
              r["status"] + (f": {r['reason']}" if r.get("reason") else "")] for r in rows]  # fmt: skip
    header = ["model=base step", "N", "compile", "ms", "peak MiB", "backend", "status"]
    return _table(header, cells) if cells else []


def longest_lines(out: Path) -> list[str]:
    rows = _load(out / "longest.json") or []
    cells = [[r["seq_len"], r["dtype"], r["status"], _num(r.get("step_ms"), ".0f"),
              _num(r.get("peak_gib"), ".1f"), r.get("finite"), r.get("backend") or "—",
              r.get("reason") or ""] for r in rows]  # fmt: skip
    header = ["longest step N", "dtype", "status", "step ms", "peak GiB", "finite", "backend",
              "why"]  # fmt: skip
    return _table(header, cells) if cells else []


def markdown(device: str, versions: str, steps: Sequence[Step], goal_rows, pretrain,
             out: Path | None = None, n: dict[str, Any] | None = None) -> str:  # fmt: skip
    lines = [f"**gpu-check** on {device}; {versions}", ""]
    lines += _table(["goal", "target", "measured", "verdict", "how"],
                    [[g["goal"], g["target"], g["measured"], g["verdict"], g["note"]]
                     for g in goal_rows])  # fmt: skip
    if out is not None:
        for block in (baseline_lines(out, n) if n else [], model_lines(out), profile_lines(out),
                      longest_lines(out)):  # fmt: skip
            if block:
                lines += ["", *block]
    if pretrain:
        lines += ["", *_table(
            ["pretraining run", "compile", "steps", "tokens/s", "first step s", "step s",
             "peak MiB", "val loss", "finite"],
            [[r["run"], r.get("compile"), r["steps"], _num(r["tokens_per_s"], ".0f"),
              _num(r.get("first_step_s"), ".1f"), _num(r["step_time_s"], ".3f"),
              _num(r["peak_mem_mib"], ".0f"), _num(r["val_loss"], ".3f"), r["finite"]]
             for r in pretrain],
        )]  # fmt: skip
    steps_rows = [[s.name, s.status, f"{s.seconds:.0f}", s.detail] for s in steps]
    lines += ["", *_table(["step", "status", "s", "detail"], steps_rows)]
    return "\n".join(lines) + "\n"


def versions_line() -> str:
    import torch

    from llnbench.bench.machine import package_version

    parts = [f"torch {torch.__version__}", f"CUDA {torch.version.cuda}"]
    for name in ("triton", "fla-core"):
        parts.append(f"{name} {package_version(name)}")
    return ", ".join(parts)
