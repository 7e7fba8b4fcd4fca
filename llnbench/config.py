"""Compose ``conf/`` with Hydra, then turn the result into typed dataclasses, once, at the edge.

Below this module everything is plain Python: jobs receive a validated dataclass, never a DictConfig.
Hydra and OmegaConf errors become one-line ``ConfigError`` messages here.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import types
import typing
from pathlib import Path
from typing import Any, Literal, NewType, TypeVar, Union, get_args, get_origin

from llnbench.errors import ConfigError

T = TypeVar("T")
# A random seed field: numpy's range, the narrowest of the generators a seed reaches.
Seed = NewType("Seed", int)
SEED_LIMIT = 2**32


def config_dir() -> Path:
    """The Hydra config tree: inside the installed package (wheel) or at the checkout's root."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "conf", here.parent / "conf"):
        if candidate.is_dir():
            return candidate
    raise ConfigError(f"config directory not found next to {here} (broken installation?)")


# ---------------------------------------------------------------------------------------------
# Composition


# Plain keys of a job's config that share their name with a config group of another job
# (`llnbench lra task=listops` beside GLUE's conf/task/): Hydra would take `task=...` for a group
# choice, so these overrides are applied to the composed config instead.
PLAIN_KEYS: dict[str, tuple[str, ...]] = {"lra": ("task",)}


def compose(job: str, overrides: list[str]) -> Any:
    """Compose ``conf/<job>.yaml`` with Hydra overrides; returns a resolved DictConfig."""
    from omegaconf import OmegaConf

    try:
        plain, rest = _split_plain(job, overrides)
        cfg = _hydra_compose(job, [open_option_override(o) for o in rest])
        for key, value in plain:
            OmegaConf.update(cfg, key, value, merge=False)
        OmegaConf.resolve(cfg)
        return cfg
    except Exception as err:  # Hydra/OmegaConf raise many types; all are user errors here
        raise ConfigError(hydra_message(err, job, overrides)) from None


def _split_plain(job: str, overrides: list[str]) -> tuple[list[tuple[str, Any]], list[str]]:
    """(key, value) of the overrides of ``PLAIN_KEYS[job]``, and the others for Hydra."""
    keys = PLAIN_KEYS.get(job, ())
    if not keys:
        return [], list(overrides)
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    plain, rest = [], []
    for text in overrides:
        override = parser.parse_override(text)
        change = not (override.is_add() or override.is_force_add() or override.is_delete())
        if override.key_or_group in keys and change and not override.is_sweep_override():
            plain.append((override.key_or_group, override.value()))
        else:
            rest.append(text)
    return plain, rest


# Mechanism options are open mappings checked against the class signature, not Hydra struct
# nodes: ``attention.momentum=0.2`` (an option its yaml does not list) and
# ``options.lln.eps=1e-5`` (scale, analyze) need no ``+``; the signature check names a bad one.
OPTION_KEYS = ("attention.", "options.")


def open_option_override(override: str) -> str:
    """``attention.<opt>=v`` / ``options.<name>.<opt>=v`` as ``++`` (add or override) overrides."""
    key = override.split("=", 1)[0]
    if key.startswith(OPTION_KEYS) and "@" not in key and key.count(".") >= 1:
        return f"++{override}"
    return override


def _hydra_compose(job: str, overrides: list[str]) -> Any:
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    _register_bare_attentions(overrides)
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
            return hydra_compose(config_name=job, overrides=overrides)
    finally:
        GlobalHydra.instance().clear()


def _register_bare_attentions(overrides: list[str] | None = None) -> None:
    """Make ``attention=<name>`` work for a mechanism that has no yaml: a registered one (built-in
    or entry point) or a ``module.path:ClassName`` spec named in the overrides.

    Adding a mechanism stays one file and one registry line: its options then take the class
    defaults. ``conf/attention/<name>.yaml`` (which documents the options) wins when it exists.
    A selected mechanism's node lists its options with their defaults, so that
    ``attention.<option>=...`` overrides them (and ``--print-config`` shows them).
    """
    from hydra.core.config_store import ConfigStore

    from llnbench.attention import ATTENTIONS
    from llnbench.attention.external import is_spec

    store = ConfigStore.instance()
    registered = list(ATTENTIONS)
    # an unknown plain name is left to Hydra, which lists the choices; a spec is imported here,
    # so that a broken one says why (no module, not an Attention subclass, ...)
    selected = [n for n in selected_attentions(overrides or []) if n in registered or is_spec(n)]
    for name in dict.fromkeys([*registered, *selected]):
        if (config_dir() / "attention" / f"{name}.yaml").is_file():
            continue
        node = attention_node(name) if name in selected else {"name": name}
        store.store(group="attention", name=name, node=node)


def selected_attentions(overrides: list[str]) -> list[str]:
    """The values of ``attention=...`` overrides (every value of a sweep)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except Exception:  # a malformed override: composing reports it
        return []
    names = []
    for override in parsed:
        if override.get_key_element() != "attention":
            continue
        if override.is_sweep_override():
            names += [str(v) for v in override.sweep_string_iterator()]
        elif isinstance(override.value(), str):
            names.append(override.value())
    return names


def attention_node(name: str) -> dict[str, Any]:
    """``{name, option: default, ...}`` from the class signature (raises for an unusable
    mechanism, saying why). A required option is ``???`` (mandatory); a default that YAML cannot
    hold is left out (it is still settable with ``+attention.<option>=``)."""
    from llnbench.attention import attention_options
    from llnbench.attention.options import MISSING, REQUIRED

    node: dict[str, Any] = {"name": name}
    for key, default in attention_options(name).items():
        if default is REQUIRED:
            node[key] = MISSING
        elif _yaml_value(default):
            node[key] = list(default) if isinstance(default, tuple) else default
    return node


def _yaml_value(value: Any) -> bool:
    if isinstance(value, (list, tuple)):
        return all(_yaml_value(v) for v in value)
    return value is None or isinstance(value, (bool, int, float, str))


def hydra_message(err: BaseException, job: str = "", overrides: list[str] | None = None) -> str:
    """One informative line from a Hydra/OmegaConf error, naming what is allowed where possible."""
    text = str(err).strip() or type(err).__name__
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    first = lines[0]
    if first.startswith("Could not override") and "'" in first:
        key = first.split("'")[1]
        allowed = _allowed_keys(job, key)
        return f"unknown config key {key!r}; allowed: {allowed or '(see --print-config)'}"
    if "Could not find" in first:  # a missing config group option: Hydra lists the choices
        available = [ln for ln in lines[1:] if not ln.startswith(("Config search", "provider="))]
        choices = ", ".join(available[1:]) if len(available) > 1 else ""
        return f"{first.split(': ', 1)[-1]}; allowed: {choices}" if choices else first
    if "Ambiguous value" in first:
        return f"{first}: a comma list is a sweep, add --multirun to run each value"
    if type(err).__name__ == "OverrideParseException":
        bad = _unparsable(overrides or [])
        if bad is None:
            return f"cannot parse overrides {' '.join(overrides or [])!r}: {first}"
        hint = ""
        key, _, value = bad.partition("=")
        if any(c in value for c in "[]{}()") and not value.startswith(("[", "{")):  # a path
            hint = f" (a value with brackets needs quotes, in the shell: '{key}=\"{value}\"')"
        return f"cannot parse override {bad!r}: {first}{hint}"
    return first


def _unparsable(overrides: list[str]) -> str | None:
    """The first override Hydra's grammar rejects on its own (the error names none)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    for override in overrides:
        try:
            parser.parse_overrides([override])
        except Exception:  # Hydra's parse errors have several types
            return override
    return None


def _allowed_keys(job: str, key: str) -> str | None:
    """The keys that exist beside ``key`` in the job's default config (for 'unknown key');
    None when its parent is absent or an empty mapping."""
    from omegaconf import DictConfig

    try:
        node = _hydra_compose(job, [])
        parent = key.rsplit(".", 1)[0] if "." in key else ""
        for part in parent.split(".") if parent else []:
            if not isinstance(node, DictConfig) or part not in node:
                return None
            node = node[part]
        if not isinstance(node, DictConfig):
            return "(not a mapping)"
        if len(node) == 0:
            return None
        prefix = f"{parent}." if parent else ""
        return ", ".join(f"{prefix}{k}" for k in node)
    except Exception:  # the default config itself is broken: the key list is unavailable
        return "(see --print-config)"


def sweep_overrides(overrides: list[str]) -> list[list[str]]:
    """Expand comma sweeps (``attention=softmax,lln``) into one override list per combination."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except Exception as err:
        raise ConfigError(hydra_message(err, overrides=overrides)) from None
    choices = []
    for override in parsed:
        key = override.get_key_element()
        if override.is_sweep_override():
            values = list(override.sweep_string_iterator())
            choices.append([f"{key}={value}" for value in values])
        else:
            choices.append([override.input_line])
    return [list(combo) for combo in itertools.product(*choices)]


def has_sweep(overrides: list[str]) -> bool:
    return len(sweep_overrides(overrides)) > 1


def to_yaml(cfg: Any) -> str:
    from omegaconf import OmegaConf

    return OmegaConf.to_yaml(cfg, resolve=True)


def to_container(cfg: Any) -> dict[str, Any]:
    from omegaconf import OmegaConf

    return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]


# ---------------------------------------------------------------------------------------------
# Typed conversion


def from_dict(cls: type[T], data: Any, path: str = "") -> T:
    """Build dataclass ``cls`` from plain data, naming any unknown key or ill-typed value.

    A dataclass may define ``from_config(data, path)`` to take over its own conversion.
    """
    custom = getattr(cls, "from_config", None)
    if custom is not None:
        return custom(data, path)
    if not isinstance(data, dict):
        raise ConfigError(f"{path or 'config'} must be a mapping, got {data!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(
            f"unknown config key {_join(path, unknown[0])!r}; allowed: {', '.join(sorted(fields))}"
        )
    hints = typing.get_type_hints(cls)
    kwargs = {name: convert(hints[name], value, _join(path, name)) for name, value in data.items()}
    try:
        obj = cls(**kwargs)
    except TypeError as err:
        raise ConfigError(f"{path or 'config'}: {err}") from None
    validate = getattr(obj, "validate", None)
    if validate is not None:
        validate()
    return obj


def convert(tp: Any, value: Any, path: str) -> Any:
    """Check and coerce one value against a type hint (dataclass, Literal, Optional, list, ...)."""
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin is Literal:
        allowed = get_args(tp)
        if value not in allowed:
            raise ConfigError(
                f"bad value {value!r} for {path}; allowed: {', '.join(map(str, allowed))}"
            )
        return value
    if origin in (Union, types.UnionType):
        options = get_args(tp)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return convert(option, value, path)
            except ConfigError as err:
                errors.append(str(err))
        allowed = [e.split("; allowed: ", 1)[1] for e in errors if "; allowed: " in e]
        if len(allowed) > 1 and len(allowed) == len(errors):  # e.g. bool | Literal[...]
            raise ConfigError(f"bad value {value!r} for {path}; allowed: {', '.join(allowed)}")
        raise ConfigError(errors[0] if errors else f"bad value {value!r} for {path}")
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, path)
    if origin in (list, tuple):
        if isinstance(value, str):
            value = [v for v in value.split(",") if v]  # "a,b" from a Typer option
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{path} must be a list, got {value!r}")
        (item_tp, *_) = get_args(tp) or (Any,)
        items = [convert(item_tp, v, f"{path}[{i}]") for i, v in enumerate(value)]
        return items if origin is list else tuple(items)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{path} must be a mapping, got {value!r}")
        return dict(value)
    return _scalar(tp, value, path)


def _scalar(tp: Any, value: Any, path: str) -> Any:
    if tp is Seed:
        if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < SEED_LIMIT:
            return value
        raise ConfigError(f"bad value {value!r} for {path}; a seed is an integer in 0..2^32-1")
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"bad value {value!r} for {path}; allowed: true, false")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"bad value {value!r} for {path}; expected an integer")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(value):  # nan/inf parse as floats but are never a setting
                raise ConfigError(f"bad value {value!r} for {path}; expected a finite number")
            return float(value)
        raise ConfigError(f"bad value {value!r} for {path}; expected a number")
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"bad value {value!r} for {path}; expected a string")
    return value


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key
