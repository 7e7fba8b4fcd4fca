"""The ``gpu-check`` summary: each goal of issue 12 measured from the run's own files.

Read-only over the results folder that ``llnbench.bench.gpu_check`` filled: the scale rows give
the speed ratios (all measured in the same run) and the roofline multiple, the NaN probe the bf16
verdict, the pretraining runs their throughput; ``markdown`` is the table printed at the end.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from llnbench.bench.gpu_check import Step

GOALS = [  # (key, what, target, comparison)
    ("bidir16k", "bidirectional LLN fwd+bwd vs SDPA-flash, N=16k", 20.0, ">="),
    ("bidir64k", "bidirectional LLN fwd+bwd vs SDPA-flash, N=64k", 50.0, ">="),
    ("causal16k", "causal LLN fwd+bwd vs causal SDPA-flash, N=16k", 6.0, ">="),
    ("floor64k", "LLN layer time / bandwidth floor, N=64k", 3.0, "<="),
    ("nan64k", "bf16 at N=64k: no NaN or inf (fwd+bwd, every backend)", None, "=="),
    ("model4k", "model train step, LLN vs softmax, N=4k", 2.0, ">="),
    ("model16k", "model train step, LLN vs softmax, N=16k", 4.0, ">="),
]


def _rows(out: Path, name: str) -> list[dict[str, Any]]:
    path = out / name / "scale.json"
    return json.loads(path.read_text())["rows"] if path.exists() else []


def _ms(rows: list[dict[str, Any]], series: str, n: int) -> float | None:
    for row in rows:
        same = (row.get("series") or row["attention"]) == series and row["seq_len"] == n
        if same and row["status"] == "ok" and row.get("mode") == "fwdbwd":
            return row["ms_median"]
    return None


def _ratio(rows, fast: str, n: int) -> tuple[float | None, str]:
    base, ms = _ms(rows, "softmax", n), _ms(rows, fast, n)
    if base is None or ms is None:
        return None, f"{fast} or softmax has no ok row at N={n}"
    return base / ms, f"softmax {base:.3g} ms, {fast} {ms:.3g} ms"


def goals(out: Path, n_long: int, n_mid: int, model_lens: tuple[int, int]) -> list[dict]:
    """Each goal's measured value from this run's files, and pass / fail / not measured."""
    bidir, causal, model = (_rows(out, f"scale-{s}") for s in ("bidir", "causal", "model"))
    fastest = "lln/triton"
    measured: dict[str, tuple[float | bool | None, str]] = {
        "bidir16k": _ratio(bidir, fastest, n_mid),
        "bidir64k": _ratio(bidir, fastest, n_long),
        "causal16k": _ratio(causal, "lln/fla", n_mid),
        "model4k": _ratio(model, "lln", model_lens[0]),
        "model16k": _ratio(model, "lln", model_lens[1]),
    }
    torch_bidir = _ratio(bidir, "lln/torch", n_mid)[0]
    if torch_bidir is not None:
        value, note = measured["bidir16k"]
        measured["bidir16k"] = (value, note + f"; lln/torch {torch_bidir:.1f}x")
    floor_row = next((r for r in bidir if r.get("series") == fastest and r["seq_len"] == n_long
                      and r["status"] == "ok"), None)  # fmt: skip
    if floor_row and floor_row.get("x_floor"):
        measured["floor64k"] = (floor_row["x_floor"], f"{floor_row['ms_median']:.3g} ms vs "
                                f"floor {floor_row['floor_ms']:.3g} ms ({floor_row['bound']})")  # fmt: skip
    else:
        measured["floor64k"] = (None, "no lln/triton row with a roofline floor at this N")
    probe_path = out / "probe-64k.json"
    if probe_path.exists():
        probe_rows = json.loads(probe_path.read_text())
        flags = [r.get("finite") for r in probe_rows.values()]
        note = ", ".join(f"{k}: {r.get('finite') if r.get('finite') is not None else r.get('error')}"
                         for k, r in probe_rows.items())  # fmt: skip
        ok = all(f is True for f in flags) if flags and None not in flags else None
        if ok is None and any(f is False for f in flags):
            ok = False
        measured["nan64k"] = (ok, note)
    else:
        measured["nan64k"] = (None, "probe did not run")
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
        shown = value if isinstance(value, bool) or value is None else round(value, 2)
        table.append({"goal": what, "target": f"{op} {target}" if target else "true",
                      "measured": shown, "verdict": verdict, "note": note})  # fmt: skip
    return table


def pretrain_rows(out: Path) -> list[dict[str, Any]]:
    rows = []
    for run in sorted(out.glob("pretrain-*")):
        metrics = run / "metrics.jsonl"
        results = run / "results.json"
        if not metrics.exists():
            continue
        train = [json.loads(ln) for ln in metrics.read_text().splitlines() if "train/loss" in ln]
        final = json.loads(results.read_text()).get("final", {}) if results.exists() else {}
        last = train[-1] if train else {}
        rows.append({"run": run.name, "steps": last.get("step"),
                     "tokens_per_s": last.get("train/tokens_per_s"),
                     "step_time_s": last.get("train/step_time_s"),
                     "peak_mem_mib": last.get("train/peak_mem_mib"),
                     "val_loss": final.get("loss"),
                     "finite": all(_finite(r.get("train/loss")) for r in train) if train else None})  # fmt: skip
    return rows


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and x == x and abs(x) != float("inf")


def markdown(device: str, versions: str, steps: Sequence[Step], goal_rows, pretrain) -> str:
    lines = [f"**gpu-check** on {device}; {versions}", "",
             "| goal | target | measured | verdict | how |", "|---|---|---|---|---|"]  # fmt: skip
    lines += [f"| {g['goal']} | {g['target']} | {g['measured']} | {g['verdict']} | {g['note']} |"
              for g in goal_rows]  # fmt: skip
    lines += ["", "| step | status | s | detail |", "|---|---|---|---|"]
    lines += [f"| {s.name} | {s.status} | {s.seconds:.0f} | {s.detail.replace('|', '/')} |"
              for s in steps]  # fmt: skip
    if pretrain:
        lines += ["", "| pretraining run | steps | tokens/s | step s | peak MiB | val loss | finite |",
                  "|---|---|---|---|---|---|---|"]  # fmt: skip
        for r in pretrain:
            cells = [r["run"], r["steps"], _num(r["tokens_per_s"], ".0f"), _num(r["step_time_s"], ".3f"),
                     _num(r["peak_mem_mib"], ".0f"), _num(r["val_loss"], ".3f"), r["finite"]]  # fmt: skip
            lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"


def _num(x: Any, spec: str) -> str:
    return "—" if x is None else format(x, spec)


def versions_line() -> str:
    import torch

    from llnbench.bench.machine import package_version

    parts = [f"torch {torch.__version__}", f"CUDA {torch.version.cuda}"]
    for name in ("triton", "fla-core"):
        parts.append(f"{name} {package_version(name)}")
    return ", ".join(parts)
