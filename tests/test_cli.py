"""The command line as a user meets it: help, errors, --print-config, sweeps."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from llnbench.cli import app
from llnbench.command_help import EXAMPLES, job_help
from llnbench.config import config_dir

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, list(args))


def help_of(command: str, monkeypatch) -> str:
    """``llnbench command --help`` on a wide terminal, trailing padding removed."""
    monkeypatch.setenv("COLUMNS", "400")
    result = invoke(command, "--help")
    assert result.exit_code == 0, result.output
    return "\n".join(line.rstrip() for line in result.output.splitlines())


@pytest.mark.parametrize("command", ["scale", "pretrain", "glue", "lra", "analyze", "report"])
def test_every_command_has_help(command: str, monkeypatch) -> None:
    text = help_of(command, monkeypatch)
    assert "Usage" in text
    assert "Main keys" in text and "run_dir=null" in text
    assert f"Example:\n   {EXAMPLES[command]}" in text
    assert "Extra arguments are Hydra overrides" in text


@pytest.mark.parametrize(
    ("command", "shown"),
    [
        ("pretrain", ["attention", "*lln*, lln_diag", "or module:Class", "model", "*tiny*",
                      "data", "*embedded*, local, wikitext103", "trainer.max_steps=1200",
                      "experiment", "smoke_gpu, wikitext103_base; default: none"]),
        ("glue", ["task", "*sst2_rt*", "glue9", "need the network", "model", "default: none",
                  "trainer.seeds=null"]),
        ("lra", ["preset", "lra_listops", "task=listops", "listops | pathfinder32 | pathfinder64"]),
        ("analyze", ["mode=synthetic", "attentions=[softmax,lln,lln_diag,linear_elu,exp]"]),
        ("report", ["inputs=[runs]", "title=llnbench report"]),
    ],
)  # fmt: skip
def test_help_lists_groups_choices_and_defaults(command: str, shown: list[str], monkeypatch):
    text = help_of(command, monkeypatch)
    for piece in shown:
        assert piece in text, piece


def test_help_is_read_from_conf(tmp_path) -> None:
    """A choice added to conf/ and a changed default show up in the help without code changes."""
    root = tmp_path / "conf"
    shutil.copytree(config_dir(), root)
    (root / "attention" / "my_mech.yaml").write_text("name: my_mech\n")
    text = (root / "pretrain.yaml").read_text().replace("- model: tiny", "- model: small")
    (root / "pretrain.yaml").write_text(text.replace("seed: 0", "seed: 7  # the new seed"))
    body = job_help("pretrain", root)
    assert "my_mech" in body and "*small*" in body and "*tiny*" not in body
    assert "seed=7" in body and "the new seed" in body


@pytest.mark.parametrize("command", sorted(EXAMPLES))
def test_help_examples_compose(command: str) -> None:
    args = shlex.split(EXAMPLES[command])[1:]
    result = invoke(*args, "--print-config")
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize(
    ("flag", "value"), [("--causal", "true"), ("--no-causal", "false")], ids=["on", "off"]
)
def test_causal_is_a_flag_as_the_help_says(flag: str, value: str, monkeypatch) -> None:
    help_text = help_of("scale", monkeypatch)
    assert "--causal" in help_text and "--no-causal" in help_text and "no value" in help_text
    result = invoke("scale", flag, "--print-config")
    assert result.exit_code == 0 and f"\ncausal: {value}\n" in result.output, result.output


def test_a_value_after_a_flag_is_one_line() -> None:
    result = invoke("scale", "--causal", "true")
    assert result.exit_code == 2
    text = result.output.strip()
    assert "'true' is not an override" in text and "--causal or --no-causal" in text
    assert len(text.splitlines()) == 1


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
