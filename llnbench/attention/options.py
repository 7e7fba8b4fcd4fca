"""A mechanism's options, read from its ``__init__`` signature, and typed checks of their values.

Every keyword argument of ``__init__`` other than the common ones (``num_heads``, ``head_dim``,
``causal``, ``dropout``) is an option; its annotation is the type a value must have (its default's
type when unannotated). Values come from YAML/Hydra (``attention.eps=1e-5``) or Python, so the
checks are strict: ``'abc'`` is not a float, ``True`` is not an integer, ``nan`` and ``inf`` are
refused for floats, and ``1`` for a float becomes ``1.0``.

Supported annotations: int, float, bool, str, None, Literal[...], Optional / unions, tuple[X, Y],
tuple[X, ...], list[X], dict, Any, and plain classes (checked with isinstance).
"""

from __future__ import annotations

import inspect
import math
import sys
import types
import typing
from collections.abc import Mapping
from typing import Any, Literal, Union, get_args, get_origin

from llnbench.errors import ConfigError

# Keyword arguments every mechanism takes; everything else is a mechanism option.
COMMON_ARGS = ("num_heads", "head_dim", "causal", "dropout")
# OmegaConf's marker of a mandatory value that was not given (``???``).
MISSING = "???"
REQUIRED = inspect.Parameter.empty


def option_parameters(cls: type) -> dict[str, inspect.Parameter]:
    """The options of ``cls.__init__`` (keyword arguments beyond the common ones), in order."""
    params = inspect.signature(cls.__init__).parameters
    kinds = (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return {
        p.name: p
        for p in params.values()
        if p.name != "self" and p.name not in COMMON_ARGS and p.kind in kinds
    }


def option_hints(cls: type) -> dict[str, Any]:
    """The type each option of ``cls`` takes: its annotation, else its default's type, else Any."""
    params = option_parameters(cls)
    try:
        hints = typing.get_type_hints(cls.__init__)
    except Exception:  # one unresolvable annotation (a TYPE_CHECKING import): resolve one by one
        hints = {name: _resolve(cls, p.annotation) for name, p in params.items()}
    out = {}
    for name, p in params.items():
        hint = hints.get(name, inspect.Parameter.empty)
        if hint is inspect.Parameter.empty:
            default = p.default
            hint = type(default) if default not in (REQUIRED, None) else Any
        out[name] = hint
    return out


def _resolve(cls: type, annotation: Any) -> Any:
    if not isinstance(annotation, str):
        return annotation
    module = sys.modules.get(cls.__module__)
    try:
        return eval(annotation, vars(module) if module else {}, {"typing": typing})
    except Exception:  # unresolvable: the value is not checked
        return Any


def check_option_values(
    label: str,
    options: Mapping[str, Any],
    defaults: Mapping[str, Any],
    hints: Mapping[str, Any],
    prefix: str = "",
) -> dict[str, Any]:
    """``options`` of mechanism ``label`` checked against its signature (``defaults``, ``hints``):
    an unknown option, an ill-typed value (``eps='abc'``, ``eps=nan``) or a missing required
    option raises a one-line ConfigError naming it as ``<prefix>.<option>``. Returns the values
    converted to their types."""

    def where(key: str) -> str:
        return f"{prefix}.{key}" if prefix else f"option {key!r} of attention {label!r}"

    unknown = sorted(set(options) - set(defaults))
    if unknown:
        shown = f"{prefix}.{unknown[0]}" if prefix else repr(unknown[0])
        raise ConfigError(
            f"unknown option {shown} for attention {label!r}; allowed: "
            f"{', '.join(sorted(defaults)) or '(none)'}"
        )
    missing = [
        k for k, d in defaults.items() if d is REQUIRED and options.get(k, MISSING) == MISSING
    ]
    if missing:
        raise ConfigError(
            f"attention {label!r} needs {where(missing[0])}: give "
            f"{prefix or 'attention'}.{missing[0]}=VALUE"
        )
    return {key: check_value(hints[key], value, where(key)) for key, value in options.items()}


def check_value(hint: Any, value: Any, where: str) -> Any:
    """``value`` converted to ``hint`` (int -> float, list -> tuple), or a ConfigError naming
    ``where`` (e.g. ``attention.eps``), the value and the expected type."""
    ok, converted = _match(hint, value)
    if ok:
        return converted
    if get_origin(hint) is Literal:
        allowed = ", ".join(map(str, get_args(hint)))
        raise ConfigError(f"bad value {value!r} for {where}; allowed: {allowed}")
    raise ConfigError(
        f"bad value {value!r} for {where}; expected {describe(hint)} ({type_text(hint)})"
    )


def _match(hint: Any, value: Any) -> tuple[bool, Any]:
    """(True, converted value) when ``value`` fits ``hint``, else (False, None)."""
    origin = get_origin(hint)
    if hint is Any or hint is inspect.Parameter.empty:
        return True, value
    if hint is None or hint is type(None):
        return value is None, None
    if origin is Literal:
        # 1 == True and 1 == 1.0 in Python: a Literal value must also have the literal's type
        ok = any(type(value) is type(a) and value == a for a in get_args(hint))
        return ok, value
    if origin in (Union, types.UnionType):
        for arm in get_args(hint):
            ok, converted = _match(arm, value)
            if ok:
                return True, converted
        return False, None
    if origin in (tuple, list) or hint in (tuple, list):
        return _match_sequence(hint, value)
    if origin is dict or hint is dict:
        return isinstance(value, dict), value
    if hint is bool:
        return isinstance(value, bool), value
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if hint is float:
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if number and math.isfinite(value):
            return True, float(value)
        return False, None
    if hint is str:
        return isinstance(value, str), value
    if isinstance(hint, type):
        return isinstance(value, hint), value
    return True, value  # a typing construct we do not model (Callable, TypeVar, ...): unchecked


def _match_sequence(hint: Any, value: Any) -> tuple[bool, Any]:
    if not isinstance(value, (list, tuple)):
        return False, None
    origin = get_origin(hint) or hint
    args = get_args(hint)
    if origin is tuple and args and args[-1] is not Ellipsis:
        items = list(args)
        if len(items) != len(value):
            return False, None
    else:
        items = [args[0] if args else Any] * len(value)
    converted = []
    for item_hint, item in zip(items, value):
        ok, item = _match(item_hint, item)
        if not ok:
            return False, None
        converted.append(item)
    return True, tuple(converted) if origin is tuple else converted


def describe(hint: Any) -> str:
    """The expected value in words: 'a finite number', 'an integer or null', ..."""
    origin = get_origin(hint)
    if hint is None or hint is type(None):
        return "null"
    if origin is Literal:
        return "one of " + ", ".join(map(str, get_args(hint)))
    if origin in (Union, types.UnionType):
        return " or ".join(dict.fromkeys(describe(arm) for arm in get_args(hint)))
    if origin in (tuple, list) or hint in (tuple, list):
        args = get_args(hint)
        if (origin or hint) is tuple and args and args[-1] is not Ellipsis:
            return f"a list of {len(args)} [{', '.join(describe(a) for a in args)}]"
        return f"a list of {describe(args[0])} items" if args else "a list"
    if origin is dict or hint is dict:
        return "a mapping"
    words = {
        bool: "true or false",
        int: "an integer",
        float: "a finite number",
        str: "a string",
    }
    if hint in words:
        return words[hint]
    return f"an instance of {type_text(hint)}"


def type_text(hint: Any) -> str:
    """The annotation as written: ``float``, ``int | None``, ``tuple[float, float]``."""
    if hint is type(None):
        return "None"
    if isinstance(hint, type) and not get_args(hint):
        return hint.__qualname__
    return str(hint).replace("typing.", "").replace("NoneType", "None")
