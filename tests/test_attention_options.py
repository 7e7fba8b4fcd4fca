"""Typed attention options: each mechanism's __init__ annotations decide what a value may be."""

from __future__ import annotations

import subprocess
import sys
from typing import Literal

import pytest
from typer.testing import CliRunner

from llnbench.attention import attention_option_types, build_attention, check_options
from llnbench.attention.options import check_value
from llnbench.cli import app
from llnbench.errors import ConfigError

runner = CliRunner()


@pytest.mark.parametrize(
    ("hint", "value", "expected"),
    [
        (float, 1, 1.0),
        (float, 2.5, 2.5),
        (int, 3, 3),
        (bool, False, False),
        (str, "auto", "auto"),
        (int | None, None, None),
        (str | int, 200, 200),
        (tuple[float, float], [0.8, 1], (0.8, 1.0)),
        (tuple[float, float] | list[float] | None, [0.5, 2.0], (0.5, 2.0)),
        (list[int], (1, 2), [1, 2]),
        (Literal["a", "b"], "b", "b"),
    ],
    ids=lambda x: repr(x)[:20],
)
def test_values_that_fit_are_converted(hint, value, expected) -> None:
    got = check_value(hint, value, "attention.x")
    assert got == expected and type(got) is type(expected)


@pytest.mark.parametrize(
    ("hint", "value", "message"),
    [
        (float, "abc", "bad value 'abc' for attention.x; expected a finite number (float)"),
        (float, float("nan"), "bad value nan for attention.x; expected a finite number"),
        (float, float("-inf"), "bad value -inf for attention.x; expected a finite number"),
        (float, True, "bad value True for attention.x; expected a finite number"),
        (int, 1.5, "expected an integer (int)"),
        (int, True, "expected an integer"),
        (bool, "yes", "expected true or false (bool)"),
        (str, 3, "expected a string (str)"),
        (int | None, "x", "expected an integer or null (int | None)"),
        (tuple[float, float], [1.0], "expected a list of 2 [a finite number, a finite number]"),
        (tuple[float, float], [1.0, float("nan")], "expected a list of 2"),
        (Literal["a", "b"], "c", "bad value 'c' for attention.x; allowed: a, b"),
        (Literal[1, 2], True, "allowed: 1, 2"),
    ],
    ids=lambda x: repr(x)[:20],
)
def test_values_that_do_not_fit_name_option_value_and_type(hint, value, message) -> None:
    with pytest.raises(ConfigError) as info:
        check_value(hint, value, "attention.x")
    assert message in str(info.value)


def test_builtin_annotations_drive_the_checks() -> None:
    types = attention_option_types("lln")
    assert types["eps"] is float and types["chunk"] is int and types["moment_matching"] is bool
    assert set(attention_option_types("lln_diag")) >= {"diag_block", "eps"}  # composite: both
    assert check_options("lln", {"eps": 1, "fixed_alpha_beta": [1, 2]}) == {
        "eps": 1.0,
        "fixed_alpha_beta": (1.0, 2.0),
    }
    with pytest.raises(ConfigError, match=r"bad value 'x' for option 'eps' of attention 'lln'"):
        build_attention("lln", num_heads=1, head_dim=4, eps="x")
    with pytest.raises(ConfigError, match=r"bad value 4.5 for options.local.window; expected an"):
        check_options("local", {"window": 4.5}, prefix="options.local")


def invoke(*args: str):
    return runner.invoke(app, list(args))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["pretrain", "attention=lln", "attention.eps=abc"],
            "bad value 'abc' for attention.eps; expected a finite number (float)",
        ),
        (["pretrain", "attention=lln", "attention.eps=nan"], "bad value nan for attention.eps"),
        (["pretrain", "attention=lln", "attention.eps=inf"], "bad value inf for attention.eps"),
        (["pretrain", "attention=lln", "attention.chunk=1.5"], "bad value 1.5 for attention.chunk"),
        (
            ["pretrain", "attention=lln", "attention.moment_matching=yes"],
            "bad value 'yes' for attention.moment_matching; expected true or false (bool)",
        ),
        (
            ["pretrain", "attention=lln", "attention.epsilon=1"],
            "unknown option attention.epsilon for attention 'lln'; allowed: backend, chunk",
        ),
        (
            ["analyze", "options.lln.eps=abc"],
            "bad value 'abc' for options.lln.eps; expected a finite number (float)",
        ),
        (["analyze", "options.lln.eps=nan"], "bad value nan for options.lln.eps"),
        (["scale", "options.lara.num_landmarks=x"], "bad value 'x' for options.lara.num_landmarks"),
        (["glue", "attention=lln", "attention.eps=inf"], "bad value inf for attention.eps"),
    ],
    ids=[
        "pretrain-str", "pretrain-nan", "pretrain-inf", "pretrain-int", "pretrain-bool",
        "pretrain-unknown", "analyze-str", "analyze-nan", "scale-int", "glue-inf",
    ],
)  # fmt: skip
def test_cli_refuses_ill_typed_options_in_one_line(args: list[str], message: str) -> None:
    result = invoke(*args)
    text = result.output.strip()
    assert result.exit_code == 2, text
    assert message in text
    assert "Traceback" not in text and len(text.splitlines()) == 1, text


def test_options_not_listed_in_the_yaml_need_no_plus() -> None:
    """attention.momentum is an option of lln without a line in lln.yaml."""
    result = invoke("pretrain", "attention=lln", "attention.momentum=0.2", "--print-config")
    assert result.exit_code == 0, result.output
    assert "momentum: 0.2" in result.output


def test_console_script_prints_one_line_without_traceback() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "llnbench", "pretrain", "attention=lln", "attention.eps=abc"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert lines == ["llnbench: error: bad value 'abc' for attention.eps; expected a finite "
                     "number (float)"], proc.stderr  # fmt: skip
