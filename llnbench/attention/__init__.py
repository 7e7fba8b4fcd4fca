"""Attention registry: ``build_attention(name, num_heads=..., head_dim=..., causal=..., **options)``.

Adding a mechanism means one new file (a subclass of ``Attention``) and one line in ``_REGISTRY``.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Iterator, Mapping
from typing import Any

from llnbench.attention.base import Attention
from llnbench.errors import ConfigError, one_of

# name -> "module:Class" inside llnbench.attention; imported on first use.
_REGISTRY: dict[str, str] = {
    "softmax": "softmax:SoftmaxAttention",
    "lln": "lln:LLNAttention",
    "lln_diag": "lln_diag:LLNDiagAttention",
    "lara": "lara:LARAAttention",
    "ra": "ra:RandomizedAttention",
    "performer": "performer:PerformerAttention",
    "linear_elu": "linear_elu:LinearEluAttention",
    "cosformer": "cosformer:CosFormerAttention",
    "nystrom": "nystrom:NystromAttention",
    "local": "local:LocalAttention",
}

# Keyword arguments every mechanism takes; everything else is a mechanism option.
COMMON_ARGS = ("num_heads", "head_dim", "causal", "dropout")


class _LazyRegistry(Mapping[str, type[Attention]]):
    def __getitem__(self, name: str) -> type[Attention]:
        if name not in _REGISTRY:
            raise KeyError(name)
        module_name, cls_name = _REGISTRY[name].split(":")
        module = importlib.import_module(f"llnbench.attention.{module_name}")
        return getattr(module, cls_name)

    def __iter__(self) -> Iterator[str]:
        return iter(_REGISTRY)

    def __len__(self) -> int:
        return len(_REGISTRY)


ATTENTIONS: Mapping[str, type[Attention]] = _LazyRegistry()


def attention_class(name: str) -> type[Attention]:
    if name not in _REGISTRY:
        raise one_of("attention", name, sorted(_REGISTRY))
    return ATTENTIONS[name]


def attention_options(name: str) -> dict[str, Any]:
    """The options a mechanism accepts, with their defaults."""
    cls = attention_class(name)
    params = inspect.signature(cls.__init__).parameters
    options = {
        p.name: p.default
        for p in params.values()
        if p.name != "self" and p.name not in COMMON_ARGS and p.kind == p.KEYWORD_ONLY
    }
    # A composite (lln_diag) forwards **options to an inner mechanism: accept those too.
    inner = getattr(cls, "inner_attention", None)
    if inner is not None:
        options = {**attention_options(inner), **options}
    return options


def causal_attentions() -> list[str]:
    return [name for name in _REGISTRY if ATTENTIONS[name].supports_causal]


def build_attention(
    name: str,
    *,
    num_heads: int,
    head_dim: int,
    causal: bool = False,
    dropout: float = 0.0,
    **options: Any,
) -> Attention:
    """Build a registered mechanism; unknown names/options and unsupported causality raise."""
    cls = attention_class(name)
    allowed = attention_options(name)
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ConfigError(
            f"unknown option {unknown[0]!r} for attention {name!r}; allowed: "
            f"{', '.join(sorted(allowed)) or '(none)'}"
        )
    return cls(num_heads=num_heads, head_dim=head_dim, causal=causal, dropout=dropout, **options)


__all__ = [
    "ATTENTIONS",
    "Attention",
    "attention_class",
    "attention_options",
    "build_attention",
    "causal_attentions",
]
