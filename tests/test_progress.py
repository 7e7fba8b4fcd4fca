"""Progress off a terminal (a log file, CI): plain lines instead of a live bar that shows nothing."""

from __future__ import annotations

import io
import re

from helpers import tiny_pretrain_args
from rich.console import Console
from typer.testing import CliRunner

from llnbench import progress
from llnbench.cli import app
from llnbench.progress import ProgressBar

TIME = r"elapsed \d+:\d\d:\d\d"


def invoke(*args: str) -> str:
    result = CliRunner().invoke(app, list(args))  # CliRunner's stdout is not a terminal
    assert result.exit_code == 0, result.output
    return result.output


def test_pretraining_prints_step_loss_rate_and_eta_lines(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("LLNBENCH_PROGRESS_SECONDS", "0")  # a line at every logged step
    out = invoke("pretrain", *tiny_pretrain_args(tmp_path, tmp_path / "run", "attention=lln"))
    lines = [ln for ln in out.splitlines() if ln.startswith("pretrain lln-")]
    assert [int(ln.split("step ")[1].split("/")[0]) for ln in lines] == [1, 2, 3, 4, 5, 6]
    assert re.fullmatch(
        rf"pretrain lln-tiny: step 2/6 \(33%\), loss \d+\.\d{{3}}, [\d,]+ tok/s, {TIME}, "
        r"ETA \d+:\d\d:\d\d",
        lines[1],
    ), lines[1]
    assert lines[-1].startswith("pretrain lln-tiny: step 6/6 (100%), loss ")
    assert not [ln for ln in out.splitlines() if "lln-tiny" in ln and "━" in ln]  # no bar


def test_glue_and_scale_print_progress_lines(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("LLNBENCH_PROGRESS_SECONDS", "0")
    glue = invoke("glue", "task=sst2_rt", "attention=softmax", "model=tiny", "model.layers=1",
                  "model.hidden=32", "model.heads=1", "model.ffn=64", "model.max_len=32",
                  "max_length=32", "max_train_samples=16", "max_eval_samples=8",
                  "trainer.max_steps=4", "trainer.batch_size=4", "trainer.log_every=2",
                  "submission=false", "wandb.mode=disabled", f"run_dir={tmp_path / 'glue'}")  # fmt: skip
    assert re.search(rf"^sst2_rt seed 0: step 2/4 \(50%\), loss [\d.]+, .*{TIME}", glue, re.M)
    scale = invoke("scale", "--attention", "softmax,lln", "--min-len", "32", "--max-len", "32",
                   "--mode", "fwd", "--device", "cpu", "warmup=0", "min_time_s=0",
                   "max_repeats=1", "wandb.mode=disabled", "--out", str(tmp_path / "scale"))  # fmt: skip
    ms = r"[\d.e+-]+ ms"
    assert re.search(
        rf"^scale: cell 1/3 softmax\[flash\] N=32 fwd: {ms}, {TIME}, ETA ~", scale, re.M
    )
    assert re.search(rf"^scale: cell 3/3 lln N=32 fwd: {ms}, {TIME}$", scale, re.M)


def test_line_cadence_every_n_units_at_most_every_2_s_at_least_every_30_s(monkeypatch) -> None:
    clock = [0.0]
    monkeypatch.setattr(progress.time, "perf_counter", lambda: clock[0])
    monkeypatch.delenv("LLNBENCH_PROGRESS_SECONDS", raising=False)
    buffer = io.StringIO()
    console = Console(file=buffer, width=200)  # a file: not a terminal
    with ProgressBar("job", 100, unit="step", every=10, console=console) as bar:
        for step in range(1, 101):
            clock[0] += 0.5 if step <= 50 else 31.0  # fast steps, then slow ones
            bar.update(completed=step, loss=1.0 / step)
    steps = [int(m) for m in re.findall(r"step (\d+)/100", buffer.getvalue())]
    # every 10 steps but 2 s apart (every 5 s here) while fast; each slow step by the 30 s rule
    assert steps == [10, 20, 30, 40, 50, *range(51, 101)]
