"""SIGTERM, as schedulers and `kill` send it, through the CLI: a clean stop with exit 143.

The signal is real (this process sends it to itself from a thread); the job runs in-process.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from helpers import tiny_pretrain_args
from typer.testing import CliRunner

from llnbench.cli import app

EXTRA = ("attention=lln", "trainer.max_steps=12", "trainer.log_every=2", "trainer.eval_every=6",
         "trainer.checkpoint_every=5")  # fmt: skip
KEYS = ("train/loss", "train/grad_norm", "train/lr", "val/loss")


@contextlib.contextmanager
def sigterm_when(condition: Callable[[], bool], timeout: float = 120.0) -> Iterator[None]:
    """Send this process a real SIGTERM once ``condition()`` holds. A signal arriving after the
    job has ended meets a no-op handler instead of ending the test run."""
    previous = signal.signal(signal.SIGTERM, lambda *_: None)
    done = threading.Event()

    def watch() -> None:
        deadline = time.monotonic() + timeout
        while not done.is_set() and time.monotonic() < deadline:
            if condition():
                os.kill(os.getpid(), signal.SIGTERM)
                return
            time.sleep(0.005)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()
        signal.signal(signal.SIGTERM, previous)


def logged_step(run_dir: Path, at_least: int) -> Callable[[], bool]:
    def reached() -> bool:
        path = run_dir / "metrics.jsonl"
        text = path.read_text() if path.exists() else ""
        return any(json.loads(ln).get("step", 0) >= at_least for ln in text.splitlines())

    return reached


def curve(run_dir: Path) -> dict[int, tuple]:
    rows = [json.loads(ln) for ln in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: tuple(r.get(k) for k in KEYS) for r in rows}


def test_sigterm_finishes_the_step_checkpoints_and_the_rerun_resumes_exactly(tmp_path) -> None:
    runner = CliRunner()
    clean_dir, stopped_dir = tmp_path / "clean", tmp_path / "stopped"
    assert (
        runner.invoke(app, ["pretrain", *tiny_pretrain_args(tmp_path, clean_dir, *EXTRA)]).exit_code
        == 0
    )

    args = ["pretrain", *tiny_pretrain_args(tmp_path, stopped_dir, *EXTRA)]
    with sigterm_when(logged_step(stopped_dir, 4)):
        stopped = runner.invoke(app, args)
    assert stopped.exit_code == 143, stopped.output
    message = stopped.output.strip().splitlines()[-1]
    assert message.startswith("llnbench: stopped by SIGTERM after step ") and "Traceback" not in (
        stopped.output
    )
    step = int(message.split("after step ")[1].split("/")[0])
    assert 4 <= step < 12 and f"run_dir={stopped_dir}" in message
    assert torch.load(stopped_dir / "checkpoint.pt", weights_only=True)["step"] == step
    assert max(curve(stopped_dir)) <= step  # metrics as far as the step, nothing past it

    resumed = runner.invoke(app, args)
    assert resumed.exit_code == 0, resumed.output
    assert f"at step {step}/12" in resumed.output
    clean, mine = curve(clean_dir), curve(stopped_dir)
    assert mine.keys() == clean.keys()
    for s, values in clean.items():
        for a, b in zip(mine[s], values):
            assert (a is None and b is None) or abs(a - b) <= 1e-6, (s, a, b)


def test_sigterm_outside_training_is_one_line_exit_143(tmp_path) -> None:
    """A benchmark cell that would run for 30 s: SIGTERM stops it at once, files intact."""
    out = tmp_path / "scale"
    args = ["scale", "--attention", "softmax", "--min-len", "64", "--max-len", "64", "--mode",
            "fwd", "--device", "cpu", "min_time_s=30", "max_repeats=100000000",
            "wandb.mode=disabled", "--out", str(out)]  # fmt: skip
    with sigterm_when(lambda: (out / "config.yaml").exists()):
        result = CliRunner().invoke(app, args)
    assert result.exit_code == 143
    assert result.output.strip().splitlines()[-1] == (
        "llnbench: stopped by SIGTERM (every file written so far is intact; rerun to continue)"
    )
    assert (out / "config.yaml").read_text()  # what was written before is still there
