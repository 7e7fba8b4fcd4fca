"""The example third-party mechanism (examples/cosine-attention), as a user installs and runs it:
pip-installed (offline, into a folder), registered through its entry point, pretrained for a few
steps by name and by ``module:Class``, timed by ``scale``, and its own pytest (llnbench.testing)
passing, broken-variant check included."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import tiny_pretrain_args
from typer.testing import CliRunner

from llnbench.cli import app

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "cosine-attention"
SPEC = "llnbench_cosine.attention:CosineAttention"
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``pip install --target``: no network (no index, no build isolation: the venv's setuptools)
    and no build files left in the checkout (it builds from a copy)."""
    root = tmp_path_factory.mktemp("example")
    source = shutil.copytree(
        EXAMPLE, root / "src", ignore=shutil.ignore_patterns("build", "*.egg-info")
    )
    target = root / "site"
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index",
         "--no-build-isolation", "--target", str(target), str(source)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert (target / "llnbench_cosine_attention-0.1.0.dist-info" / "entry_points.txt").is_file()
    return target


def environment(site: Path) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]),
    }


def pretrain(tmp_path: Path, *overrides: str) -> dict:
    run_dir = tmp_path / "run"
    result = CliRunner().invoke(
        app, ["pretrain", *tiny_pretrain_args(tmp_path, run_dir, *overrides)]
    )
    assert result.exit_code == 0, result.output
    return json.loads((run_dir / "results.json").read_text())


def test_pretrain_and_scale_by_entry_point_name(installed: Path, tmp_path, monkeypatch) -> None:
    monkeypatch.syspath_prepend(str(installed))  # as site-packages: the dist-info is found there
    results = pretrain(tmp_path, "attention=cosine", "attention.temperature=5")
    assert results["attention"] == {
        "name": "cosine", "temperature": 5, "learnable_temperature": False, "eps": 1e-6,
    }  # fmt: skip
    assert results["steps"] == 6
    out = tmp_path / "scale"
    result = CliRunner().invoke(app, [
        "scale", "--attention", "cosine", "--min-len", "16", "--max-len", "32", "--device", "cpu",
        "--heads", "2", "--head-dim", "8", "--mode", "fwd", "--out", str(out), "warmup=1",
        "min_time_s=0", "max_repeats=2", "wandb.mode=disabled",
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    rows = json.loads((out / "scale.json").read_text())["rows"]
    assert [(r["attention"], r["seq_len"], r["status"]) for r in rows] == [
        ("cosine", 16, "ok"), ("cosine", 32, "ok"),
    ]  # fmt: skip


def test_pretrain_by_module_and_class(installed: Path, tmp_path, monkeypatch) -> None:
    monkeypatch.syspath_prepend(str(installed))
    results = pretrain(tmp_path, f"attention={SPEC}", "attention.learnable_temperature=true")
    assert results["attention"]["name"] == SPEC and results["attention"]["learnable_temperature"]


def test_the_example_packages_own_pytest(installed: Path) -> None:
    """Its tests run llnbench.testing on the mechanism and on a deliberately broken variant."""
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(EXAMPLE / "tests")],
        capture_output=True, text=True, timeout=300, cwd=installed,
        env={**os.environ, "PYTHONPATH": str(installed)},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert "5 passed" in proc.stdout, proc.stdout[-500:]
