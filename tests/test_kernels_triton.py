"""Runs ``interp_triton_lln.py`` (the fused Triton LLN against float64, forward and backward) in a
child process under TRITON_INTERPRET=1, so the interpreter never leaks into the rest of the suite:
the variable must be set before ``import triton``, which this process may already have done."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("triton", reason="triton is part of the dev extra")
CHECKS = Path(__file__).with_name("interp_triton_lln.py")


def test_triton_kernels_match_float64_under_the_interpreter() -> None:
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONWARNINGS": "ignore"}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(CHECKS)],
        cwd=CHECKS.parent.parent, env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    summary = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert " passed" in summary and "failed" not in summary and "skipped" not in summary, summary
