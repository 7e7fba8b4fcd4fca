"""Mechanisms from outside llnbench: module:Class specs and the llnbench.attentions entry points."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest
from outside_mechanisms import fake_distribution
from typer.testing import CliRunner

from llnbench.attention import (
    ATTENTIONS,
    attention_class,
    attention_options,
    build_attention,
    causal_attentions,
)
from llnbench.cli import app
from llnbench.config import compose, to_container
from llnbench.errors import ConfigError
from llnbench.schema import AttentionConfig

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "cosine-attention"
SPEC = "llnbench_cosine.attention:CosineAttention"


@pytest.fixture
def example_on_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """The example package importable (not installed: no entry point)."""
    monkeypatch.syspath_prepend(str(EXAMPLE))


def test_spec_builds_with_typed_options(example_on_path: None) -> None:
    cls = attention_class(SPEC)
    assert cls.__name__ == "CosineAttention" and SPEC in ATTENTIONS
    assert attention_options(SPEC) == {
        "temperature": 10.0,
        "learnable_temperature": False,
        "eps": 1e-6,
    }
    attn = build_attention(SPEC, num_heads=2, head_dim=8, causal=True, temperature=3)
    assert attn.temperature == 3.0 and isinstance(attn.temperature, float)
    with pytest.raises(ConfigError, match=r"bad value 'hot' for option 'temperature'"):
        build_attention(SPEC, num_heads=2, head_dim=8, temperature="hot")
    with pytest.raises(
        ConfigError, match=r"unknown option 'tau' for attention '.*CosineAttention'"
    ):
        build_attention(SPEC, num_heads=2, head_dim=8, tau=1.0)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("no_such_pkg.mod:Cls", "cannot import attention 'no_such_pkg.mod:Cls': No module named"),
        ("llnbench.attention.softmax:Nope", "has no attribute 'Nope'"),
        ("os.path:join", "not a subclass of llnbench.attention.Attention"),
        ("llnbench.attention.base:Attention", "does not implement attention_matrix, forward"),
        (":Cls", "is not of the form module.path:ClassName"),
    ],
    ids=["no-module", "no-attribute", "not-a-subclass", "abstract", "malformed"],
)
def test_unusable_specs_say_why(spec: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        attention_class(spec)


def test_entry_points_register_for_every_job(tmp_path: Path, monkeypatch) -> None:
    site = fake_distribution(
        tmp_path / "site",
        {
            "cosine": SPEC,
            "softmax": SPEC,  # a built-in name is never shadowed
            "broken": "no_such_pkg.mod:Cls",
        },
    )
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.syspath_prepend(str(EXAMPLE))
    names = list(ATTENTIONS)
    assert names[-2:] == ["cosine", "broken"] and names.count("softmax") == 1
    assert attention_class("softmax").__module__ == "llnbench.attention.softmax"
    assert attention_class("cosine").__name__ == "CosineAttention"
    assert "cosine" in causal_attentions() and "broken" not in causal_attentions()
    with pytest.raises(ConfigError, match=r"entry point 'broken' \(llnbench.attentions\): cannot"):
        attention_class("broken")
    # the Hydra group knows it without a yaml, with the options' defaults
    cfg = to_container(compose("pretrain", ["attention=cosine", "attention.temperature=4"]))
    assert cfg["attention"] == {
        "name": "cosine",
        "temperature": 4,
        "learnable_temperature": False,
        "eps": 1e-6,
    }
    assert AttentionConfig.from_config(cfg["attention"]).name == "cosine"


def test_cli_composes_a_spec_and_refuses_bad_values(example_on_path: None) -> None:
    runner = CliRunner()
    result = runner.invoke(
        app, ["pretrain", f"attention={SPEC}", "attention.temperature=2.5", "--print-config"]
    )
    assert result.exit_code == 0, result.output
    assert f"name: {SPEC}" in result.output and "temperature: 2.5" in result.output
    for override, message in [
        ("attention.temperature=nan", "bad value nan for attention.temperature; expected a"),
        ("attention.tau=1", "unknown option attention.tau for attention"),
    ]:
        result = runner.invoke(app, ["pretrain", f"attention={SPEC}", override])
        assert result.exit_code == 2 and message in result.output, result.output
    result = runner.invoke(app, ["scale", "--attention", "nope.mod:Cls"])
    assert result.exit_code == 2 and "cannot import attention 'nope.mod:Cls'" in result.output


def test_required_options_must_be_given(monkeypatch: pytest.MonkeyPatch) -> None:
    from llnbench.attention.softmax import SoftmaxAttention

    class Scaled(SoftmaxAttention):
        def __init__(self, *, num_heads, head_dim, causal=False, dropout=0.0, scale: float):
            super().__init__(num_heads=num_heads, head_dim=head_dim, causal=causal)
            self.scale = scale

    module = types.ModuleType("scaled_attention_mod")
    module.Scaled = Scaled  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "scaled_attention_mod", module)
    spec = "scaled_attention_mod:Scaled"
    with pytest.raises(ConfigError, match=r"needs attention.scale: give attention.scale=VALUE"):
        AttentionConfig.from_config(to_container(compose("pretrain", [f"attention={spec}"]))[
            "attention"])  # fmt: skip
    cfg = to_container(compose("pretrain", [f"attention={spec}", "attention.scale=2"]))
    assert AttentionConfig.from_config(cfg["attention"]).options == {"scale": 2}
