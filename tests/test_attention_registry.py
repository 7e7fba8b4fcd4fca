"""The registry contract: names, options, errors, and a smoke test of every mechanism."""

from __future__ import annotations

import pytest
import torch
from helpers import qkv, right_padding_mask

from llnbench.attention import ATTENTIONS, attention_options, build_attention, causal_attentions
from llnbench.errors import ConfigError

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
    attn = build_attention(name, num_heads=2, head_dim=16, causal=causal)
    for flag in (
        "name",
        "causal",
        "supports_causal",
        "linear_in_n",
        "stochastic",
        "uses_attn_dropout",
        "complexity",
        "last_stats",
    ):
        assert hasattr(attn, flag)
    q, k, v = (t.requires_grad_() for t in qkv(2, 2, 70, 16, dtype=torch.float32))
    mask = right_padding_mask([70, 50], 70)
    out = attn(q, k, v, mask)
    assert out.shape == q.shape and out.dtype == torch.float32 and torch.isfinite(out).all()
    out.sum().backward()
    assert all(torch.isfinite(t.grad).all() for t in (q, k, v))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out16 = attn(q.bfloat16(), k.bfloat16(), v.bfloat16(), mask)
    assert out16.dtype == torch.bfloat16 and torch.isfinite(out16.float()).all()
    attn.eval()
    p = attn.attention_matrix(q.detach(), k.detach(), mask)
    assert p.shape == (2, 2, 70, 70)
