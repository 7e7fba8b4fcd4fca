"""The command line as a user meets it: help, errors, --print-config, sweeps."""

from __future__ import annotations

import subprocess
import sys

import pytest
from typer.testing import CliRunner

from llnbench.cli import app

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, list(args))


@pytest.mark.parametrize("command", ["scale", "pretrain", "glue", "analyze", "report"])
def test_every_command_has_help(command: str) -> None:
    result = invoke(command, "--help")
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["scale", "--attention", "flash"], "unknown attention 'flash'; allowed: all, softmax"),
        (["scale", "bogus=1"], "unknown config key 'bogus'"),
        (["scale", "--mode", "sideways"], "bad value 'sideways' for mode; allowed: fwd, fwdbwd"),
        (["scale", "--device", "tpu"], "unknown device 'tpu'; allowed: auto, cpu, cuda"),
        (["scale", "--min-len", "512", "--max-len", "64"], "need 1 <= min_len <= max_len"),
        (["scale", "--attention", "lara", "--causal"], "'lara' has no causal form"),
        (["scale", "max_len=1024,2048"], "is a sweep of 2 runs; add --multirun"),
    ],
    ids=["attention", "key", "literal", "device", "lengths", "causal", "sweep"],
)
def test_user_errors_are_one_line_exit_2(args: list[str], message: str) -> None:
    result = invoke(*args)
    assert result.exit_code == 2
    text = result.output.strip()
    assert message in text
    assert "Traceback" not in text and len(text.splitlines()) == 1, text


def test_print_config_shows_composed_overrides() -> None:
    result = invoke("scale", "--print-config", "--max-len", "2048", "--attention", "lln,softmax")
    assert result.exit_code == 0
    assert "max_len: 2048" in result.output and "- lln" in result.output


def test_console_script_entry_point() -> None:
    """`python -m llnbench` and the installed script share main(); errors exit 2 cleanly."""
    proc = subprocess.run(
        [sys.executable, "-m", "llnbench", "scale", "--attention", "nope"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "unknown attention 'nope'" in proc.stderr and "Traceback" not in proc.stderr
