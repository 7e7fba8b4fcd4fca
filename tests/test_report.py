"""`llnbench report` over real (tiny) runs: sections, published numbers, missing pieces named."""

from __future__ import annotations

import json
import shutil

from helpers import tiny_pretrain_args
from typer.testing import CliRunner

from llnbench.cli import app
from llnbench.reporting.discover import Run, find_runs
from llnbench.reporting.sections import cell, glue_section, table


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
    # the GPU check's own tiny runs (make gpu-check --dry-run) are not the user's
    shutil.copytree(runs / "analyze", runs / "gpu-check" / "20261204" / "analyze")
    out = tmp_path / "report"
    result = invoke("report", str(runs), f"run_dir={out}")
    assert "report: 1 scale run, 1 pretrain run, 0 glue runs, 1 analyze run, 0 lra runs;" in (
        result.output
    )  # counted in words, not printed as a Python dict
    assert "{'" not in result.output and "left out" in result.output
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


def _fake_run(folder, job: str) -> None:
    folder.mkdir(parents=True)
    (folder / "results.json").write_text(json.dumps({"job": job, "tasks": {}}))


def test_runs_under_gpu_check_count_only_when_named(tmp_path) -> None:
    runs = tmp_path / "runs"
    _fake_run(runs / "glue" / "mine", "glue")
    _fake_run(runs / "gpu-check" / "20261204" / "glue-tiny", "glue")
    _fake_run(runs / "gpu-check" / "20261204" / "lra-tiny", "lra")
    left_out: list = []
    found = find_runs([str(runs)], left_out=left_out)
    assert [r.path.name for r in found["glue"]] == ["mine"] and not found["lra"]
    assert left_out == [runs / "gpu-check"]
    named = find_runs([str(runs / "gpu-check")], left_out=left_out)
    assert [r.path.name for r in named["glue"]] == ["glue-tiny"] and len(named["lra"]) == 1
    stamp = find_runs([str(runs / "gpu-check" / "20261204")])
    assert len(stamp["glue"]) == 1


def glue_run(tmp_path, folder: str, attention: str, pretrained: str | None, scores: dict) -> Run:
    results = {
        "job": "glue", "attention": {"name": attention}, "init": {"pretrained": pretrained, "step": 10},
        "model": {"name": "tiny", "layers": 2, "hidden": 128}, "device": "cpu", "precision": "fp32",
        "seeds": [0, 1], "tasks": {t: {"score": s, "score_std": 0.01} for t, s in scores.items()},
    }  # fmt: skip
    return Run(tmp_path / folder, "glue", results)


def test_glue_section_averages_the_papers_tasks_and_keeps_controls_apart(tmp_path) -> None:
    four = {"mnli": 0.80, "qnli": 0.85, "qqp": 0.86, "sst2": 0.91}
    runs = [
        glue_run(tmp_path, "a", "lln", "p/lln", {"mnli": 0.80, "qnli": 0.85}),
        glue_run(tmp_path, "b", "lln", "p/lln", {"qqp": 0.86, "sst2": 0.91}),  # merged with a
        glue_run(tmp_path, "c", "softmax", "p/softmax", four),
        glue_run(tmp_path, "d", "softmax", None, {"sst2": 0.70}),  # from scratch: its own row
        glue_run(tmp_path, "e", "softmax", "p/softmax2", {"sst2": 0.92}),  # same task again
    ]
    text, csv_rows, missing = glue_section(runs, [])
    rows = {line.split(" | ")[0].lstrip("| "): line for line in text.splitlines() if "|" in line}
    assert "| 80.0 ± 1.0 | 85.0 ± 1.0 | 86.0 ± 1.0 | 91.0 ± 1.0 | 85.5 | 85.4 |" in rows["lln"]
    assert "85.5 | 87.0 |" in rows["softmax"]  # (80 + 85 + 86 + 91) / 4 beside the paper's
    assert "70.0 ± 1.0" in rows["softmax (from scratch)"]
    assert "92.0 ± 1.0" in rows["softmax [e]"]
    assert "from scratch (no pretraining)" in text
    assert "seeds 0, 1 [a]" in text and "[0, 1]" not in text  # values as text, not Python reprs
    assert len(csv_rows) == 4 + 4 + 1 + 1
    assert "no GLUE runs found for lln_diag" in missing
    assert not [m for m in missing if "from scratch" in m or "[e]" in m]


def test_cells_are_text_not_python_reprs() -> None:
    assert cell(None) == "—" and cell([]) == "—"
    assert cell({"name": "lln", "options": {"eps": 1e-6}}) == "name=lln, options=eps=1e-06"
    assert cell([0, 1, 2]) == "0, 1, 2"
    assert "{" not in table(["a"], [[{"k": 1}]]) and "| k=1 |" in table(["a"], [[{"k": 1}]])
