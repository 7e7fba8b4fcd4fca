"""Mechanisms from outside llnbench: ``module.path:ClassName`` specs and the entry-point group.

A third-party package registers a mechanism in its ``pyproject.toml``::

    [project.entry-points."llnbench.attentions"]
    cosine = "llnbench_cosine.attention:CosineAttention"

and ``attention=cosine`` then works in every job. Without packaging, ``attention=my_pkg.mod:Cls``
names any importable subclass of :class:`llnbench.attention.Attention`. Built-in names win over
entry points of the same name.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import os
import sys
from importlib import metadata

from llnbench.attention.base import Attention
from llnbench.errors import ConfigError

ENTRY_POINT_GROUP = "llnbench.attentions"


def is_spec(name: str) -> bool:
    """``module.path:ClassName`` (a colon), as opposed to a registered name."""
    return ":" in name


def entry_point_targets() -> dict[str, str]:
    """name -> ``module:Class`` for every installed ``llnbench.attentions`` entry point."""
    return dict(_entry_points(tuple(sys.path)))


@functools.lru_cache(maxsize=8)
def _entry_points(path: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    # keyed on sys.path: a package installed (or put on the path) later in the process is found
    found: dict[str, str] = {}
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        found.setdefault(ep.name, ep.value)  # two distributions, one name: the first on the path
    return tuple(found.items())


@functools.lru_cache(maxsize=64)
def load_spec(spec: str) -> type[Attention]:
    """The class a ``module.path:ClassName`` spec names, checked to be a usable mechanism."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ConfigError(f"attention {spec!r} is not of the form module.path:ClassName")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ConfigError(f"cannot import attention {spec!r}: {err}") from None
    except Exception as err:  # a syntax error, or the module raising as it runs
        if os.environ.get("LLNBENCH_DEBUG"):
            raise
        where = f" ({err.filename}, line {err.lineno})" if isinstance(err, SyntaxError) else ""
        raise ConfigError(
            f"cannot import attention {spec!r}: {type(err).__name__} in module {module_name!r}"
            f"{where}: {getattr(err, 'msg', None) or err}. More: LLNBENCH_DEBUG=1 for the "
            f"traceback, or python -c 'import {module_name}'"
        ) from None
    obj: object = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ConfigError(f"attention {spec!r}: {module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    return check_class(spec, obj)


def check_class(spec: str, obj: object) -> type[Attention]:
    """Refuse what cannot be built as a mechanism, naming what is wrong."""
    if not (isinstance(obj, type) and issubclass(obj, Attention)):
        raise ConfigError(
            f"attention {spec!r} is {obj!r}, not a subclass of llnbench.attention.Attention"
        )
    if inspect.isabstract(obj):
        missing = ", ".join(sorted(obj.__abstractmethods__))
        raise ConfigError(f"attention {spec!r} does not implement {missing}")
    params = inspect.signature(obj.__init__).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    needed = [a for a in ("num_heads", "head_dim", "causal", "dropout") if a not in params]
    if needed and not takes_any:
        raise ConfigError(
            f"attention {spec!r}: __init__ must accept the keyword arguments num_heads, "
            f"head_dim, causal, dropout (missing {', '.join(needed)})"
        )
    return obj
