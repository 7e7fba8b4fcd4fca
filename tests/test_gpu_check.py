"""``make gpu-check`` on CPU: it says it needs CUDA and runs nothing; ``--dry-run`` rehearses
every step at tiny sizes (so a typo in a GPU command fails here); the goal verdicts."""

from __future__ import annotations

import json
import tarfile

import pytest
import torch

from llnbench.bench import gpu_check, gpu_plan, gpu_summary


def test_without_cuda_it_says_so_and_runs_nothing(tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert gpu_check.main([], cuda_available=lambda: False) == 0
    assert "gpu-check needs CUDA" in capsys.readouterr().out
    assert not (tmp_path / "runs").exists()


def test_unknown_step_is_refused(tmp_path, capsys) -> None:
    code = gpu_check.main(["--dry-run", "--out", str(tmp_path), "--skip", "scale-bidr"])
    assert code == 2 and "unknown step 'scale-bidr'" in capsys.readouterr().err


def test_plan_covers_the_issue_at_gpu_sizes(tmp_path) -> None:
    steps = {s.name: s for s in gpu_plan.plan(tmp_path, dry=False)}
    assert list(steps) == ["install", "scale-bidir", "scale-causal", "probe-64k", "profile",
                           "scale-model", "longest", "pretrain", "pretrain-compiled", "tests"]  # fmt: skip
    assert sum(s.budget_s for s in steps.values()) <= gpu_plan.BUDGET_S - 10
    bidir = steps["scale-bidir"].argv
    for arg in ("attentions=[softmax,lln,lln_diag]", "backends=[torch,triton]", "device=cuda",
                "dtype=bf16", "min_len=1024", "max_len=65536", "mode=fwdbwd",
                "sdpa_backend=auto"):  # fmt: skip
        assert arg in bidir
    causal = steps["scale-causal"].argv
    assert {"causal=true", "backends=[torch,triton,fla]", "sdpa_backend=auto"} <= set(causal)
    model = set(steps["scale-model"].argv)
    assert {"scope=model", "compile=true", "seq_lens=[4096,16384,65536]"} <= model
    assert steps["longest"].argv[-4:] == ["131072", "262144", "--device", "cuda"]
    assert steps["profile"].argv[-4:] == ["16384", "65536", "--device", "cuda"]
    train = steps["pretrain-compiled"].argv
    assert {"model=base", "block_size=4096", "trainer.compile=true",
            "trainer.precision=bf16"} <= set(train)  # fmt: skip
    assert "trainer.compile=false" in steps["pretrain"].argv
    assert steps["tests"].argv[-1] == "tests/test_gpu.py"
    assert all(s.env["LLNBENCH_FLA_AUTOTUNE"] == "short" for s in steps.values())


def test_gpu_sized_commands_compose_and_validate(tmp_path) -> None:
    """Every llnbench step at its GPU sizes composes and converts to its typed config (what
    the dry run cannot show, since it shrinks the sizes)."""
    from llnbench.cli import JOBS
    from llnbench.config import compose, from_dict, to_container

    for step in gpu_plan.plan(tmp_path, dry=False):
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


@pytest.mark.slow
def test_dry_run_rehearses_every_step(tmp_path, capsys) -> None:
    """Every step as a subprocess, as on the GPU (no CLI import here), at tiny CPU sizes (~50 s
    of CPU in all, two at a time on 2 cores)."""
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
    assert {r["series"] for r in rows} >= {"softmax", "softmax[flash]", "softmax[math]"}
    model = json.loads((out / "scale-model" / "scale.json").read_text())["rows"]
    assert {(r["attention"], r["seq_len"], r["compile"], r["status"]) for r in model} == {
        (a, n, "eager", "ok") for a in ("lln", "softmax") for n in (32, 64)}  # fmt: skip
    profile = json.loads((out / "profile.json").read_text())
    assert {r["series"] for r in profile if r["status"] == "ok"} >= {"softmax", "lln/torch"}
    longest = json.loads((out / "longest.json").read_text())
    assert [(r["seq_len"], r["status"], r["finite"]) for r in longest] == [
        (128, "ok", True), (256, "ok", True)]  # fmt: skip
    assert {r["run"]: r["compile"] for r in summary["pretrain"]} == {
        "pretrain-lln-64": "off", "pretrain-lln-64-compiled": "eager"}  # fmt: skip
    assert all(r["tokens_per_s"] > 0 for r in summary["pretrain"])
    goals = {g["key"]: g for g in summary["goals"]}
    assert goals["longest"]["verdict"] == "pass" and goals["model4k"]["measured"] is not None
    assert not list(out.rglob("*.pt"))  # checkpoints are dropped
    with tarfile.open(out / "gpu-check.tar.gz") as tar:
        assert "summary.md" in tar.getnames()
    printed = capsys.readouterr().out
    assert "| goal | target | measured | verdict | how |" in printed
    assert "| layer | N | backend | wall ms |" in printed and "| longest step N |" in printed


def _scale(folder, rows) -> None:
    folder.mkdir(parents=True)
    (folder / "scale.json").write_text(json.dumps({"rows": rows}))


def _row(series: str, n: int, ms: float, **extra) -> dict:
    return {"attention": series.split("/")[0].split("[")[0], "series": series, "seq_len": n, "mode": "fwdbwd",
            "status": "ok", "ms_median": ms, **extra}  # fmt: skip


def test_goal_verdicts_from_result_files(tmp_path) -> None:
    """Ratios against the fastest softmax (any SDPA backend) of the same N; a scale step cut by
    its budget is read from metrics.jsonl; the longest step's verdict is at 256k."""
    k16, k64 = 16384, 65536
    _scale(tmp_path / "scale-bidir", [
        _row("softmax[flash]", k16, 16.0), _row("softmax[cudnn]", k16, 10.0),
        _row("lln/triton", k16, 0.2), _row("lln/torch", k16, 1.0),
        _row("softmax[cudnn]", k64, 160.0), _row("lln/triton", k64, 4.0, x_floor=1.6,
                                                 floor_ms=2.5, bound="memory")])  # fmt: skip
    causal = tmp_path / "scale-causal"  # no scale.json: cut by its budget
    causal.mkdir()
    (causal / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in [
        _row("softmax[cudnn]", k16, 5.0), _row("lln/triton", k16, 1.0),
        _row("lln/fla", k16, 0.5)]))  # fmt: skip
    _scale(tmp_path / "scale-model", [_row("softmax", 4096, 30.0), _row("lln", 4096, 10.0)])
    (tmp_path / "probe-64k.json").write_text(json.dumps(
        {"bidir/torch": {"finite": True}, "bidir/triton": {"finite": True},
         "causal/fla": {"finite": None, "error": "no GPU"}}))  # fmt: skip
    (tmp_path / "longest.json").write_text(json.dumps([
        {"seq_len": 131072, "status": "ok", "step_ms": 500.0, "peak_gib": 50.0, "finite": True},
        {"seq_len": 262144, "status": "oom", "finite": None}]))  # fmt: skip
    n = {"bidir": k64, "mid": k16, "model": (4096, k16, k64), "longest": (131072, 262144)}
    rows = {g["key"]: (g["measured"], g["verdict"]) for g in gpu_summary.goals(tmp_path, n)}
    assert rows == {
        "bidir16k_ms": (0.2, "pass"), "bidir16k": (50.0, "pass"), "bidir64k_ms": (4.0, "gap"),
        "floor64k": (1.6, "pass"), "causal16k": (5.0, "gap"), "causal64k": (None, "not measured"),
        "model4k": (3.0, "pass"), "model16k": (None, "not measured"),
        "model64k": (None, "not measured"), "longest": (False, "fail"), "nan64k": (True, "pass"),
    }  # fmt: skip
    notes = {g["key"]: g["note"] for g in gpu_summary.goals(tmp_path, n)}
    assert (
        notes["bidir16k"].startswith("softmax[cudnn] 10 ms")
        and "lln/torch 10.0x" in notes["bidir16k"]
    )
    assert "lln/fla 10.0x" in notes["causal16k"] and "256k: oom" in notes["longest"]


def test_probe_steps_parse_at_gpu_sizes(tmp_path, monkeypatch) -> None:
    """The probe subcommands of the GPU plan reach their functions with the GPU lengths."""
    from llnbench.bench import gpu_probes

    calls = {}
    for name in ("nan_probe", "profile_layers", "longest_step"):
        monkeypatch.setattr(
            gpu_probes, name, lambda *args, _n=name: calls.setdefault(_n, args) and []
        )
    for step in gpu_plan.plan(tmp_path, dry=False):
        if step.kind == "module" and step.argv[0] == "llnbench.bench.gpu_probes":
            assert gpu_probes.main(step.argv[1:]) == 0
    assert calls["nan_probe"][1:] == (65536, torch.device("cuda"))
    assert calls["profile_layers"][1:] == ([16384, 65536], torch.device("cuda"))
    assert calls["longest_step"][1:] == ([131072, 262144], torch.device("cuda"), False)


def test_offline_wheels_go_into_the_site_folder_first_on_every_path(tmp_path, monkeypatch) -> None:
    """What a machine without a registry runs: pip --no-index --no-deps --target SITE *.whl."""
    import os
    import sys
    import zipfile

    wheels, site = tmp_path / "whl", tmp_path / "site"
    wheels.mkdir()
    info = "gpucheck_probe_pkg-1.0.dist-info"
    files = {
        "gpucheck_probe_pkg/__init__.py": "X = 1\n",
        f"{info}/METADATA": "Metadata-Version: 2.1\nName: gpucheck-probe-pkg\nVersion: 1.0\n",
        f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
        "Tag: py3-none-any\n",
    }
    files[f"{info}/RECORD"] = "".join(f"{name},,\n" for name in files) + f"{info}/RECORD,,\n"
    with zipfile.ZipFile(wheels / "gpucheck_probe_pkg-1.0-py3-none-any.whl", "w") as wheel:
        for name, text in files.items():
            wheel.writestr(name, text)
    monkeypatch.setattr(gpu_check, "NEEDED", {"gpucheck_probe_pkg": "gpucheck-probe-pkg"})
    monkeypatch.setattr(sys, "path", list(sys.path))
    step = gpu_plan.Step("install", 60, [], kind="install")
    gpu_check.install(step, tmp_path, wheels, dry=False, site=site)
    assert (step.status, step.detail) == ("ok", "installed gpucheck_probe_pkg")
    assert (site / "gpucheck_probe_pkg" / "__init__.py").exists()
    log = (tmp_path / "logs" / "install.log").read_text()
    assert "--no-index --no-deps --upgrade --target" in log
    path = gpu_check.child_env(step, site)["PYTHONPATH"].split(":")
    assert path[:2] == [str(site), os.getcwd()]
