"""The check every job runs on a mechanism from outside llnbench, before any data or model work.

``attention=my_pkg.mod:MyAttention`` (or an ``llnbench.attentions`` entry point) is imported,
built with the job's heads, head dim and causality, and called once on a tiny padded fp32 batch
(:func:`llnbench.testing.check_interface` with ``n=8``): a class that cannot be imported, raises
in ``__init__`` or in its first call, or returns the wrong shape, dtype or non-finite values
stops the job in one line naming the spec, the phase and the mismatch, instead of 100 lines of
traceback deep in the model. ``LLNBENCH_DEBUG=1`` re-raises the original exception.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, Protocol

import torch

from llnbench.attention import attention_class, check_options
from llnbench.attention.external import ENTRY_POINT_GROUP, entry_point_targets, is_spec
from llnbench.errors import ConfigError, LlnbenchError
from llnbench.testing.checks import check_interface

DEBUG_ENV = "LLNBENCH_DEBUG"
N = 8  # tokens: enough for padding (lengths 8 and 5), cheap at any head dim


class _Named(Protocol):
    name: str
    options: dict[str, Any]


def is_outside(name: str) -> bool:
    """A ``module:Class`` spec or an entry-point name (built-in names always win)."""
    if is_spec(name):
        return True
    return name in entry_point_targets() and not _is_builtin(name)


def _is_builtin(name: str) -> bool:
    try:
        return attention_class(name).__module__.startswith("llnbench.attention.")
    except ConfigError:
        return False


def verify_outside_attention(
    attention: str | _Named,
    options: Mapping[str, Any] | None = None,
    *,
    causal: bool = False,
    num_heads: int = 2,
    head_dim: int = 8,
    device: torch.device | str = "cpu",
) -> None:
    """Nothing for a built-in mechanism; for an outside one, import, build and call it once as
    the job will (on the job's ``device``: a CUDA-only kernel is fine), or raise one ConfigError
    line naming the spec, the phase and what went wrong."""
    name = attention if isinstance(attention, str) else attention.name
    if options is None:
        options = {} if isinstance(attention, str) else attention.options
    if not is_outside(name):
        return
    label = _label(name)
    device = torch.device(device)
    # a mechanism with random parameters must not move the job's seeded random streams
    with torch.random.fork_rng(devices=_cuda_indices(device)):
        _check(name, options, label, causal=causal, num_heads=num_heads, head_dim=head_dim,
               device=device)  # fmt: skip


def _cuda_indices(device: torch.device) -> list[int]:
    if device.type != "cuda":
        return []
    return [device.index if device.index is not None else torch.cuda.current_device()]


def _check(
    name: str, options: Mapping[str, Any], label: str, *, causal: bool, num_heads: int,
    head_dim: int, device: torch.device,
) -> None:  # fmt: skip
    phase = "import"
    try:
        cls = attention_class(name)
        values = check_options(name, options, prefix="attention")  # ConfigErrors say it all
        phase = "construction"
        attn = cls(num_heads=num_heads, head_dim=head_dim, causal=causal, dropout=0.0, **values)
        attn = attn.to(device)
        if bool(getattr(attn, "causal", causal)) != causal:
            raise AssertionError(
                f"built with causal={causal}, its .causal is {getattr(attn, 'causal', None)!r}"
            )
        phase = "first call"
        check_interface(attn, n=N, lengths=(N, N - 3), bf16=False, matrix=False, device=device)
    except LlnbenchError as err:
        if phase == "import":
            raise
        raise ConfigError(f"attention {label} at {phase}: {err}") from None
    except Exception as err:  # anything the user's class raises: name it, not the model
        if os.environ.get(DEBUG_ENV):
            raise
        what = str(err) if isinstance(err, AssertionError) else _one_line(err)
        raise ConfigError(
            f"attention {label} failed the interface check at {phase} (heads={num_heads}, "
            f"head_dim={head_dim}, causal={causal}): {what}. More: {DEBUG_ENV}=1 for the "
            f"traceback, or {reproduce_command(name, options)}"
        ) from None


def _label(name: str) -> str:
    if is_spec(name):
        return repr(name)
    return f"{name!r} (entry point {ENTRY_POINT_GROUP} -> {entry_point_targets()[name]})"


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    if len(text) > 300:
        text = text[:297] + "..."
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def reproduce_command(name: str, options: Mapping[str, Any] | None = None) -> str:
    """The shell command that runs the whole parity kit on ``name`` (with its options)."""
    extra = f", options={dict(options)!r}" if options else ""
    return (
        'python -c "from llnbench.attention import attention_class; from llnbench.testing '
        f"import check_attention; check_attention(attention_class('{name}'){extra})\""
    )


def broken_outside_attentions(
    names: list[str],
    options: Mapping[str, Mapping[str, Any]],
    *,
    skip_broken: bool,
    causal: bool,
    num_heads: int,
    head_dim: int,
    device: torch.device | str = "cpu",
) -> dict[str, str]:
    """:func:`verify_outside_attention` on each of ``names`` (causal where the class has a causal
    form). A failure raises, unless ``skip_broken`` (``scale --attention all``: one broken
    entry point must not stop the others): then it is returned as ``{name: the one line}``."""
    broken: dict[str, str] = {}
    for name in names:
        try:
            if not is_outside(name):
                continue
            has_causal = attention_class(name).supports_causal
            verify_outside_attention(
                name, options.get(name, {}), causal=causal and has_causal,
                num_heads=num_heads, head_dim=head_dim, device=device,
            )  # fmt: skip
        except ConfigError as err:
            if not skip_broken:
                raise
            broken[name] = str(err)
    return broken
