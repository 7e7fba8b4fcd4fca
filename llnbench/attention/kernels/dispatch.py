"""Which LLN backend runs a call: ``auto`` never fails, an explicit one explains why it cannot.

| backend | direction | runs on | needs |
|---|---|---|---|
| torch | both | any device, any dtype | nothing (the reference path of ``linear_core``) |
| triton | bidirectional | CUDA tensors (CPU tensors under ``TRITON_INTERPRET=1``) | triton; head_dim <= 128 |
| fla | causal | CUDA tensors | fla-core >= 0.6.0 and triton |

``auto`` picks triton (bidirectional) or fla (causal) for CUDA tensors in fp32/bf16/fp16 when the
package imports and the shape fits, and torch for everything else (CPU, float64, missing packages,
head_dim > 128, ``matmul_dtype=bf16``). An explicit ``triton``/``fla`` that cannot run raises
``BackendUnavailable`` (a ``ConfigError``: one line, exit 2) naming why and what is allowed.
"""

from __future__ import annotations

import functools
import importlib.util

import torch

from llnbench.errors import ConfigError, one_of

BACKENDS = ("auto", "torch", "triton", "fla")
KERNEL_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
TRITON_MAX_HEAD_DIM = 128


class BackendUnavailable(ConfigError):
    """An explicitly requested backend cannot run this call (or this module)."""


@functools.cache
def package_missing(name: str) -> bool:
    return importlib.util.find_spec(name) is None


def _install_hint(what: str) -> str:
    return f"{what} is not installed (pip install -e '.[gpu]')"


def check_build(backend: str, *, causal: bool, head_dim: int, matmul_dtype: str) -> None:
    """Build-time checks of an explicit backend: direction, packages, head dim, options."""
    if backend not in BACKENDS:
        raise one_of("LLN backend", backend, BACKENDS)
    allowed = "auto, torch, fla" if causal else "auto, torch, triton"
    if backend == "triton":
        if causal:
            raise BackendUnavailable(
                f"attention.backend=triton is the bidirectional LLN kernel; causal LLN: {allowed}"
            )
        if package_missing("triton"):
            raise BackendUnavailable(f"attention.backend=triton: {_install_hint('triton')}")
        if head_dim > TRITON_MAX_HEAD_DIM:
            raise BackendUnavailable(
                f"attention.backend=triton supports head_dim <= {TRITON_MAX_HEAD_DIM}, got "
                f"{head_dim}; allowed: auto, torch"
            )
        if matmul_dtype != "fp32":
            raise BackendUnavailable(
                f"attention.backend=triton computes in fp32 (TF32 dots for 16-bit inputs); "
                f"matmul_dtype={matmul_dtype} runs on backend=torch"
            )
    if backend == "fla":
        if not causal:
            raise BackendUnavailable(
                f"attention.backend=fla is the causal LLN kernel; bidirectional LLN: {allowed}"
            )
        for package, label in (("fla", "fla-core"), ("triton", "triton")):
            if package_missing(package):
                raise BackendUnavailable(f"attention.backend=fla: {_install_hint(label)}")


def missing_package(causal: bool) -> str | None:
    """The package the direction's kernel needs and lacks, or None (checked once, at build)."""
    if package_missing("triton"):
        return "triton"
    if causal and package_missing("fla"):
        return "fla-core"
    return None


def triton_interpreted() -> bool:
    """True when the Triton kernels were built for the interpreter (TRITON_INTERPRET=1)."""
    from llnbench.attention.kernels import triton_lln

    return triton_lln.kernels().INTERPRETED


def select(
    backend: str,
    *,
    causal: bool,
    q: torch.Tensor,
    matmul_dtype: str = "fp32",
    missing: str | None = None,
) -> tuple[str, str | None]:
    """(backend that runs this call, why auto fell back to torch or None).

    ``missing``: ``missing_package(causal)``, computed once by the module (not while tracing).
    """
    if backend == "torch":
        return "torch", None
    if backend == "auto" and matmul_dtype != "fp32":
        return "torch", f"matmul_dtype={matmul_dtype} runs on the torch path"
    if backend == "auto" and missing is not None:
        return "torch", _install_hint(missing)
    problem = _call_problem(backend, causal, q)
    if problem is None:
        return backend if backend != "auto" else ("fla" if causal else "triton"), None
    if backend == "auto":
        return "torch", problem
    allowed = "auto, torch" + (", fla" if causal else ", triton")
    raise BackendUnavailable(f"attention.backend={backend}: {problem}; allowed: {allowed}")


def _call_problem(backend: str, causal: bool, q: torch.Tensor) -> str | None:
    """Why the fast path of this direction cannot run on ``q``; None when it can."""
    kernel = "fla" if causal else "triton"
    if backend == "auto" and not causal and q.shape[-1] > TRITON_MAX_HEAD_DIM:
        return f"head_dim {q.shape[-1]} > {TRITON_MAX_HEAD_DIM}"  # explicit: refused at build
    if q.dtype not in KERNEL_DTYPES:
        return f"{kernel} kernels take fp32/bf16/fp16 tensors, got {str(q.dtype).removeprefix('torch.')}"
    if q.device.type != "cuda":
        if kernel == "triton" and backend == "triton" and triton_interpreted():
            return None  # the interpreter runs the same kernels on CPU tensors (tests)
        return f"{kernel} runs on CUDA tensors, got {q.device.type}"
    return None
