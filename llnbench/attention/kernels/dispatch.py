"""Which LLN backend runs a call: ``auto`` never fails, an explicit one explains why it cannot.

| backend | direction | runs on | needs |
|---|---|---|---|
| torch | both | any device, any dtype | nothing (the reference path of ``linear_core``) |
| triton | both | CUDA tensors (CPU tensors under ``TRITON_INTERPRET=1``) | triton; head_dim <= 128 |
| fla | causal | CUDA tensors, except Hopper with Triton 3.4-3.7.0 | fla-core >= 0.6.0 and triton |

``auto`` picks triton (``triton_lln`` bidirectional, ``triton_lln_causal`` causal) for CUDA tensors
in fp32/bf16/fp16 when triton imports and the shape fits, and torch for everything else (CPU,
float64, no triton, head_dim over the direction's limit, ``matmul_dtype=bf16``). It never picks fla:
fla is an explicit backend, and it fails in backward where fla-core's Hopper/Triton guard applies
(``fla_causal.backward_refusal``), which an explicit ``fla`` reports before running. An explicit
``triton``/``fla`` that cannot run raises ``BackendUnavailable`` (a ``ConfigError``: one line, exit
2) naming why and what is allowed.
"""

from __future__ import annotations

import functools
import importlib.util

import torch

from llnbench.errors import ConfigError, one_of

BACKENDS = ("auto", "torch", "triton", "fla")
KERNEL_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
TRITON_MAX_HEAD_DIM = 128  # the bidirectional kernel (triton_lln)
CAUSAL_MAX_HEAD_DIM = 128  # the causal kernel (triton_lln_causal.MAX_HEAD_DIM)
# Shared memory one program of the causal kernel needs (bytes, the largest of its kernels, bf16
# and fp32 inputs) by head_dim up to, for Hopper (wgmma layouts, capability >= 9) and for Ampere/
# Ada; from the compiled kernels' metadata after AOT compiles for sm90, sm86 and sm80. A GPU
# with less (an A100's 163 KB at head_dim 128) could not launch it.
CAUSAL_SHARED_BYTES = {
    "hopper": ((64, 114_688), (128, 180_224)),
    "ampere": ((64, 98_304), (128, 147_456)),
}


class BackendUnavailable(ConfigError):
    """An explicitly requested backend cannot run this call (or this module)."""


@functools.cache
def package_missing(name: str) -> bool:
    return importlib.util.find_spec(name) is None


def _install_hint(what: str) -> str:
    return f"{what} is not installed (pip install -e '.[gpu]')"


def max_head_dim(causal: bool) -> int:
    """The largest head_dim the direction's Triton kernel takes."""
    return CAUSAL_MAX_HEAD_DIM if causal else TRITON_MAX_HEAD_DIM


def _allowed(causal: bool) -> str:
    return "auto, torch, triton, fla" if causal else "auto, torch, triton"


def check_build(backend: str, *, causal: bool, head_dim: int, matmul_dtype: str) -> None:
    """Build-time checks of an explicit backend: direction, packages, head dim, options."""
    if backend not in BACKENDS:
        raise one_of("LLN backend", backend, BACKENDS)
    if backend == "triton":
        if package_missing("triton"):
            raise BackendUnavailable(f"attention.backend=triton: {_install_hint('triton')}")
        limit = max_head_dim(causal)
        if head_dim > limit:
            raise BackendUnavailable(
                f"attention.backend=triton supports head_dim <= {limit} "
                f"({'causal' if causal else 'bidirectional'}), got {head_dim}; allowed: auto, torch"
            )
        if matmul_dtype != "fp32":
            raise BackendUnavailable(
                f"attention.backend=triton computes in fp32 (TF32 dots for 16-bit inputs); "
                f"matmul_dtype={matmul_dtype} runs on backend=torch"
            )
    if backend == "fla":
        if not causal:
            raise BackendUnavailable(
                f"attention.backend=fla is the causal LLN kernel; bidirectional LLN: "
                f"{_allowed(causal)}"
            )
        for package, label in (("fla", "fla-core"), ("triton", "triton")):
            if package_missing(package):
                raise BackendUnavailable(f"attention.backend=fla: {_install_hint(label)}")


def missing_package(causal: bool) -> str | None:
    """The package ``auto``'s kernel needs and lacks, or None (checked once, at build).

    Both directions' kernels are triton's own (``causal`` is kept for the call sites)."""
    return "triton" if package_missing("triton") else None


def triton_interpreted(causal: bool = False) -> bool:
    """True when the direction's Triton kernels were built for the interpreter (TRITON_INTERPRET=1)."""
    if causal:
        from llnbench.attention.kernels import triton_lln_causal

        return triton_lln_causal.kernels().INTERPRETED
    from llnbench.attention.kernels import triton_lln

    return triton_lln.kernels().INTERPRETED


def fla_refusal(device: torch.device) -> str | None:
    """Why fla-core would refuse this CUDA device's backward (its Hopper/Triton guard), or None."""
    from llnbench.attention.kernels import fla_causal

    index = device.index if device.index is not None else torch.cuda.current_device()
    return fla_causal.backward_refusal(index)


@functools.cache
def device_shared_memory(device_index: int) -> tuple[int, int | None]:
    """(compute capability major, the most shared memory one program may use, or None)."""
    major = torch.cuda.get_device_capability(device_index)[0]
    optin = getattr(
        torch.cuda.get_device_properties(device_index), "shared_memory_per_block_optin", None
    )
    if optin:
        return major, int(optin)
    try:  # what Triton checks at launch
        from triton.runtime import driver

        return major, int(driver.active.utils.get_device_properties(device_index)["max_shared_mem"])
    except Exception:  # no way to ask: let the launch decide
        return major, None


def _causal_shared_memory_problem(q: torch.Tensor) -> str | None:
    head_dim = q.shape[-1]
    index = q.device.index if q.device.index is not None else torch.cuda.current_device()
    major, have = device_shared_memory(index)
    table = CAUSAL_SHARED_BYTES["hopper" if major >= 9 else "ampere"]
    need = next(size for limit, size in table if head_dim <= limit)
    if have is None or have >= need:
        return None
    return (
        f"the causal triton kernel needs {need // 1024} KB of shared memory per block at "
        f"head_dim {head_dim}, this GPU has {have // 1024} KB"
    )


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
        return ("triton" if backend == "auto" else backend), None
    if backend == "auto":
        return "torch", problem
    raise BackendUnavailable(f"attention.backend={backend}: {problem}; allowed: {_allowed(causal)}")


def _call_problem(backend: str, causal: bool, q: torch.Tensor) -> str | None:
    """Why the requested kernel cannot run on ``q``; None when it can."""
    kernel = "fla" if backend == "fla" else "triton"
    limit = max_head_dim(causal)
    if backend == "auto" and q.shape[-1] > limit:
        return f"head_dim {q.shape[-1]} > {limit}"  # explicit: refused at build
    if q.dtype not in KERNEL_DTYPES:
        return f"{kernel} kernels take fp32/bf16/fp16 tensors, got {str(q.dtype).removeprefix('torch.')}"
    if q.device.type != "cuda":
        if backend == "triton" and triton_interpreted(causal):
            return None  # the interpreter runs the same kernels on CPU tensors (tests)
        return f"{kernel} runs on CUDA tensors, got {q.device.type}"
    if kernel == "fla":
        return fla_refusal(q.device)
    if causal:
        return _causal_shared_memory_problem(q)
    return None
