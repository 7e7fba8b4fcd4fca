"""The surfaces of issue 21, one representative of each class of bad input: mechanisms from
outside llnbench (checked before any work, one line naming the spec and the phase), paths that
cannot be written (one line naming the path and the cause), and one file mode for everything a
run writes. The full battery: tests/stress/bad_inputs.py."""

from __future__ import annotations

import errno
import io
import os
import stat
from pathlib import Path

import pytest
import torch
from helpers import tiny_pretrain_args
from outside_mechanisms import BROKEN, MODULE, write_outside_mechanisms
from typer.testing import CliRunner

from llnbench import files
from llnbench.cli import app
from llnbench.errors import ConfigError
from llnbench.testing.outside import verify_outside_attention

SCALE = ["--min-len", "8", "--max-len", "8", "--mode", "fwd", "--device", "cpu", "warmup=0",
         "min_time_s=0", "max_repeats=1", "wandb.mode=disabled"]  # fmt: skip
GLUE = ["task=sst2_rt", "model=tiny", "model.layers=1", "model.hidden=32", "model.heads=1",
        "model.ffn=64", "model.max_len=32", "max_length=32", "max_train_samples=16",
        "max_eval_samples=16", "trainer.max_steps=2", "submission=false", "wandb.mode=disabled"]  # fmt: skip


def invoke(*args: str):
    return CliRunner().invoke(app, list(args))


def one_line(result) -> str:
    text = result.output.strip()
    assert result.exit_code == 2, text
    assert "Traceback" not in text and len(text.splitlines()) == 1, text
    return text


@pytest.fixture
def outside(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The broken classes importable as broken_attn:<Class>, and their entry points installed."""
    folder = write_outside_mechanisms(tmp_path / "site")
    monkeypatch.syspath_prepend(str(folder))
    return folder


# --- outside mechanisms ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cls", "phase", "message"),
    [
        ("InitRaises", "construction", "RuntimeError: cannot allocate my lookup table"),
        ("WrongShape", "first call", "returned (2, 2, 8, 7) float32 for float32 inputs; "
                                     "expected (B, H, N, d) = (2, 2, 8, 8) float32"),
        ("Float64", "first call", "returned (2, 2, 8, 8) float64"),
        ("IntOut", "first call", "returned (2, 2, 8, 8) int64"),
        ("TupleOut", "first call", "forward returned a tuple of 2; expected (B, H, N, d)"),
        ("NoneOut", "first call", "forward returned None; expected"),
        ("ForwardRaises", "first call", "ValueError: my kernel needs N divisible by 64"),
        ("NaNOut", "first call", "non-finite fp32 output"),
        ("Transposed", "first call", "returned (2, 8, 2, 8) float32"),
    ],
    ids=lambda value: value if value in BROKEN else None,
)  # fmt: skip
def test_each_broken_class_is_named_with_its_phase(outside, cls: str, phase: str, message: str):
    with pytest.raises(ConfigError) as caught:
        verify_outside_attention(f"{MODULE}:{cls}")
    text = str(caught.value)
    assert f"attention '{MODULE}:{cls}' failed the interface check at {phase}" in text, text
    assert message in text and "LLNBENCH_DEBUG=1" in text and "check_attention(" in text, text
    assert "\n" not in text


def test_a_class_that_ignores_causal_is_refused(outside) -> None:
    verify_outside_attention(f"{MODULE}:IgnoresCausal")  # bidirectional: fine
    with pytest.raises(ConfigError, match=r"causal=True\): built with causal=True, its .causal"):
        verify_outside_attention(f"{MODULE}:IgnoresCausal", causal=True)


def test_builtins_are_not_checked_and_the_seeded_stream_is_untouched(outside) -> None:
    torch.manual_seed(0)
    before = torch.random.get_rng_state()
    verify_outside_attention("performer", causal=True)  # a built-in: nothing to do
    verify_outside_attention(f"{MODULE}:Good", num_heads=3, head_dim=4)
    verify_outside_attention("ep_good")
    assert torch.equal(torch.random.get_rng_state(), before)


def test_debug_env_shows_the_users_traceback(outside, monkeypatch) -> None:
    monkeypatch.setenv("LLNBENCH_DEBUG", "1")
    with pytest.raises(ValueError, match="my kernel needs N divisible by 64"):
        verify_outside_attention(f"{MODULE}:ForwardRaises")


@pytest.mark.parametrize(
    ("job", "args", "message"),
    [
        ("pretrain", ["attention=broken_attn:WrongShape", "model.heads=1"],
         "at first call (heads=1, head_dim=128, causal=False): forward returned (2, 1, 8, 127)"),
        ("pretrain", ["attention=ep_syntax", "model.causal=true"],
         "entry point 'ep_syntax' (llnbench.attentions): cannot import attention "
         "'broken_syntax_attn:Anything': SyntaxError in module 'broken_syntax_attn'"),
        ("glue", [*GLUE, "attention=broken_attn:InitRaises"], "at construction"),
        ("lra", ["task=listops", "attention=ep_shape"],
         "attention 'ep_shape' (entry point llnbench.attentions -> broken_attn:WrongShape)"),
        ("analyze", ["attentions=[softmax,broken_attn:NaNOut]", "seq_len=16", "draws=1",
                     "wandb.mode=disabled"], "non-finite fp32 output"),
        ("scale", [*SCALE, "--attention", "softmax,broken_attn:TupleOut"], "a tuple of 2"),
    ],
    ids=["pretrain-shape", "pretrain-causal-syntax-error", "glue-init", "lra-entry-point",
         "analyze-nan", "scale-named"],
)  # fmt: skip
def test_jobs_stop_before_any_work(outside, tmp_path, job: str, args: list[str], message: str):
    run_dir = tmp_path / "run"
    where = ["--out", str(run_dir)] if job == "scale" else [f"run_dir={run_dir}"]
    text = one_line(invoke(job, *args, *where))
    assert message in text, text
    assert not run_dir.exists()  # nothing written: no data, no model, no run directory


def test_scale_all_skips_a_broken_entry_point_with_a_row(outside, tmp_path) -> None:
    import json

    result = invoke("scale", *SCALE, "--attention", "all", "--out", str(tmp_path / "s"))
    assert result.exit_code == 0, result.output
    rows = {r["attention"]: r for r in json.loads((tmp_path / "s" / "scale.json").read_text())[
        "rows"]}  # fmt: skip
    assert rows["softmax"]["status"] == "ok" and rows["ep_good"]["status"] == "ok"
    for name, why in [("ep_shape", "forward returned"), ("ep_syntax", "SyntaxError"),
                      ("ep_missing", "No module named")]:  # fmt: skip
        assert rows[name]["status"] == "skipped" and why in rows[name]["reason"], rows[name]


# --- paths -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("finished")
    result = invoke("pretrain", *tiny_pretrain_args(base, base / "run"))
    assert result.exit_code == 0, result.output
    return base / "run"


def test_export_out_that_cannot_be_written_is_one_line(finished: Path, tmp_path: Path) -> None:
    (tmp_path / "a_file").write_text("x")
    text = one_line(invoke("export", str(finished), "--format", "hf", f"{tmp_path}/a_file/out"))
    assert f"cannot use '{tmp_path}/a_file' as a folder: it is a file" in text
    text = one_line(invoke("export", str(finished), "--format", "hf", "/proc/llnbench-out"))
    assert "cannot write '/proc/llnbench-out': /proc is a kernel filesystem" in text


def test_export_out_with_brackets_prints_as_typed_in_the_umask_mode(finished, tmp_path) -> None:
    out = tmp_path / "o[/x]"
    result = invoke("export", str(finished), "--format", "hf", str(out))
    assert result.exit_code == 0, result.output
    assert str(out) in result.output.replace("\n", "")
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in out.iterdir()}
    assert set(modes.values()) == {files.file_mode()}, modes  # safetensors wrote 0600
    assert stat.S_IMODE(out.stat().st_mode) == files.folder_mode()


def test_a_run_writes_every_file_in_one_mode(finished: Path) -> None:
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in finished.iterdir() if p.is_file()}
    assert {"config.yaml", "results.json", "checkpoint.pt", "metrics.jsonl"} <= set(modes)
    assert set(modes.values()) == {files.file_mode()}, modes


@pytest.mark.parametrize("make", ["fifo", "dev-full"])
def test_a_lock_file_that_is_not_a_file_is_one_line(tmp_path: Path, make: str) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    if make == "fifo":
        os.mkfifo(run_dir / ".llnbench.lock")
    else:
        os.symlink("/dev/full", run_dir / ".llnbench.lock")
    text = one_line(invoke("scale", *SCALE, "--attention", "softmax", "--out", str(run_dir)))
    kind = "a FIFO" if make == "fifo" else "a device"
    assert f"lock file '{run_dir}/.llnbench.lock': it is {kind}, not a regular file" in text


@pytest.mark.parametrize(
    ("code", "cause"),
    [(errno.ENOSPC, "no space left on device"), (errno.EROFS, "read-only filesystem")],
    ids=["disk-full", "read-only"],
)
def test_an_os_error_mid_write_names_the_file_and_leaves_no_temp(tmp_path, code, cause) -> None:
    def fail(handle: io.BufferedWriter) -> None:
        handle.write(b"half")
        raise OSError(code, os.strerror(code))

    target = tmp_path / "results.json"
    with pytest.raises(files.PathError, match=f"cannot write '{target}': {cause}"):
        files.atomic_write(target, fail)
    assert list(tmp_path.iterdir()) == []


def test_a_full_disk_under_torch_save_is_one_line(tmp_path, monkeypatch) -> None:
    def torch_full_disk(handle: io.BufferedWriter) -> None:  # what torch.save raises on ENOSPC
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64")

    monkeypatch.setattr(files, "_free_bytes", lambda folder: 0)
    target = tmp_path / "checkpoint.pt"
    with pytest.raises(files.PathError, match=f"cannot write '{target}': no space left on device"):
        files.atomic_write(target, torch_full_disk)
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setattr(files, "_free_bytes", lambda folder: 1 << 30)  # not the disk: as it was
    with pytest.raises(RuntimeError, match="enforce fail"):
        files.atomic_write(target, torch_full_disk)


def test_atomic_writes_take_the_umask_mode(tmp_path: Path) -> None:
    old = os.umask(0o027)
    try:
        path = files.write_text(tmp_path / "a.txt", "x")
        assert stat.S_IMODE(path.stat().st_mode) == 0o640
    finally:
        os.umask(old)
    assert stat.S_IMODE(files.write_json(tmp_path / "b.json", {}).stat().st_mode) == 0o666 & ~old


def test_a_folder_where_a_file_goes_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "scale.png").mkdir()
    with pytest.raises(files.PathError, match="it is a folder, not a regular file"):
        files.write_text(tmp_path / "scale.png", "x")


def test_unescaped_markup_prints_as_text(capsys) -> None:
    from llnbench.console import console

    console.print("run directory: [bold]/tmp/[/x][/bold]")  # a message that forgot escape()
    assert "/tmp/[/x]" in capsys.readouterr().out
