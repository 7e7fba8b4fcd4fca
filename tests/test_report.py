"""`llnbench report` over real (tiny) runs: sections, published numbers, missing pieces named."""

from __future__ import annotations

from helpers import tiny_pretrain_args
from typer.testing import CliRunner

from llnbench.cli import app


def invoke(*args: str):
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result


def test_report_collects_scale_pretrain_and_analyze_runs(tmp_path) -> None:
    runs = tmp_path / "runs"
    invoke("scale", "--attention", "softmax,lln", "--min-len", "64", "--max-len", "128",
           "--device", "cpu", "--heads", "2", "--mode", "fwd", "min_time_s=0", "warmup=1",
           "max_repeats=3", "wandb.mode=disabled", "--out", str(runs / "scale"))  # fmt: skip
    invoke("pretrain", *tiny_pretrain_args(tmp_path, runs / "pretrain-lln", "attention=lln"))
    invoke("analyze", "s2=[0.5,2.0]", "seq_len=64", "draws=1", "attentions=[softmax,lln]",
           "wandb.mode=disabled", f"run_dir={runs / 'analyze'}")  # fmt: skip
    out = tmp_path / "report"
    result = invoke("report", str(runs), f"run_dir={out}")
    text = (out / "report.md").read_text()
    assert "## Time and memory vs sequence length" in text and "| 64 |" in text
    assert "32.1 GB / 6.8 s" in text  # the paper's Table 2 beside ours
    assert "## Masked-language-model pretraining" in text and "lln (pretrain-lln)" in text
    assert "## Attention concentration" in text and "H softmax" in text
    assert "- no `llnbench glue` runs (GLUE scores)" in text
    assert "- no model-scope scale run" in text
    for name in ("scale_0.png", "mlm_curves.png", "report_scale.csv", "report_pretrain.csv"):
        assert (out / name).stat().st_size > 0
    assert "report.md" in result.output


def test_report_without_runs_is_one_line(tmp_path) -> None:
    result = CliRunner().invoke(app, ["report", str(tmp_path), f"run_dir={tmp_path / 'out'}"])
    assert result.exit_code == 2
    assert "no llnbench run directories found" in result.output
    missing = CliRunner().invoke(app, ["report", str(tmp_path / "nope")])
    assert missing.exit_code == 2 and "does not exist" in missing.output
    assert not (tmp_path / "out").exists()  # nothing written for a failed report
