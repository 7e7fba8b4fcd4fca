"""`llnbench scale` end to end on CPU at tiny sizes, and its failure handling."""

from __future__ import annotations

import csv
import json
import time

import pytest
import torch
from typer.testing import CliRunner

from llnbench.bench.scale_report import growth_per_doubling, summarise
from llnbench.cli import app
from llnbench.jobs import scale as scale_job

FIELDS = {"attention", "seq_len", "mode", "causal", "ms_median", "ms_p20", "ms_p80", "peak_mib",
          "status"}  # fmt: skip
FAST = ["--device", "cpu", "--heads", "2", "warmup=1", "min_time_s=0", "max_repeats=3"]


def run_scale(tmp_path, *args: str):
    result = CliRunner().invoke(app, ["scale", "--out", str(tmp_path), *FAST, *args])
    assert result.exit_code == 0, result.output
    return json.loads((tmp_path / "scale.json").read_text()), result.output


def test_scale_writes_rows_files_and_table(tmp_path) -> None:
    data, output = run_scale(
        tmp_path, "--attention", "softmax,lln,lln_diag", "--min-len", "64", "--max-len", "128",
        "wandb.mode=offline",
    )  # fmt: skip
    rows = data["rows"]
    # softmax on SDPA flash and math (CPU's kernels), their fastest as `softmax`, lln, lln_diag
    assert len(rows) == 5 * 2 * 2
    assert [r["series"] for r in rows[:12:4]] == ["softmax[flash]", "softmax[math]", "softmax"]
    assert all(FIELDS <= set(r) and r["status"] == "ok" for r in rows)
    assert all(r["ms_p20"] <= r["ms_median"] <= r["ms_p80"] for r in rows)
    assert all(r["peak_mib"] is None for r in rows)  # not measured on CPU, never estimated
    assert {"torch", "device", "dtype", "llnbench_commit", "threads", "cpu"} <= set(data["machine"])
    with (tmp_path / "scale.csv").open() as handle:
        assert len(list(csv.DictReader(handle))) == len(rows)
    assert (tmp_path / "scale.png").stat().st_size > 10_000
    assert (tmp_path / "config.yaml").exists() and (tmp_path / "results.json").exists()
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == len(rows)
    assert (tmp_path / "wandb").is_dir()
    assert "softmax (SDPA) time or memory" in output and str(tmp_path) in output
    assert "softmax[math]" in output  # series names are not eaten as rich markup


def test_fastest_sdpa_backend_is_the_softmax_baseline(tmp_path, monkeypatch) -> None:
    from llnbench.bench import cells

    # efficient has no CPU kernel: its rows are errors, and the fastest of the others is softmax
    monkeypatch.setattr(cells, "SDPA_CPU", ("math", "efficient", "flash"))
    data, _ = run_scale(tmp_path, "--attention", "softmax,lln", "--min-len", "64", "--max-len",
                        "128", "--mode", "fwd", "wandb.mode=disabled")  # fmt: skip
    rows = data["rows"]
    by = {(r["series"], r["seq_len"]): r for r in rows}
    for n in (64, 128):
        ok = [by[(f"softmax[{b}]", n)] for b in ("math", "flash")]
        assert by[("softmax[efficient]", n)]["status"] == "error"
        best = by[("softmax", n)]
        assert best["ms_median"] == min(r["ms_median"] for r in ok)
        assert best["sdpa_backend"] == min(ok, key=lambda r: r["ms_median"])["sdpa_backend"]
        assert "efficient error" in best["fastest_of"]
        ratio = summarise(rows)["lln/fwd"]["speedup_vs_softmax"][n]
        assert ratio == best["ms_median"] / by[("lln", n)]["ms_median"]
    assert data["machine"]["sdpa_backend"] == "math,efficient,flash (fastest per cell)"


def test_pinned_sdpa_backend_times_that_one_alone(tmp_path) -> None:
    data, _ = run_scale(tmp_path, "--attention", "softmax", "--min-len", "64", "--max-len", "64",
                        "--mode", "fwd", "--sdpa-backend", "math", "wandb.mode=disabled")  # fmt: skip
    assert [(r["series"], r["sdpa_backend"], r["status"]) for r in data["rows"]] == [
        ("softmax", "math", "ok")]  # fmt: skip


def test_long_cells_print_a_heartbeat_naming_what_runs(tmp_path, monkeypatch) -> None:
    real = scale_job.make_call

    def slow(*args):
        fn = real(*args)

        def call() -> None:
            time.sleep(0.25)
            fn()

        return call

    monkeypatch.setattr(scale_job, "make_call", slow)
    monkeypatch.setenv("LLNBENCH_PROGRESS_SECONDS", "0.1")
    _, output = run_scale(tmp_path, "--attention", "lln", "--min-len", "64", "--max-len", "64",
                          "--mode", "fwd", "wandb.mode=disabled")  # fmt: skip
    beats = [ln for ln in output.splitlines() if "in this cell" in ln]
    assert beats and all(ln.startswith("scale: cell 1/1 lln N=64 fwd: ") for ln in beats)
    assert any("warm-up 1/1" in ln or "(timing)" in ln for ln in beats)
    assert "scale: cell 1/1 lln N=64 fwd: " in output and " ms, elapsed " in output


def test_eta_extrapolates_each_series_by_its_growth() -> None:
    from llnbench.bench.cell_progress import Cell, CellProgress
    from llnbench.console import console

    cells = [Cell("softmax", n, "fwd", 2.0) for n in (64, 128, 256)]
    cells += [Cell("lln", n, "fwd", 1.0) for n in (64, 128, 256)]
    progress = CellProgress(cells, console, enabled=False)
    progress.walls = {0: 1.0, 3: 2.0}  # the first cell of each series
    progress.index = 4
    progress._cell_start = time.perf_counter()
    # softmax: 4 + 16 s; lln: 4 (running, ~0 s in) + 8 s
    assert progress.eta_s() == pytest.approx(32.0, abs=0.1)


def test_causal_skips_mechanisms_without_causal_form(tmp_path) -> None:
    data, _ = run_scale(tmp_path, "--attention", "lln,lara", "--causal", "--min-len", "64",
                        "--max-len", "64", "--mode", "fwd", "wandb.mode=disabled")  # fmt: skip
    status = {r["attention"]: (r["status"], r["reason"]) for r in data["rows"]}
    assert status == {"lln": ("ok", None), "lara": ("skipped", "no causal form")}


def test_oom_is_a_row_and_skips_longer_lengths(tmp_path, monkeypatch) -> None:
    real = scale_job.make_call

    def fake(cfg, name, n, mode, device, dtype):
        if name == "softmax" and n >= 128:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(cfg, name, n, mode, device, dtype)

    monkeypatch.setattr(scale_job, "make_call", fake)
    data, _ = run_scale(tmp_path, "--attention", "softmax,lln", "--min-len", "64", "--max-len",
                        "256", "--mode", "fwd", "wandb.mode=disabled")  # fmt: skip
    softmax = {r["seq_len"]: (r["status"], r["reason"]) for r in data["rows"]
               if r["series"] == "softmax[flash]"}  # fmt: skip
    assert softmax == {64: ("ok", None), 128: ("oom", "out of memory"),
                       256: ("skipped", "oom at N=128")}  # fmt: skip
    fastest = [r for r in data["rows"] if r["series"] == "softmax"]
    assert [r["status"] for r in fastest] == ["ok", "oom", "skipped"]
    assert fastest[1]["reason"] == "no SDPA backend ran: flash oom, math oom"
    assert all(r["status"] == "ok" for r in data["rows"] if r["attention"] == "lln")


def test_errors_become_rows(tmp_path, monkeypatch) -> None:
    def broken(*args):
        raise RuntimeError("No available kernel. Aborting execution.\nmore detail")

    monkeypatch.setattr(scale_job, "make_call", broken)
    data, _ = run_scale(tmp_path, "--attention", "lln", "--min-len", "64", "--max-len", "64",
                        "--mode", "fwd", "wandb.mode=disabled")  # fmt: skip
    assert data["rows"][0]["status"] == "error"
    assert data["rows"][0]["reason"] == "No available kernel. Aborting execution."


def test_summary_ratios_and_growth() -> None:
    rows = [
        {"attention": "softmax", "seq_len": n, "mode": "fwd", "status": "ok", "ms_median": n * n,
         "peak_mib": n * n}
        for n in (64, 128, 256)
    ] + [
        {"attention": "lln", "seq_len": n, "mode": "fwd", "status": "ok", "ms_median": 100 * n,
         "peak_mib": 10 * n}
        for n in (64, 128, 256)
    ]  # fmt: skip
    summary = summarise(rows)["lln/fwd"]
    assert summary["speedup_vs_softmax"] == {64: 0.64, 128: 1.28, 256: 2.56}
    assert summary["crossover_len"] == 128
    assert abs(summary["time_growth_per_doubling"] - 2.0) < 1e-12
    assert abs(growth_per_doubling([(64, 1.0), (128, 4.0)]) - 4.0) < 1e-12


def test_model_scope_times_a_training_step(tmp_path) -> None:
    data, output = run_scale(
        tmp_path, "--scope", "model", "--attention", "softmax,lln_diag", "--min-len", "32",
        "--max-len", "64", "model.layers=1", "model.hidden=64", "model.heads=1", "model.ffn=128",
        "wandb.mode=disabled", "--sdpa-backend", "default",
    )  # fmt: skip
    assert len(data["rows"]) == 2 * 2 * 2
    assert all(r["status"] == "ok" and r["scope"] == "model" for r in data["rows"])
    assert {r["head_dim"] for r in data["rows"]} == {64}
    assert "model base (1 layers x 64, 1 heads), one training step" in output


def test_budget_counts_the_calls_not_a_one_off_compile(tmp_path, monkeypatch) -> None:
    """Slow calls skip the longer lengths; a slow first call alone (compile, JIT) does not."""
    real = scale_job.make_call

    def shaped(cfg, name, n, mode, device, dtype):
        fn, calls = real(cfg, name, n, mode, device, dtype), []

        def call() -> None:
            calls.append(1)
            if name == "lln" or len(calls) == 1:  # lln: every call slow; lln_diag: the first
                time.sleep(0.6 if name == "lln_diag" else 0.1)
            fn()

        return call

    monkeypatch.setattr(scale_job, "make_call", shaped)
    data, _ = run_scale(tmp_path, "--attention", "lln,lln_diag", "--min-len", "64", "--max-len",
                        "128", "--mode", "fwd", "budget_s=0.3", "wandb.mode=disabled")  # fmt: skip
    status = {(r["attention"], r["seq_len"]): (r["status"], r["reason"]) for r in data["rows"]}
    assert status[("lln", 128)] == ("skipped", "over the 0.3 s budget at N=64")
    assert status[("lln_diag", 128)] == ("ok", None)
