"""`llnbench analyze` end to end on CPU at tiny sizes, and its user errors."""

from __future__ import annotations

import csv
import json
import math

import pytest
from typer.testing import CliRunner

from llnbench.analysis import synthetic as synthetic_mode
from llnbench.cli import app

TINY = ["seq_len=64", "s2=[0.5,2.0]", "draws=1", "wandb.mode=disabled"]
PNGS = ("entropy_vs_s2.png", "gap_vs_s2.png", "logvar_vs_s2.png")


def run_analyze(tmp_path, *args: str):
    result = CliRunner().invoke(app, ["analyze", f"run_dir={tmp_path}", *TINY, *args])
    assert result.exit_code == 0, result.output
    return json.loads((tmp_path / "results.json").read_text()), result.output


def test_synthetic_writes_rows_files_plots_and_tables(tmp_path) -> None:
    data, output = run_analyze(tmp_path)
    expected = {"softmax", "lln", "lln_diag", "exp (d^-1/4)"} | (
        set() if "linear_elu" in data["skipped"] else {"linear_elu"}
    )
    rows = data["rows"]
    assert {r["mechanism"] for r in rows} == expected
    assert len(rows) == 2 * len(expected)
    assert all(r["seq_len"] == 64 and r["draws"] == 1 for r in rows)
    by = {(r["mechanism"], r["s2"]): r for r in rows}
    ln_n = math.log(64)
    for name in ("softmax", "lln"):
        assert by[(name, 2.0)]["entropy"] < by[(name, 0.5)]["entropy"] < ln_n
    assert abs(by[("exp (d^-1/4)", 2.0)]["entropy"] - ln_n) < 0.02
    assert by[("lln", 2.0)]["alpha"] > 1.0 and "alpha" not in by[("softmax", 2.0)]
    assert by[("lln_diag", 2.0)]["lln_branch_entropy"] == pytest.approx(by[("lln", 2.0)]["entropy"])
    assert [t["s2"] for t in data["theory"]] == [0.5, 2.0]
    assert data["reference_table"][1]["entropy"]["softmax"] == by[("softmax", 2.0)]["entropy"]
    assert data["reference_table"][1]["spec_entropy"]["lln"] == 4.30  # measurements.md §3.2

    metrics = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [(m["mechanism"], m["s2"]) for m in metrics] == [(r["mechanism"], r["s2"]) for r in rows]
    with (tmp_path / "analyze.csv").open() as handle:
        table = list(csv.DictReader(handle))
    assert len(table) == len(rows) and {"entropy", "gap", "log_var", "tau"} <= set(table[0])
    for name in PNGS:
        assert (tmp_path / name).stat().st_size > 10_000, name
    assert (tmp_path / "config.yaml").exists() and not (tmp_path / "wandb").exists()
    assert "softmax theory" in output and "reference table" in output and str(tmp_path) in output


def test_missing_mechanism_is_skipped_not_fatal(tmp_path, monkeypatch) -> None:
    """A registered mechanism whose module cannot be imported yet (written in parallel) is skipped."""
    real = synthetic_mode.build_attention

    def build(name, **kwargs):
        if name == "linear_elu":
            raise ModuleNotFoundError("No module named 'llnbench.attention.linear_elu'")
        return real(name, **kwargs)

    monkeypatch.setattr(synthetic_mode, "build_attention", build)
    data, output = run_analyze(tmp_path, "attentions=[softmax,linear_elu]")
    assert {r["mechanism"] for r in data["rows"]} == {"softmax"}
    assert "No module named" in data["skipped"]["linear_elu"]
    assert "skipping linear_elu" in output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["attentions=[flash]"], "unknown attention 'flash'; allowed: softmax"),
        (["s2=[0.5,-1.0]"], "s2 must be a non-empty list of positive numbers"),
        (["seq_len=1"], "seq_len must be in 2..1024"),
        (["draws=0"], "draws must be positive"),
        (["+options.lln.bogus=1"], "unknown option options.lln.bogus"),
        (["mode=checkpoint"], "analyze mode=checkpoint needs checkpoint=RUN_DIR"),
        (["checkpoint=runs/x"], "checkpoint is only read in checkpoint mode; add mode=checkpoint"),
        (["mode=checkpoint", "checkpoint=x", "max_len=1024"], "max_len must be in 2..512"),
        (["mode=sideways"], "bad value 'sideways' for mode; allowed: synthetic, checkpoint"),
    ],
    ids=[
        "attention",
        "s2",
        "seq_len",
        "draws",
        "option",
        "checkpoint",
        "synthetic-checkpoint",
        "max_len",
        "mode",
    ],
)
def test_user_errors_are_one_line_exit_2(tmp_path, args: list[str], message: str) -> None:
    result = CliRunner().invoke(app, ["analyze", f"run_dir={tmp_path / 'run'}", *args])
    assert result.exit_code == 2
    text = result.output.strip()
    assert message in text and "Traceback" not in text and len(text.splitlines()) == 1, text
    assert not (tmp_path / "run").exists()  # nothing is created for a run that cannot start


def test_print_config_shows_defaults() -> None:
    result = CliRunner().invoke(app, ["analyze", "--print-config"])
    assert result.exit_code == 0
    assert "mode: synthetic" in result.output and "- exp" in result.output
    assert "seq_len: 512" in result.output and "checkpoint: null" in result.output
