"""Causal LLN core on fla-core's chunked scalar-decay kernel (``fla.ops.simple_gla.chunk_simple_gla``).

The torch core (``linear_core``) weighs key j for query i by phi_q_i . phi_k_j exp(m_j - m_i), with
phi_k_j stored divided by exp(m_j) and m the running (prefix) maximum of the key logits. That is
Simple-GLA / RetNet-style linear attention with a per-position log decay

    g_0 = 0,  g_t = m_{t-1} - m_t <= 0,  so that  sum_{s=j+1..i} g_s = m_j - m_i,

which fla evaluates as o_i = scale * sum_{j<=i} (q_i . k_j) exp(G_i - G_j) v_j with G = cumsum(g).
The mapping is exact (no bound to accept): every decay factor lies in (0, 1], and strict
causality holds because g_t depends on keys <= t only. The normaliser rides as an extra value
column of ones (V = d + 1; fla's 16-bit paths require an even V, so the core stays in fp32, as
the dtype policy wants for features and states anyway).

fla layout is (B, T, H, K); ``scale=1.0`` (the features carry the temperature). fla-core 0.6.0's
kernels do not run under ``TRITON_INTERPRET=1`` (``chunk_fwd_kernel_h`` calls ``.to()`` on a
``range`` loop index, a Python int in the interpreter; its autotuner also needs a GPU driver to
benchmark), so CPU tests check this mapping through fla's own pure-torch references
(``fla.ops.simple_gla.naive``) via ``kernel=``; CUDA tests run the real kernel.

fla-core refuses its gated backward (``chunk_bwd_dqkwg`` with g) on Hopper with Triton >= 3.4.0
and < 3.7.1, the Triton that torch 2.7-2.11 ship: "produces incorrect results" (fla issue #640).
``backward_refusal`` mirrors that check (``fla.ops.common.chunk_o``, with ``IS_NVIDIA_HOPPER``
and ``TRITON_ABOVE_3_*`` of ``fla.utils``) for the tensor's own device, so that ``dispatch``
can refuse ``backend=fla`` before a training step crashes in backward.
"""

from __future__ import annotations

import functools
import importlib.util
import itertools
import os
import sys
from collections.abc import Callable, Iterable
from types import ModuleType
from typing import Any

import torch
from torch import Tensor

from llnbench.attention.linear_core import _with_ones, guard_denominator, mask_keys

# fla-core's guarded range of Triton versions on Hopper: [first, last) (fla.ops.common.chunk_o)
GUARDED_TRITON = ((3, 4, 0), (3, 7, 1))


def _release(version: str) -> tuple[int, ...]:
    """(3, 6, 0) of '3.6.0', '3.6.0+git1a2b' or '3.7.0rc1' (the leading numeric release)."""
    parts = []
    for piece in version.split("+")[0].split("."):
        digits = "".join(itertools.takewhile(str.isdigit, piece))
        if not digits:
            break
        parts.append(int(digits))
        if len(digits) < len(piece):
            break  # a pre-release suffix ends the release number
    return tuple(parts)


def triton_version() -> str | None:
    """``triton.__version__`` (what fla reads; the wheel may be named pytorch-triton), or None."""
    if importlib.util.find_spec("triton") is None:
        return None
    import triton

    return triton.__version__


@functools.cache
def backward_refusal(device_index: int) -> str | None:
    """Why fla-core's backward would refuse to run on this CUDA device, or None.

    fla's condition: a Hopper GPU ('NVIDIA H' in its name or compute capability 9.x) and
    3.4.0 <= Triton < 3.7.1; the causal LLN core always passes the gate g, so it always applies."""
    version = triton_version()
    if version is None:
        return None  # no Triton: fla cannot run at all (checked where the backend is built)
    first, last = GUARDED_TRITON
    if not first <= _release(version) < last:
        return None
    name = torch.cuda.get_device_name(device_index)
    if "NVIDIA H" not in name and torch.cuda.get_device_capability(device_index)[0] != 9:
        return None
    return (
        f"fla-core refuses its gated backward on {name} (Hopper) with Triton {version} "
        f"(Triton >= 3.4.0 and < 3.7.1 produce incorrect results for gated chunk_bwd_dqkwg)"
    )


def log_decay(key_shift: Tensor) -> Tensor:
    """Per-position log decay g (B, H, N) of a non-decreasing prefix shift m: g_t = m_{t-1} - m_t."""
    g = torch.zeros_like(key_shift)
    g[..., 1:] = key_shift[..., :-1] - key_shift[..., 1:]
    return g


@functools.cache
def _chunk_simple_gla() -> Callable[..., tuple[Tensor, Tensor | None]]:
    from fla.ops.simple_gla import chunk_simple_gla

    if os.environ.get("LLNBENCH_FLA_AUTOTUNE", "full") == "short":
        shorten_autotune(m for n, m in list(sys.modules.items()) if n.startswith("fla.ops"))
    return chunk_simple_gla


def shorten_autotune(modules: Iterable[ModuleType], keep: int = 4) -> int:
    """Cut every Triton autotuner in ``modules`` to ``keep`` configs (num_warps=4, num_stages=2
    first). fla-core tries up to 48 configs per kernel, and a fresh machine compiles each one:
    minutes for one causal forward + backward, too long for a timed GPU check
    (``LLNBENCH_FLA_AUTOTUNE=short``, which ``make gpu-check`` sets). Returns how many it cut."""
    from triton.runtime.autotuner import Autotuner

    cut = 0
    for module in modules:
        for obj in list(vars(module).values()):
            for _ in range(4):  # heuristics/autotune wrappers hold the next layer in .fn
                if isinstance(obj, Autotuner):
                    if len(obj.configs) > keep:
                        obj.configs = _short_list(obj.configs, keep)
                        cut += 1
                    break
                obj = getattr(obj, "fn", None)
    return cut


def _short_list(configs: list[Any], keep: int) -> list[Any]:
    first = [c for c in configs if c.num_warps == 4 and c.num_stages == 2]
    return (first + [c for c in configs if c not in first])[:keep]


@torch.compiler.disable
def linear_attention(
    phi_q: Tensor,
    phi_k: Tensor,
    v: Tensor,
    key_mask: Tensor | None = None,
    *,
    causal: bool = True,
    eps: float = 1e-6,
    guard: str = "add",
    chunk: int = 64,
    key_shift: Tensor | None = None,
    matmul_dtype: torch.dtype | None = None,
    kernel: Callable[..., tuple[Tensor, Tensor | None]] | None = None,
) -> Tensor:
    """``linear_core.linear_attention``'s causal case on fla; same arguments and result.

    ``chunk`` and ``matmul_dtype`` are the torch core's knobs (fla uses its own chunk of 64);
    ``kernel`` replaces fla's Triton kernel with a callable of the same signature (tests).
    """
    if not causal:
        raise ValueError("fla_causal.linear_attention is the causal core")
    phi_k, v = mask_keys(phi_k, v, key_mask)
    v = _with_ones(v)
    g = None if key_shift is None else log_decay(key_shift).transpose(1, 2)
    run = kernel or _chunk_simple_gla()
    out, _ = run(phi_q.transpose(1, 2), phi_k.transpose(1, 2), v.transpose(1, 2), g, scale=1.0)
    num_den = out.transpose(1, 2).to(v.dtype)
    num, den = num_den[..., :-1], num_den[..., -1:]
    return num / guard_denominator(den, eps, guard)
