"""``torch.compile`` as a config switch: ``false`` (off), ``true`` (inductor) or a backend name.

Used by ``trainer.compile`` (the model of a training run) and ``llnbench scale --compile`` (the
layer or model a cell times). ``aot_eager`` traces forward and backward without generating code
(fast to compile: the CPU tests use it); ``inductor`` generates kernels (C++ on CPU, Triton on
CUDA). The GPU kernels of LLN (``attention/kernels``) are excluded from tracing
(``torch.compiler.disable``), so a compiled model runs them as they are.
"""

from __future__ import annotations

from typing import Literal, TypeVar

import torch

from llnbench.errors import one_of

CompileBackend = Literal["inductor", "aot_eager", "eager"]
COMPILE_BACKENDS = ("inductor", "aot_eager", "eager")
T = TypeVar("T")


def compile_backend(setting: bool | str) -> str | None:
    """None for off, else the torch.compile backend a setting names."""
    if setting is False:
        return None
    if setting is True:
        return "inductor"
    if setting not in COMPILE_BACKENDS:
        raise one_of("compile setting", setting, ["true", "false", *COMPILE_BACKENDS])
    return setting


def maybe_compile(fn: T, setting: bool | str) -> T:
    """``torch.compile(fn, backend=...)`` when the setting asks for it, else ``fn`` itself."""
    backend = compile_backend(setting)
    return fn if backend is None else torch.compile(fn, backend=backend)  # type: ignore[return-value]
