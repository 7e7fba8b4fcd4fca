"""The registry contract: names, options, errors, and a smoke test of every mechanism."""

from __future__ import annotations

import pytest

from llnbench.attention import ATTENTIONS, attention_options, build_attention, causal_attentions
from llnbench.errors import ConfigError
from llnbench.testing import check_batch_independence, check_interface

NAMES = [
    "softmax",
    "lln",
    "lln_diag",
    "lara",
    "ra",
    "performer",
    "linear_elu",
    "cosformer",
    "nystrom",
    "local",
]


def test_registered_names() -> None:
    assert sorted(ATTENTIONS) == sorted(NAMES)


def test_unknown_name_lists_allowed() -> None:
    with pytest.raises(ConfigError, match=r"unknown attention 'flash'; allowed: .*lln_diag"):
        build_attention("flash", num_heads=1, head_dim=4)


def test_unknown_option_lists_allowed() -> None:
    with pytest.raises(ConfigError, match=r"unknown option 'epsilon' for attention 'lln'.*eps"):
        build_attention("lln", num_heads=1, head_dim=4, epsilon=1.0)
    # a composite accepts its inner mechanism's options
    assert "eps" in attention_options("lln_diag") and "diag_block" in attention_options("lln_diag")


def test_bad_option_values_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="allowed: auto, paper, fit"):
        build_attention("lln", num_heads=1, head_dim=4, constants="published")
    with pytest.raises(ConfigError, match="allowed: average"):
        build_attention("lln_diag", num_heads=1, head_dim=4, combine="sum")


@pytest.mark.parametrize("name", ["lara", "nystrom"])
def test_causal_refused_where_unsupported(name: str) -> None:
    with pytest.raises(ConfigError, match=r"no causal form.*lln"):
        build_attention(name, num_heads=1, head_dim=4, causal=True)
    assert name not in causal_attentions()


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("causal", [False, True], ids=["bidir", "causal"])
def test_smoke_fp32_and_bf16_autocast(name: str, causal: bool) -> None:
    cls = ATTENTIONS[name]
    if causal and not cls.supports_causal:
        pytest.skip(f"{name} has no causal form")
    check_interface(build_attention(name, num_heads=2, head_dim=16, causal=causal))


# Options under which each mechanism claims batch independence (eval mode, float64).
BATCH_INDEPENDENT = {
    "softmax": {}, "lln": {"stats_scope": "sequence"}, "lln_diag": {"stats_scope": "head"},
    "lara": {"num_landmarks": 4}, "ra": {}, "performer": {}, "linear_elu": {}, "cosformer": {},
    "nystrom": {"num_landmarks": 4}, "local": {"window": 3},
}  # fmt: skip


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("causal", [False, True], ids=["bidir", "causal"])
def test_batch_independence(name: str, causal: bool) -> None:
    if causal and not ATTENTIONS[name].supports_causal:
        pytest.skip(f"{name} has no causal form")
    attn = build_attention(name, num_heads=2, head_dim=8, causal=causal, **BATCH_INDEPENDENT[name])
    check_batch_independence(attn.double().eval())


def test_batch_pooled_statistics_are_not_batch_independent() -> None:
    """LLN's default stats_scope=batch pools sigma_q, sigma_k over the batch: the check fails."""
    attn = build_attention("lln", num_heads=2, head_dim=8).double()
    with pytest.raises(AssertionError, match="batch independence: sequence 0"):
        check_batch_independence(attn)
