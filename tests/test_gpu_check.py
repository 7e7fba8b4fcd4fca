"""``make gpu-check`` on CPU: it says it needs CUDA and runs nothing; ``--dry-run`` rehearses
every step at tiny sizes (so a typo in a GPU command fails here); the goal verdicts."""

from __future__ import annotations

import json
import tarfile

from llnbench.bench import gpu_check, gpu_summary


def test_without_cuda_it_says_so_and_runs_nothing(tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert gpu_check.main([], cuda_available=lambda: False) == 0
    assert "gpu-check needs CUDA" in capsys.readouterr().out
    assert not (tmp_path / "runs").exists()


def test_unknown_step_is_refused(tmp_path, capsys) -> None:
    code = gpu_check.main(["--dry-run", "--out", str(tmp_path), "--skip", "scale-bidr"])
    assert code == 2 and "unknown step 'scale-bidr'" in capsys.readouterr().err


def test_plan_covers_the_issue_at_gpu_sizes(tmp_path) -> None:
    steps = {s.name: s for s in gpu_check.plan(tmp_path, dry=False)}
    assert list(steps) == ["install", "tests", "scale-bidir", "scale-causal", "probe-64k",
                           "scale-model", "pretrain-512", "pretrain-4096"]  # fmt: skip
    assert sum(s.budget_s for s in steps.values()) <= gpu_check.BUDGET_S
    bidir = steps["scale-bidir"].argv
    for arg in (
        "attentions=[softmax,lln,lln_diag,performer,nystrom]",
        "backends=[torch,triton]",
        "device=cuda",
        "dtype=bf16",
        "min_len=1024",
        "max_len=65536",
        "mode=fwdbwd",
    ):
        assert arg in bidir
    assert "causal=true" in steps["scale-causal"].argv
    assert "backends=[torch,fla]" in steps["scale-causal"].argv
    assert {"scope=model", "max_len=16384"} <= set(steps["scale-model"].argv)
    train = steps["pretrain-4096"].argv
    assert {"model=base", "block_size=4096", "model.max_len=4096", "trainer.max_steps=200",
            "trainer.precision=bf16"} <= set(train)  # fmt: skip
    assert all(s.env["LLNBENCH_FLA_AUTOTUNE"] == "short" for s in steps.values())


def test_gpu_sized_commands_compose_and_validate(tmp_path) -> None:
    """Every llnbench step at its GPU sizes composes and converts to its typed config (what
    the dry run cannot show, since it shrinks the sizes)."""
    from llnbench.cli import JOBS
    from llnbench.config import compose, from_dict, to_container

    for step in gpu_check.plan(tmp_path, dry=False):
        if step.kind != "llnbench":
            continue
        job, *args = step.argv
        module_name, config_name = JOBS[job]
        cls = getattr(__import__(module_name, fromlist=[config_name]), config_name)
        cfg = from_dict(cls, to_container(compose(job, args)))
        if job == "pretrain":
            assert cfg.model.layers == 12 and cfg.trainer.precision == "bf16"
        else:
            assert cfg.device == "cuda" and cfg.dtype == "bf16"


def test_dry_run_rehearses_every_step(tmp_path, capsys) -> None:
    out, export = tmp_path / "gc", tmp_path / "export"
    assert gpu_check.main(["--dry-run", "--out", str(out), "--skip", "tests", "--export",
                           str(export)]) == 0  # fmt: skip
    assert sorted(p.name for p in export.iterdir()) == [
        "gpu-check.tar.gz", "summary.json", "summary.md"]  # fmt: skip
    summary = json.loads((out / "summary.json").read_text())
    status = {s["name"]: s["status"] for s in summary["steps"]}
    assert status.pop("tests") == "skipped" and status.pop("install") in ("ok", "skipped")
    assert set(status.values()) == {"ok"}, summary["steps"]
    rows = json.loads((out / "scale-causal" / "scale.json").read_text())["rows"]
    fla = [r for r in rows if r["series"] == "lln/fla"]
    assert fla and all(r["status"] == "skipped" and "CUDA" in r["reason"] for r in fla)
    assert {r["run"] for r in summary["pretrain"]} == {"pretrain-lln-512", "pretrain-lln-4096"}
    assert not list(out.rglob("*.pt"))  # checkpoints are dropped
    with tarfile.open(out / "gpu-check.tar.gz") as tar:
        assert "summary.md" in tar.getnames()
    printed = capsys.readouterr().out
    assert "| goal | target | measured | verdict | how |" in printed


def _scale(folder, rows) -> None:
    folder.mkdir(parents=True)
    (folder / "scale.json").write_text(json.dumps({"rows": rows}))


def _row(series: str, n: int, ms: float, **extra) -> dict:
    return {"attention": series.split("/")[0], "series": series, "seq_len": n, "mode": "fwdbwd",
            "status": "ok", "ms_median": ms, **extra}  # fmt: skip


def test_goal_verdicts_from_result_files(tmp_path) -> None:
    k16, k64 = 16384, 65536
    _scale(tmp_path / "scale-bidir", [
        _row("softmax", k16, 10.0), _row("lln/triton", k16, 0.4), _row("lln/torch", k16, 1.0),
        _row("softmax", k64, 160.0), _row("lln/triton", k64, 4.0, x_floor=1.6, floor_ms=2.5,
                                          bound="memory")])  # fmt: skip
    _scale(tmp_path / "scale-causal", [_row("softmax", k16, 5.0), _row("lln/fla", k16, 1.0)])
    _scale(tmp_path / "scale-model", [_row("softmax", 4096, 30.0), _row("lln", 4096, 10.0)])
    (tmp_path / "probe-64k.json").write_text(json.dumps(
        {"bidir/torch": {"finite": True}, "bidir/triton": {"finite": True}}))  # fmt: skip
    rows = gpu_summary.goals(tmp_path, k64, k16, (4096, k16))
    verdicts = [(g["measured"], g["verdict"]) for g in rows]
    assert verdicts == [(25.0, "pass"), (40.0, "gap"), (5.0, "gap"), (1.6, "pass"), (True, "pass"),
                        (3.0, "pass"), (None, "not measured")]  # fmt: skip
    assert "lln/torch 10.0x" in rows[0]["note"]
