"""Attention registry: ``build_attention(name, num_heads=..., head_dim=..., causal=..., **options)``.

Adding a built-in mechanism means one new file (a subclass of ``Attention``) and one line in
``_REGISTRY``. Mechanisms from other packages need no change here: the ``llnbench.attentions``
entry-point group and ``module.path:ClassName`` specs (``llnbench.attention.external``) register
them for every job. A mechanism's options are the keyword arguments of its ``__init__``, checked
against their annotations (``llnbench.attention.options``).
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping
from typing import Any

from llnbench.attention import external
from llnbench.attention.base import Attention
from llnbench.attention.options import COMMON_ARGS, check_option_values, option_hints
from llnbench.attention.options import option_parameters as _option_parameters
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


def _names() -> list[str]:
    """Built-in names, then installed entry points (a built-in name is never shadowed)."""
    plugins = [n for n in external.entry_point_targets() if n not in _REGISTRY]
    return [*_REGISTRY, *plugins]


class _LazyRegistry(Mapping[str, type[Attention]]):
    """Registered names -> classes, imported on first use. Iterating lists built-ins and entry
    points; a ``module.path:ClassName`` spec is looked up too (``spec in ATTENTIONS``)."""

    def __getitem__(self, name: str) -> type[Attention]:
        try:
            return attention_class(name)
        except ConfigError:
            raise KeyError(name) from None

    def __iter__(self) -> Iterator[str]:
        return iter(_names())

    def __len__(self) -> int:
        return len(_names())


ATTENTIONS: Mapping[str, type[Attention]] = _LazyRegistry()


def attention_class(name: str) -> type[Attention]:
    """The class of a built-in name, an entry-point name or a ``module:Class`` spec; raises a
    ConfigError that lists the allowed names (or says why a spec cannot be used)."""
    if name in _REGISTRY:
        module_name, cls_name = _REGISTRY[name].split(":")
        module = importlib.import_module(f"llnbench.attention.{module_name}")
        return getattr(module, cls_name)
    if external.is_spec(name):
        return external.load_spec(name)
    target = external.entry_point_targets().get(name)
    if target is None:
        raise one_of("attention", name, _names())
    try:
        return external.load_spec(target)
    except ConfigError as err:
        raise ConfigError(f"entry point {name!r} ({external.ENTRY_POINT_GROUP}): {err}") from None


def _composite(mechanism: str | type[Attention]) -> tuple[type[Attention], str | None]:
    cls = attention_class(mechanism) if isinstance(mechanism, str) else mechanism
    # A composite (lln_diag) forwards **options to an inner mechanism: accept those too.
    return cls, getattr(cls, "inner_attention", None)


def attention_options(mechanism: str | type[Attention]) -> dict[str, Any]:
    """The options a mechanism (a name, a spec or a class) accepts, with their defaults
    (``inspect.Parameter.empty`` for a required one)."""
    cls, inner = _composite(mechanism)
    options = {n: p.default for n, p in _option_parameters(cls).items()}
    return {**attention_options(inner), **options} if inner else options


def attention_option_types(mechanism: str | type[Attention]) -> dict[str, Any]:
    """The type hint of each option (its annotation; else its default's type; else Any)."""
    cls, inner = _composite(mechanism)
    hints = option_hints(cls)
    return {**attention_option_types(inner), **hints} if inner else hints


def check_options(
    mechanism: str | type[Attention], options: Mapping[str, Any], prefix: str = ""
) -> dict[str, Any]:
    """``options`` checked against the mechanism's signature: an unknown option, an ill-typed value
    (``eps='abc'``, ``eps=nan``) or a missing required option raises a one-line ConfigError naming
    it as ``<prefix>.<option>``. Returns the values converted to their types."""
    label = mechanism if isinstance(mechanism, str) else mechanism.name
    defaults, hints = attention_options(mechanism), attention_option_types(mechanism)
    return check_option_values(label, options, defaults, hints, prefix)


def causal_attentions() -> list[str]:
    """Names with a causal form (an entry point that cannot be loaded is left out)."""
    out = []
    for name in _names():
        try:
            if attention_class(name).supports_causal:
                out.append(name)
        except ConfigError:
            continue
    return out


def build_attention(
    name: str,
    *,
    num_heads: int,
    head_dim: int,
    causal: bool = False,
    dropout: float = 0.0,
    **options: Any,
) -> Attention:
    """Build a registered mechanism; unknown names/options, ill-typed option values and
    unsupported causality raise a ConfigError."""
    cls = attention_class(name)
    if causal and not cls.supports_causal:
        raise ConfigError(
            f"attention {cls.name!r} has no causal form; causal attentions: "
            f"{', '.join(causal_attentions())}"
        )
    values = check_options(name, options)
    return cls(num_heads=num_heads, head_dim=head_dim, causal=causal, dropout=dropout, **values)


__all__ = [
    "ATTENTIONS",
    "COMMON_ARGS",
    "Attention",
    "attention_class",
    "attention_option_types",
    "attention_options",
    "build_attention",
    "causal_attentions",
    "check_options",
]
