"""Config composition and typed conversion: every bad input becomes one clear line."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import pytest

from llnbench.attention import ATTENTIONS, attention_options
from llnbench.config import compose, config_dir, from_dict, sweep_overrides, to_container
from llnbench.errors import ConfigError
from llnbench.schema import AttentionConfig


@dataclass
class Inner:
    lr: float = 1e-3
    steps: int = 10


@dataclass
class Outer:
    mode: Literal["a", "b"] = "a"
    names: list[str] = field(default_factory=list)
    inner: Inner = field(default_factory=Inner)
    path: str | None = None


def test_from_dict_builds_nested_dataclasses() -> None:
    cfg = from_dict(Outer, {"mode": "b", "names": ["x"], "inner": {"lr": 1, "steps": 3}})
    assert cfg == Outer(mode="b", names=["x"], inner=Inner(lr=1.0, steps=3))
    assert isinstance(cfg.inner.lr, float)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"mood": "a"}, r"unknown config key 'mood'; allowed: inner, mode, names, path"),
        ({"inner": {"lrr": 1}}, r"unknown config key 'inner.lrr'; allowed: lr, steps"),
        ({"mode": "c"}, r"bad value 'c' for mode; allowed: a, b"),
        ({"inner": {"steps": "ten"}}, r"bad value 'ten' for inner.steps; expected an integer"),
        ({"inner": {"steps": True}}, r"expected an integer"),
        ({"names": 3}, r"names must be a list"),
    ],
    ids=["unknown-key", "unknown-nested", "literal", "int", "bool-not-int", "list"],
)
def test_from_dict_errors(data: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        from_dict(Outer, data)


def test_attention_config_validates_name_and_options() -> None:
    cfg = AttentionConfig.from_config({"name": "lln", "eps": 1e-5})
    assert cfg.options == {"eps": 1e-5} and cfg.to_dict() == {"name": "lln", "eps": 1e-5}
    with pytest.raises(ConfigError, match="unknown attention 'lnn'"):
        AttentionConfig.from_config({"name": "lnn"})
    with pytest.raises(ConfigError, match=r"unknown option attention.window for attention 'lln'"):
        AttentionConfig.from_config({"name": "lln", "window": 3})


def test_sweeps_expand_to_combinations() -> None:
    combos = sweep_overrides(["attention=softmax,lln", "seed=1,2", "x=3"])
    assert combos == [
        ["attention=softmax", "seed=1", "x=3"],
        ["attention=softmax", "seed=2", "x=3"],
        ["attention=lln", "seed=1", "x=3"],
        ["attention=lln", "seed=2", "x=3"],
    ]
    assert sweep_overrides(["a=1"]) == [["a=1"]]


def test_config_dir_and_compose() -> None:
    assert (config_dir() / "scale.yaml").is_file()
    cfg = to_container(compose("scale", ["max_len=2048", "wandb.mode=disabled"]))
    assert cfg["max_len"] == 2048 and cfg["wandb"]["mode"] == "disabled"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["bogus=1"], r"unknown config key 'bogus'; allowed: .*max_len"),
        (["wandb.bogus=1"], r"unknown config key 'wandb.bogus'; allowed: wandb.mode"),
        (["wandb=nope"], r"Could not find 'wandb/nope'; allowed: default"),
        (["attentions=[a"], r"cannot parse override 'attentions=\[a'"),
    ],
    ids=["top-level", "nested", "group", "syntax"],
)
def test_hydra_errors_become_one_line(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        compose("scale", overrides)
    assert "\n" not in str(info.value)


def test_attention_config_reads_its_own_saved_form() -> None:
    """Checkpoints store AttentionConfig as {name, options}; loading must accept that form."""
    saved = {"name": "lln", "options": {"eps": 1e-5}}
    assert AttentionConfig.from_config(saved) == AttentionConfig("lln", {"eps": 1e-5})


@pytest.mark.parametrize("name", sorted(ATTENTIONS))
def test_every_attention_has_a_config_group_with_its_defaults(name: str) -> None:
    """`attention=<name>` composes for every registered mechanism, and the yaml's options exist."""
    cfg = to_container(compose("pretrain", [f"attention={name}"]))["attention"]
    attention = AttentionConfig.from_config(cfg)
    assert attention.name == name
    defaults = attention_options(name)
    for key, value in attention.options.items():
        assert value == defaults[key], f"conf/attention/{name}.yaml {key}={value} != class default"


def test_a_new_mechanism_needs_no_yaml(monkeypatch: pytest.MonkeyPatch) -> None:
    """One file and one registry line make `attention=<name>` work; options take class defaults."""
    from llnbench import attention

    monkeypatch.setitem(attention._REGISTRY, "softmax_twin", "softmax:SoftmaxAttention")
    cfg = to_container(compose("pretrain", ["attention=softmax_twin"]))["attention"]
    assert cfg == {"name": "softmax_twin"}
