"""``torch.compile`` as a config switch, for ``trainer.compile`` and ``llnbench scale --compile``.

Settings: ``false`` (off); ``true`` or ``inductor`` (generated kernels: C++ on CPU, Triton on
CUDA); ``aot_eager`` (dynamo + AOT autograd, no code generation: seconds, what the CPU tests use);
``eager`` (dynamo only); ``reduce-overhead`` (inductor, and CUDA graphs where shapes are static).

The whole model is one graph: the MLM head's gather of the masked positions (a size that depends
on the data) is traced as a data-dependent-size op instead of breaking the graph, and the LLN
kernels are reached through the attention modules' own code (``attention/kernels`` decides how a
kernel appears to the compiler). ``reduce-overhead`` wants static shapes for its CUDA graphs, so
there the head's gather is left to break the graph on purpose: the encoder (every attention
layer, forward and backward) is one static graph that is replayed as a CUDA graph, and the head
after it, whose size changes every step, runs as a compiled graph without CUDA graphs.
"""

from __future__ import annotations

from typing import Literal, TypeVar

import torch

from llnbench.errors import one_of

CompileBackend = Literal["inductor", "aot_eager", "eager", "reduce-overhead"]
COMPILE_BACKENDS = ("inductor", "aot_eager", "eager", "reduce-overhead")
CUDA_GRAPHS = "reduce-overhead"
T = TypeVar("T")


def compile_backend(setting: bool | str) -> str | None:
    """None for off, else the compile setting named (``true`` is ``inductor``)."""
    if setting is False:
        return None
    if setting is True:
        return "inductor"
    if setting not in COMPILE_BACKENDS:
        raise one_of("compile setting", setting, ["true", "false", *COMPILE_BACKENDS])
    return setting


def configure(setting: bool | str) -> str | None:
    """Set the compiler's process-wide switches for ``setting`` (before the first compiled call,
    which is when tracing happens); returns the setting's name."""
    name = compile_backend(setting)
    if name is None:
        return None
    # one graph with the head's gather inside; reduce-overhead: a break there (module docstring)
    torch._dynamo.config.capture_dynamic_output_shape_ops = name != CUDA_GRAPHS
    if name == CUDA_GRAPHS:
        triton_config = torch._inductor.config.triton
        if hasattr(triton_config, "cudagraph_skip_dynamic_graphs"):
            triton_config.cudagraph_skip_dynamic_graphs = True  # the head: no graph per size
    return name


def maybe_compile(fn: T, setting: bool | str, dynamic: bool | None = None) -> T:
    """``torch.compile(fn, ...)`` when the setting asks for it, else ``fn`` itself. ``dynamic``
    as torch.compile's (True: one graph for every sequence length; CUDA graphs stay static)."""
    name = configure(setting)
    if name is None:
        return fn
    if name == CUDA_GRAPHS:
        return torch.compile(fn, backend="inductor", mode="reduce-overhead")  # type: ignore[return-value]
    return torch.compile(fn, backend=name, dynamic=dynamic)  # type: ignore[return-value]


def step_begin(setting: bool | str) -> None:
    """Call at the start of each training step: with CUDA graphs, the previous step's outputs
    may be overwritten from here on (``torch.compiler.cudagraph_mark_step_begin``)."""
    if setting == CUDA_GRAPHS:
        torch.compiler.cudagraph_mark_step_begin()
