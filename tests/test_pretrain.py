"""`llnbench pretrain` end to end on a tiny local corpus: files, resume, bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from helpers import tiny_pretrain_args
from typer.testing import CliRunner

from llnbench.cli import app

LOSS_KEYS = ("train/loss", "train/grad_norm", "train/lr")


def pretrain(*args: str):
    return CliRunner().invoke(app, ["pretrain", *args])


def rows(run_dir) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def train_curve(run_dir) -> dict[int, tuple]:
    return {r["step"]: tuple(r[k] for k in LOSS_KEYS) for r in rows(run_dir) if "train/loss" in r}


def test_pretrain_writes_run_directory(tmp_path) -> None:
    run_dir = tmp_path / "run"
    result = pretrain(*tiny_pretrain_args(tmp_path, run_dir, "attention=lln"))
    assert result.exit_code == 0, result.output
    assert {"config.yaml", "metrics.jsonl", "results.json", "checkpoint.pt"} <= {
        p.name for p in run_dir.iterdir()
    }
    logged = rows(run_dir)
    assert [r["step"] for r in logged if "train/loss" in r] == [2, 4, 6]
    assert [r["step"] for r in logged if "val/loss" in r] == [3, 6]
    assert all("train/attn/alpha" in r for r in logged if "train/loss" in r)  # LLN statistics
    results = json.loads((run_dir / "results.json").read_text())
    assert results["steps"] == 6 and results["final"]["unigram_loss"] > 0
    state = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    assert state["step"] == 6 and state["signature"]["attention"]["name"] == "lln"
    assert str(run_dir) in result.output


def test_rerun_of_a_finished_run_resumes_instead_of_retraining(tmp_path) -> None:
    run_dir = tmp_path / "run"
    args = tiny_pretrain_args(tmp_path, run_dir, "attention=softmax")
    assert pretrain(*args).exit_code == 0
    before = (run_dir / "metrics.jsonl").read_text()
    result = pretrain(*args)
    assert result.exit_code == 0 and "resuming" in result.output
    assert (run_dir / "metrics.jsonl").read_text() == before


def test_checkpoint_of_another_attention_is_refused(tmp_path) -> None:
    run_dir = tmp_path / "run"
    assert pretrain(*tiny_pretrain_args(tmp_path, run_dir, "attention=softmax")).exit_code == 0
    result = pretrain(*tiny_pretrain_args(tmp_path, run_dir, "attention=lln"))
    assert result.exit_code == 2
    assert "holds a pretrain run of other settings (attention.name: ran 'softmax', now 'lln'" in (
        result.output
    )
    (run_dir / "config.yaml").unlink()  # the checkpoint's own signature still guards it
    result = pretrain(*tiny_pretrain_args(tmp_path, run_dir, "attention=lln"))
    assert result.exit_code == 2
    assert "does not match the requested config (attention.name: checkpoint 'softmax'" in (
        result.output
    )


def test_corrupt_checkpoint_is_one_line(tmp_path) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "checkpoint.pt").write_bytes(b"not a checkpoint")
    result = pretrain(*tiny_pretrain_args(tmp_path, run_dir))
    assert result.exit_code == 2
    assert "cannot load checkpoint" in result.output and "Traceback" not in result.output
    assert (run_dir / "checkpoint.pt").read_bytes() == b"not a checkpoint"  # nothing overwritten


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("block_size=64", "block_size=64 exceeds model.max_len=32"),
        ("attention=lnn", "Could not find 'attention/lnn'; allowed: "),
        ("model.heads=3", "model.hidden=64 is not divisible by model.heads=3"),
    ],
    ids=["positions", "attention", "heads"],
)
def test_bad_config_is_one_line(tmp_path, override: str, message: str) -> None:
    result = pretrain(*tiny_pretrain_args(tmp_path, tmp_path / "run", override))
    assert result.exit_code == 2
    assert message in result.output and len(result.output.strip().splitlines()) == 1


def test_missing_hub_dataset_offline_is_quick_and_clear(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    start = time.perf_counter()
    result = pretrain("data=wikitext103", f"data.cache_dir={tmp_path}", "wandb.mode=disabled",
                      f"run_dir={tmp_path / 'run'}")  # fmt: skip
    assert result.exit_code == 2 and time.perf_counter() - start < 20
    assert "wikitext" in result.output and "data=local" in result.output


def _launch(args: list[str]) -> subprocess.Popen:
    env = {**os.environ, "WANDB_MODE": "disabled", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "llnbench", "pretrain", *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip


@pytest.mark.slow
def test_sigkill_then_resume_matches_uninterrupted_run(tmp_path) -> None:
    """Acceptance: kill -9 mid-run, rerun, and every later logged loss equals the clean run's."""
    extra = ["trainer.max_steps=24", "trainer.log_every=2", "trainer.eval_every=6",
             "trainer.checkpoint_every=5", "attention=lln"]  # fmt: skip
    clean_dir, killed_dir = tmp_path / "clean", tmp_path / "killed"
    clean = _launch(tiny_pretrain_args(tmp_path, clean_dir, *extra))
    assert clean.wait(timeout=300) == 0, clean.stderr.read().decode()

    victim = _launch(tiny_pretrain_args(tmp_path, killed_dir, *extra))
    deadline = time.time() + 300
    while time.time() < deadline:
        done = killed_dir.joinpath("metrics.jsonl")
        if done.exists() and any(r.get("step", 0) >= 12 for r in rows(killed_dir)):
            break
        time.sleep(0.05)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    killed_at = max(r["step"] for r in rows(killed_dir))
    assert 12 <= killed_at < 24, "the run finished before it could be killed"

    resumed = _launch(tiny_pretrain_args(tmp_path, killed_dir, *extra))
    assert resumed.wait(timeout=300) == 0, resumed.stderr.read().decode()
    clean_curve, resumed_curve = train_curve(clean_dir), train_curve(killed_dir)
    assert resumed_curve.keys() == clean_curve.keys()
    for step, values in clean_curve.items():
        for mine, theirs in zip(resumed_curve[step], values):
            assert abs(mine - theirs) <= 1e-4, (step, mine, theirs)


@pytest.mark.slow
def test_two_gloo_processes_under_torchrun(tmp_path) -> None:
    """DDP path on CPU: rank 0 alone logs and checkpoints; the global batch counts both ranks."""
    run_dir = tmp_path / "run"
    args = tiny_pretrain_args(tmp_path, run_dir, "trainer.max_steps=4")
    env = {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
         "-m", "llnbench", "pretrain", *args],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "global batch 8 = 4 x 1 accumulation x 2 devices" in " ".join(proc.stdout.split())
    logged = rows(run_dir)
    assert [r["step"] for r in logged if "train/loss" in r] == [2, 4]  # once, not once per rank
    results = json.loads((run_dir / "results.json").read_text())
    assert results["global_batch"] == 8 and results["tokens"] == 4 * 8 * 32
    assert torch.load(run_dir / "checkpoint.pt", weights_only=True)["step"] == 4


def test_pretrained_run_loads_for_fine_tuning(tmp_path) -> None:
    from llnbench.model.pretrained import load_pretrained

    run_dir = tmp_path / "run"
    args = tiny_pretrain_args(tmp_path, run_dir, "attention=lln_diag", "attention.diag_block=16")
    assert pretrain(*args).exit_code == 0
    pre = load_pretrained(run_dir)
    assert pre.attention.name == "lln_diag" and pre.attention.options["diag_block"] == 16
    assert pre.model.hidden == 64 and pre.step == 6
    state = torch.load(run_dir / "checkpoint.pt", weights_only=True)["model"]
    assert torch.equal(pre.encoder_state["embeddings.words.weight"],
                       state["encoder.embeddings.words.weight"])  # fmt: skip


def test_multirun_sweep_runs_each_combination_in_its_own_folder(tmp_path) -> None:
    run_dir = tmp_path / "sweep"
    args = tiny_pretrain_args(tmp_path, run_dir, "attention=softmax,lln", "trainer.max_steps=2")
    result = CliRunner().invoke(app, ["pretrain", "--multirun", *args])
    assert result.exit_code == 0, result.output
    for name in ("softmax", "lln"):
        results = json.loads((run_dir / f"attention-{name}" / "results.json").read_text())
        assert results["attention"]["name"] == name and results["steps"] == 2
