"""Bad input, kills and damaged files, through the CLI as users meet them (issue 15).

Every bad value: one line naming it and what is allowed, exit 2, no traceback, nothing written
before lost. A torn metrics.jsonl never blocks a resume or a report; a second process on one
run directory is refused. (The full battery: tests/stress/bad_inputs.py; random kills:
tests/stress/kill_resume.py.)
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import tiny_pretrain_args
from typer.testing import CliRunner

from llnbench.cli import app

EXTRA = ("attention=lln", "trainer.max_steps=12", "trainer.log_every=2", "trainer.eval_every=6",
         "trainer.checkpoint_every=3")  # fmt: skip
ENV = {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def invoke(*args: str):
    return CliRunner().invoke(app, list(args))


def one_line_exit_2(result) -> str:
    text = result.output.strip()
    assert result.exit_code == 2, text
    assert "Traceback" not in text and len(text.splitlines()) == 1, text
    return text


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A finished tiny pretraining run (the reference curve of the kill test, too)."""
    base = tmp_path_factory.mktemp("finished")
    run_dir = base / "run"
    result = invoke("pretrain", *tiny_pretrain_args(base, run_dir, *EXTRA))
    assert result.exit_code == 0, result.output
    return run_dir


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def rows(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def numbers(run_dir: Path) -> list[dict]:
    """The logged rows without wall-clock columns: what an exact resume reproduces."""
    clock = ("train/tokens_per_s", "train/step_time_s")
    return [{k: v for k, v in row.items() if k not in clock} for row in rows(run_dir)]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["pretrain", "trainer.lr=nan"], "bad value nan for trainer.lr; expected a finite number"),
        (["pretrain", "trainer.lr=inf"], "bad value inf for trainer.lr; expected a finite number"),
        (["pretrain", "trainer.betas=[0.9,1.5]"], "trainer.betas must be two numbers in [0, 1)"),
        (["pretrain", "trainer.adam_eps=-1"], "trainer.adam_eps must be positive, got -1.0"),
        (["pretrain", "seed=99999999999999999999"], "a seed is an integer in 0..2^32-1"),
        (["pretrain", "model.layer_norm_eps=0"], "model.layer_norm_eps must be positive"),
        (["pretrain", "eval_blocks=-1"], "eval_blocks must be positive or null (all), got -1"),
        (["pretrain", "run_dir=/tmp/[x]"], "cannot parse override 'run_dir=/tmp/[x]'"),
        (["pretrain", "--bogus"], "unknown option '--bogus' for `llnbench pretrain`"),
        (["glue", "trainer.seeds=[-1]"], "bad value -1 for trainer.seeds[0]; a seed is"),
        (["scale", "--attention", ","], "attentions is empty; give at least one mechanism"),
        (["scale", "memory_fraction=2"], "memory_fraction must be in (0, 1], got 2.0"),
        (["scale", "warmup=-1"], "warmup must be >= 0, got -1"),
        (["scale", "+options.nope.x=1"], "unknown attention in options 'nope'; allowed: softmax"),
        (["analyze", "options.nope.x=1"], "unknown attention in options 'nope'; allowed: "),
    ],
    ids=lambda v: v if isinstance(v, str) else " ".join(v),
)
def test_bad_value_is_one_line_exit_2(args: list[str], message: str) -> None:
    assert message in one_line_exit_2(invoke(*args, "wandb.mode=disabled"))


@pytest.mark.parametrize("job", ["scale", "analyze"])
def test_a_mechanism_option_it_cannot_take_stops_before_any_file(job: str, tmp_path) -> None:
    out = tmp_path / "out"
    chosen = ["--attention", "lln", "--out", str(out)] if job == "scale" else [
        "attentions=[lln]", f"run_dir={out}"]  # fmt: skip
    text = one_line_exit_2(invoke(job, *chosen, "+options.lln.eps=abc", "wandb.mode=disabled"))
    assert "eps" in text and "abc" in text
    assert not out.exists()


def test_typer_usage_error_is_one_line_from_the_console_script() -> None:
    proc = subprocess.run([sys.executable, "-m", "llnbench", "scale", "--max-len", "abc"],
                          capture_output=True, text=True, timeout=120, env=ENV)  # fmt: skip
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.startswith("llnbench: error: Invalid value for '--max-len': ")
    assert len(proc.stderr.strip().splitlines()) == 1


def test_run_dir_naming_a_file_is_one_line_and_the_file_is_untouched(tmp_path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("mine\n")
    for args in (["pretrain", f"run_dir={path}"], ["scale", "--out", str(path)]):
        assert "is an existing file" in one_line_exit_2(invoke(*args))
    assert path.read_text() == "mine\n"


def test_brackets_in_paths_print_as_typed(tmp_path) -> None:
    """Rich markup is off for user text: `[/x]` raised MarkupError, `[x]` vanished."""
    result = invoke("glue", f"pretrained='{tmp_path}/[/x]'", "wandb.mode=disabled")
    assert one_line_exit_2(result) == f"llnbench: error: no checkpoint at {tmp_path}/[/x]"
    out = tmp_path / "s[x]"
    result = invoke("scale", "--attention", "softmax", "--min-len", "16", "--max-len", "16",
                    "--mode", "fwd", "--device", "cpu", "warmup=0", "min_time_s=0",
                    "max_repeats=1", "wandb.mode=disabled", "--out", str(out))  # fmt: skip
    assert result.exit_code == 0 and f"run directory: {out}" in result.output


def test_a_bad_value_on_a_finished_run_changes_none_of_its_files(finished) -> None:
    before = snapshot(finished)
    args = tiny_pretrain_args(finished.parent, finished, *EXTRA, "trainer.lr=nan")
    one_line_exit_2(invoke("pretrain", *args))
    assert snapshot(finished) == before


@pytest.mark.slow
def test_kill_during_training_then_a_torn_line_then_resume_and_report(finished, tmp_path) -> None:
    """kill -9 for real after step 7 (checkpoint at 6), plus the half line a kill during an append
    leaves; the rerun drops it, resumes from step 6 and ends with the uninterrupted curve."""
    run_dir = tmp_path / "run"
    args = tiny_pretrain_args(finished.parent, run_dir, *EXTRA)  # the same data as `finished`
    proc = subprocess.Popen([sys.executable, "-m", "llnbench", "pretrain", *args], env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if (run_dir / "metrics.jsonl").exists() and any(r["step"] >= 8 for r in rows(run_dir)):
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert 8 <= max(r["step"] for r in rows(run_dir)) < 12, "finished before the kill"
    whole = json.dumps({"step": 12, "train/loss": 9.0, "train/lr": 0.0001})
    with (run_dir / "metrics.jsonl").open("a") as handle:
        handle.write(whole[: len(whole) // 2])  # torn: no closing brace, no newline

    resumed = invoke("pretrain", *args)
    assert resumed.exit_code == 0, resumed.output
    assert "that could not be read" in resumed.output and "resuming" in resumed.output
    mine, clean = numbers(run_dir), numbers(finished)  # every line parses, as the clean run's
    assert [r.keys() for r in mine] == [r.keys() for r in clean]
    assert all(r == pytest.approx(c, rel=1e-6, abs=1e-9) for r, c in zip(mine, clean))

    with (run_dir / "metrics.jsonl").open("a") as handle:  # torn again, after the run ended
        handle.write(whole[:20])
    report = invoke("report", str(run_dir), f"run_dir={tmp_path / 'report'}")
    assert report.exit_code == 0, report.output
    assert (
        "skipped" in report.output
        and "metrics.jsonl: skipped unreadable line"
        in (tmp_path / "report" / "report.md").read_text()
    )


def test_report_names_unreadable_files_and_goes_on(finished, tmp_path) -> None:
    runs = tmp_path / "runs"
    for name in ("good", "bad_results", "latin1_config", "bad_yaml"):
        shutil.copytree(finished, runs / name)
    (runs / "bad_results" / "results.json").write_text('{"job": "pretrain", "final": ')
    (runs / "latin1_config" / "config.yaml").write_bytes("title: caf\xe9\n".encode("latin-1"))
    (runs / "bad_yaml" / "config.yaml").write_text("a: [unclosed\n")
    out = tmp_path / "report"
    result = invoke("report", str(runs), f"run_dir={out}")
    assert result.exit_code == 0, result.output
    text = (out / "report.md").read_text()
    assert "lln (good)" in text and "1 pretrain run" in text
    assert f"skipped {runs / 'bad_results' / 'results.json'}: not valid JSON" in text
    assert f"skipped {runs / 'latin1_config' / 'config.yaml'}: not UTF-8 text" in text
    assert f"skipped {runs / 'bad_yaml' / 'config.yaml'}: not valid YAML" in text


def test_second_process_on_a_run_dir_is_refused_and_a_dead_holders_lock_is_taken(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from pathlib import Path; "
         "from llnbench.runs import lock_run_dir; lock_run_dir(Path(sys.argv[1])); "
         "print('locked', flush=True); time.sleep(300)", str(run_dir)],
        stdout=subprocess.PIPE, text=True, env=ENV,
    )  # fmt: skip
    assert holder.stdout.readline().strip() == "locked"
    args = ["analyze", "s2=[1.0]", "seq_len=16", "draws=1", "attentions=[softmax]",
            "wandb.mode=disabled", f"run_dir={run_dir}"]  # fmt: skip
    refused = one_line_exit_2(invoke(*args))
    assert f"is in use by another llnbench process (pid {holder.pid} on " in refused
    assert not (run_dir / "config.yaml").exists()  # refused before writing anything
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    taken = invoke(*args)
    assert taken.exit_code == 0, taken.output
    assert f"was left by pid {holder.pid} on" in taken.output and "taking it over" in taken.output
