"""A run directory belongs to one run: another job's run or other settings are refused in one
line; config.yaml states what ran; a run that never started leaves no folder; killed runs leave
no temporary files or doubled metrics rows; a NaN loss, a full disk and Ctrl-C during a
checkpoint write each end in one line."""

from __future__ import annotations

import errno
import json
import os
import signal

import pytest
import torch
import yaml
from helpers import tiny_pretrain_args
from typer.testing import CliRunner

from llnbench import files, runs
from llnbench.cli import app
from llnbench.errors import CheckpointError, ConfigError, LlnbenchError
from llnbench.schema import WandbConfig
from llnbench.tracking import Tracker
from llnbench.train import checkpoint
from llnbench.train.finetune import read_result
from llnbench.train.loop import Trainer

runner = CliRunner()
TIMING = ("train/tokens_per_s", "train/step_time_s")


def invoke(*args: str):
    return runner.invoke(app, list(args))


def one_line(result, code: int = 2) -> str:
    text = result.output.strip()
    assert result.exit_code == code, text
    assert "Traceback" not in text and len(text.splitlines()) == 1, text
    return text


def last_line(result, code: int) -> str:
    """The line a run that had started ends with (its progress lines come before)."""
    text = result.output.strip()
    assert result.exit_code == code and "Traceback" not in text, text
    return text.splitlines()[-1]


def rows(run_dir) -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k not in TIMING} for line in lines]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished 6-step pretraining run (lln, seed 0) and the arguments that made it."""
    tmp_path = tmp_path_factory.mktemp("finished")
    run_dir = tmp_path / "run"
    args = tiny_pretrain_args(tmp_path, run_dir, "attention=lln")
    result = invoke("pretrain", *args)
    assert result.exit_code == 0, result.output
    return run_dir, args


# ------------------------------------------------------------------------------------------------
# One run per directory


@pytest.mark.parametrize(
    ("override", "shown"),
    [
        ("seed=1", "seed: ran 0, now 1"),
        ("trainer.lr=0.5", "trainer.lr: ran 0.001, now 0.5"),
        ("trainer.max_steps=10", "trainer.max_steps: ran 6, now 10"),
        ("attention=softmax", "attention.name: ran 'lln', now 'softmax'"),
    ],
    ids=["seed", "lr", "max-steps", "attention"],
)
def test_other_settings_are_refused_naming_the_keys(finished, override, shown) -> None:
    run_dir, args = finished
    before = {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()}
    text = one_line(invoke("pretrain", *args, override))
    assert f"holds a pretrain run of other settings ({shown}" in text
    assert "choose another run_dir" in text
    after = {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()}
    assert after == before  # nothing of the run was touched, config.yaml included


def test_settings_that_cannot_change_a_result_may_differ(finished) -> None:
    run_dir, args = finished
    result = invoke("pretrain", *args, "trainer.log_every=1", "trainer.checkpoint_every=6")
    assert result.exit_code == 0 and "resuming" in result.output, result.output
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["trainer"]["log_every"] == 1


def test_config_yaml_states_the_derived_block_size(finished) -> None:
    run_dir, _ = finished
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert config["block_size"] == 32 == config["model"]["max_len"]  # null in the command


@pytest.mark.parametrize("job", ["glue", "lra"])
def test_another_jobs_run_is_refused(finished, job) -> None:
    run_dir, _ = finished
    args = {
        "glue": ["task=sst2_rt", "attention=lln", "model=tiny", "max_train_samples=8"],
        "lra": [
            "data.max_length=32",
            "data.min_length=6",
            "data.train_size=8",
            "data.validation_size=4",
            "data.test_size=4",
            "data.workers=1",
            f"data.cache_dir={run_dir.parent / 'lra-cache'}",
        ],
    }[job]
    text = last_line(invoke(job, *args, f"run_dir={run_dir}", "wandb.mode=disabled"), code=2)
    assert f"holds a pretrain run; a {job} run cannot continue in it" in text
    assert json.loads((run_dir / "results.json").read_text())["job"] == "pretrain"


def test_scale_out_into_a_pretraining_run_is_refused(finished) -> None:
    run_dir, _ = finished
    text = one_line(invoke("scale", "--out", str(run_dir), "--device", "cpu"))
    assert "holds a pretrain run; a scale run cannot continue in it" in text
    assert not (run_dir / "scale.json").exists()


@pytest.mark.parametrize("job", ["analyze", "report"])
def test_analyze_and_report_into_a_pretraining_run_are_refused(finished, job) -> None:
    run_dir, _ = finished
    before = (run_dir / "results.json").read_text()
    extra = (
        ["seq_len=16", "draws=1", "wandb.mode=disabled"]
        if job == "analyze"
        else [str(run_dir.parent)]
    )
    text = last_line(invoke(job, *extra, f"run_dir={run_dir}"), code=2)
    assert f"holds a pretrain run; a {job} run cannot continue in it" in text
    assert (run_dir / "results.json").read_text() == before


@pytest.mark.parametrize(
    ("files_there", "job"),
    [
        ({runs.RECORD: '{"job": "glue"}'}, "glue"),
        ({"results.json": '{"job": "lra"}'}, "lra"),
        ({"scale.json": "{}"}, "scale"),
        ({"checkpoint.pt": ""}, "pretrain"),
        ({"seed0/result.json": "{}"}, "lra"),
        ({"sst2_rt/seed0/checkpoint.pt": ""}, "glue"),
    ],
    ids=["record", "results-json", "scale", "pretrain-checkpoint", "lra-seed", "glue-seed"],
)
def test_the_job_of_a_folder_is_its_record_or_what_it_left(tmp_path, files_there, job) -> None:
    for name, text in files_there.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert runs.run_job(tmp_path) == job
    other = "pretrain" if job != "pretrain" else "glue"
    with pytest.raises(ConfigError, match=f"holds a {job} run; a {other} run cannot continue"):
        runs.claim_run_dir(tmp_path, other)
    runs.claim_run_dir(tmp_path, job)  # its own job may continue


def test_seed_keys_may_differ_where_the_job_keeps_seeds_apart(tmp_path) -> None:
    files.write_text(tmp_path / "config.yaml", yaml.safe_dump({"seed": 0, "trainer": {"lr": 1}}))
    runs.claim_run_dir(tmp_path, "glue", {"seed": 3, "trainer": {"lr": 2}})  # nothing saved yet
    (tmp_path / "sst2" / "seed0").mkdir(parents=True)
    (tmp_path / "sst2" / "seed0" / "checkpoint.pt").write_bytes(b"")
    runs.claim_run_dir(tmp_path, "glue", {"seed": 3, "trainer": {"lr": 1}}, ("seed",))
    with pytest.raises(ConfigError, match=r"\(seed: ran 0, now 3\)"):
        runs.claim_run_dir(tmp_path, "glue", {"seed": 3, "trainer": {"lr": 1}})


def test_garbled_config_yaml_is_one_line(tmp_path) -> None:
    (tmp_path / "config.yaml").write_bytes(b"\xff\xfe: [")
    (tmp_path / "checkpoint.pt").write_bytes(b"")
    with pytest.raises(ConfigError, match="config.yaml cannot be read"):
        runs.claim_run_dir(tmp_path, "pretrain", {"seed": 0})


# ------------------------------------------------------------------------------------------------
# Nothing left behind


def test_a_run_that_never_started_leaves_no_folder(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    args = [a for a in tiny_pretrain_args(tmp_path, "x") if not a.startswith("run_dir=")]
    missing = ["data.train_file=/no/such/corpus.txt"]
    text = one_line(invoke("pretrain", *args, *missing))
    assert "/no/such/corpus.txt" in text
    assert not (tmp_path / "runs").exists()  # not even runs/pretrain/<stamp>-... with a lock
    explicit = tmp_path / "new" / "run"
    one_line(invoke("pretrain", *args, *missing, f"run_dir={explicit}"))
    assert not (tmp_path / "new").exists()
    kept = tmp_path / "mine"  # a folder the user made is theirs: it stays
    kept.mkdir()
    one_line(invoke("pretrain", *args, *missing, f"run_dir={kept}"))
    assert kept.is_dir() and not any(kept.iterdir())


def test_stale_temporary_files_are_removed_at_the_next_start(tmp_path) -> None:
    stale = [tmp_path / ".checkpoint.pt.k3j_x9.tmp", tmp_path / "rte/seed0/.best.pt.abc123.tmp"]
    for path in stale:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"half a checkpoint")
    kept = tmp_path / "notes.tmp"
    kept.write_text("not one of ours")
    runs.lock_run_dir(tmp_path)
    try:
        assert not any(p.exists() for p in stale) and kept.exists()
    finally:
        runs.release_run_dirs()


def test_rows_of_a_run_killed_before_its_first_checkpoint_are_not_doubled(
    tmp_path, monkeypatch, finished
) -> None:
    run_dir = tmp_path / "run"
    args = [a for a in finished[1] if not a.startswith("run_dir=")] + [f"run_dir={run_dir}"]

    def killed(self) -> None:  # the kill comes before the first checkpoint (step 3)
        raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "save", killed)
    last_line(invoke("pretrain", *args), code=130)
    assert [r["step"] for r in rows(run_dir)] == [2, 3]  # train row 2, validation row 3
    monkeypatch.undo()
    assert invoke("pretrain", *args).exit_code == 0
    assert rows(run_dir) == rows(finished[0])  # every step once, as in the clean run


def test_ctrl_c_during_a_checkpoint_write_is_the_one_interrupted_line(tmp_path, monkeypatch):
    run_dir = tmp_path / "run"
    args = tiny_pretrain_args(tmp_path, run_dir, "attention=softmax", "trainer.max_steps=3")
    real_write = checkpoint._Recording.write
    sent = []

    def write(self, data):  # Ctrl-C arrives while torch.save is writing
        if not sent:
            sent.append(os.kill(os.getpid(), signal.SIGINT))
        return real_write(self, data)

    monkeypatch.setattr(checkpoint._Recording, "write", write)
    text = last_line(invoke("pretrain", *args), code=130)
    assert text.startswith("llnbench: interrupted")
    assert checkpoint.load(run_dir)["step"] == 3  # the write it interrupted finished first
    assert not list(run_dir.glob(".*.tmp"))


def test_full_disk_during_a_checkpoint_write_is_one_line(tmp_path, monkeypatch) -> None:
    path = tmp_path / "checkpoint.pt"
    checkpoint.save(path, {"model": {"w": torch.ones(2)}, "step": 1})
    real_fdopen = os.fdopen

    class Full:
        def __init__(self, handle):
            self.handle = handle

        def write(self, data):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        def __getattr__(self, name):
            return getattr(self.handle, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.handle.close()

    monkeypatch.setattr(files.os, "fdopen", lambda fd, mode: Full(real_fdopen(fd, mode)))
    with pytest.raises(CheckpointError) as caught:
        checkpoint.save(path, {"model": {"w": torch.zeros(2)}, "step": 2})
    monkeypatch.undo()
    text = str(caught.value)
    assert "checkpoint not written" in text and str(path) in text
    assert "no space left on device" in text.lower()
    assert "the previous one is intact" in text and len(text.splitlines()) == 1
    assert checkpoint.load(path)["step"] == 1 and not list(tmp_path.glob(".*.tmp"))


def test_unwritable_metrics_file_is_one_line_naming_it(tmp_path) -> None:
    tracker = Tracker(tmp_path, job="x", name="x", config={}, wandb_cfg=WandbConfig("disabled"))
    (tmp_path / "metrics.jsonl").mkdir()
    with pytest.raises(LlnbenchError, match=r"cannot write .*metrics.jsonl: Is a directory"):
        tracker.log({"loss": 1.0}, step=1)


# ------------------------------------------------------------------------------------------------
# Non-finite numbers


def test_nan_loss_stops_naming_step_and_mechanism(tmp_path, monkeypatch) -> None:
    run_dir = tmp_path / "run"
    args = tiny_pretrain_args(tmp_path, run_dir, "attention=lln")
    real_step = Trainer.train_step

    def diverges_at_step_5(self):
        loss, grad_norm, tokens = real_step(self)
        return (loss * float("nan") if self.step == 4 else loss), grad_norm, tokens

    monkeypatch.setattr(Trainer, "train_step", diverges_at_step_5)
    text = last_line(invoke("pretrain", *args), code=2)
    assert "the training loss is nan at step 5/6 of pretrain lln-tiny (attention=lln)" in text
    assert f"the last good checkpoint {run_dir / 'checkpoint.pt'} is intact" in text
    assert checkpoint.load(run_dir)["step"] == 3 and not (run_dir / "results.json").exists()


def test_results_json_never_holds_a_bare_nan(tmp_path) -> None:
    tracker = Tracker(tmp_path, job="x", name="x", config={}, wandb_cfg=WandbConfig("disabled"))
    tracker.finish({"final": {"loss": float("nan"), "ppl": float("inf")}, "rows": [float("nan")]})

    def refuse(constant):
        raise AssertionError(f"bare {constant} in results.json")

    data = json.loads((tmp_path / "results.json").read_text(), parse_constant=refuse)
    assert data["final"] == {"loss": None, "ppl": None} and data["rows"] == [None]


def test_garbled_seed_result_is_named_with_the_way_out(tmp_path) -> None:
    (tmp_path / "result.json").write_bytes(b'{"metrics": {"acc\xff')
    with pytest.raises(CheckpointError) as caught:
        read_result(tmp_path)
    text = str(caught.value)
    assert f"{tmp_path / 'result.json'} is damaged" in text and "delete it" in text
    assert len(text.splitlines()) == 1


def test_a_lock_file_that_is_no_regular_file_is_one_line(tmp_path) -> None:
    os.mkfifo(tmp_path / runs.LOCK)
    with pytest.raises(files.PathError, match=r"\.llnbench\.lock'.* not a regular file; remove it"):
        runs.lock_run_dir(tmp_path)
    (tmp_path / runs.LOCK).unlink()
    (tmp_path / runs.LOCK).symlink_to("/dev/full")
    with pytest.raises(files.PathError, match="not a regular file"):
        runs.lock_run_dir(tmp_path)


def test_a_damaged_results_json_is_rewritten_with_a_warning(tmp_path, capsys) -> None:
    (tmp_path / "results.json").write_bytes(b"{\xff")
    tracker = Tracker(tmp_path, job="x", name="x", config={}, wandb_cfg=WandbConfig("disabled"))
    tracker.finish({"loss": 1.0})
    assert "results.json was damaged" in capsys.readouterr().err
    assert json.loads((tmp_path / "results.json").read_text()) == {"job": "x", "loss": 1.0}
