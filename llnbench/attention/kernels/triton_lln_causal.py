"""Chunked causal LLN in Triton: a forward is 3 kernel launches, a backward 3 (no torch ops between).

Same result as ``linear_core``'s causal path with ``exp_features``' strict running-prefix shifts
(each key divided by the running max of the key logits, each query by its largest term against the
keys it sees; see ``_triton_lln_causal_kernels`` for the math), from raw q, k, v and the
temperatures alpha, beta (autograd constants, as in ``lln.py``).

Forward: ``chunk_summary_kernel`` (each chunk's key state in its own units; reads k, v),
``prefix_scan_kernel`` (states entering each chunk, in fp32, one (b, h) walked in order per block
of feature rows), ``chunk_output_kernel`` (intra-chunk quadratic part plus the state; reads q, k,
v, writes out). Backward: ``query_backward_kernel`` (recomputes out, writes dq and each chunk's
piece of the backward state), ``suffix_scan_kernel`` (that state from the last chunk down),
``key_backward_kernel`` (dk, dv). The chunk states are saved for backward: N / chunk * d^2 fp32
per head, as much as one fp32 copy of q at chunk 64 and d 64.

Registered as the torch.library custom ops ``llnbench::lln_causal_forward`` and
``llnbench::lln_causal_backward`` (fake implementations and the autograd formula included), so
torch.compile traces through with no graph break and CUDA graphs can capture the launches.
"""

from __future__ import annotations

import importlib
from types import ModuleType

import torch
from torch import Tensor

from llnbench.attention.linear_core import QUERY_HEADROOM

KERNELS = "llnbench.attention.kernels._triton_lln_causal_kernels"
CHUNKS = (16, 32, 64)  # rows per program: powers of two (tl.dot, tl.arange), within the
# shared memory dispatch.CAUSAL_SHARED_BYTES was measured at (64; 32 above head_dim 64)
MAX_HEAD_DIM = 128
_SCAN_ROWS = 16  # feature rows of the state per scan program (more programs per (b, h))


def kernels() -> ModuleType:
    """The kernel module currently imported (compiled or, under TRITON_INTERPRET=1, interpreted)."""
    return importlib.import_module(KERNELS)


def kernel_chunk(chunk: int, head_dim: int = 64) -> int:
    """The module's ``chunk`` where the kernel can use it, else 64 (the result is the same);
    at most 32 above head_dim 64, where a chunk of 64 needs more shared memory than an A100 has
    (180 KB in ``query_backward_kernel`` at d = 128, compiled for sm90)."""
    chunk = chunk if chunk in CHUNKS else 64
    return min(chunk, 32) if head_dim > 64 else chunk


def _block_d(head_dim: int) -> int:
    return max(16, 1 << (head_dim - 1).bit_length())


def _strides(t: Tensor) -> tuple[int, int, int]:
    return t.stride(0), t.stride(1), t.stride(2)


def _unit_stride(t: Tensor) -> Tensor:
    return t if t.stride(-1) == 1 else t.contiguous()


def _sizes(q: Tensor, chunk: int) -> tuple[int, int, int, int, int, int]:
    b, h, n, d = q.shape
    return b, h, n, d, -(-n // chunk), _block_d(d)


def _precision(q: Tensor) -> str:
    # features are fp32 in (0, 1]; 16-bit inputs may take TF32 dots; fp32 inputs take 3xTF32
    # (fp32 accuracy on tensor cores: the "ieee" FMA dots spill ~6 KB per thread at d = 64)
    return "tf32x3" if q.dtype == torch.float32 else "tf32"


def _warps(block_d: int) -> int:
    # chunk programs hold a handful of (chunk x D) and (D x D) fp32 tiles in registers
    return 4 if block_d <= 32 else 8


def _mask_args(key_mask: Tensor | None, q: Tensor) -> tuple[Tensor, bool, int]:
    if key_mask is None:
        return q, False, 0  # never read (HAS_MASK=False)
    return key_mask, True, key_mask.stride(0)


@torch.library.custom_op("llnbench::lln_causal_forward", mutates_args=())
def lln_causal_forward(
    q: Tensor, k: Tensor, v: Tensor, alpha: Tensor, beta: Tensor, key_mask: Tensor | None,
    eps: float, ab_div: int, chunk: int,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:  # fmt: skip
    """(out, states (BH, C, D, D), per-chunk vectors (BH, C, 2, D), shifts e (BH, C + 1)).

    ``key_mask``: (B, N) uint8, 1 = real; ``alpha``, ``beta``: fp32 (B*H / ab_div,);
    the last three outputs are what the backward reads."""
    q, k, v = (_unit_stride(t) for t in (q, k, v))
    b, h, n, d, c, bd = _sizes(q, chunk)
    mask, has_mask, smb = _mask_args(key_mask, q)
    f32 = {"dtype": torch.float32, "device": q.device}
    lm = torch.empty(b * h, c, **f32)
    fm = torch.empty(b * h, c, bd, **f32)
    u = torch.empty(b * h, c, bd, bd, **f32)
    uz = torch.empty(b * h, c, bd, **f32)
    ker, precision, headroom = kernels(), _precision(q), QUERY_HEADROOM[torch.float32]
    ker.chunk_summary_kernel[(b * h, c)](
        k, v, mask, beta, lm, fm, u, uz, h, n, d, c, ab_div, *_strides(k), *_strides(v), smb,
        HAS_MASK=has_mask, CHUNK=chunk, BLOCK_D=bd, PRECISION=precision, num_warps=_warps(bd),
    )  # fmt: skip
    states = torch.empty(b * h, c, bd, bd, **f32)
    vectors = torch.empty(b * h, c, 2, bd, **f32)
    shifts = torch.empty(b * h, c + 1, **f32)
    ker.prefix_scan_kernel[(b * h, bd // _SCAN_ROWS)](
        lm, fm, u, uz, states, vectors, shifts, c, BLOCK_K=_SCAN_ROWS, BLOCK_D=bd, num_warps=2
    )
    out = torch.empty((b, h, n, d), dtype=v.dtype, device=q.device)
    ker.chunk_output_kernel[(b * h, c)](
        q, k, v, mask, alpha, beta, states, vectors, shifts, out, eps, headroom, h, n, d, c,
        ab_div, *_strides(q), *_strides(k), *_strides(v), *_strides(out), smb,
        HAS_MASK=has_mask, CHUNK=chunk, BLOCK_D=bd, PRECISION=precision, num_warps=_warps(bd),
    )  # fmt: skip
    return out, states, vectors, shifts


@lln_causal_forward.register_fake
def _(q, k, v, alpha, beta, key_mask, eps, ab_div, chunk):
    b, h, n, d = q.shape
    c, bd = (n + chunk - 1) // chunk, _block_d(d)
    f32 = {"dtype": torch.float32, "device": q.device}
    return (q.new_empty((b, h, n, d), dtype=v.dtype), q.new_empty((b * h, c, bd, bd), **f32),
            q.new_empty((b * h, c, 2, bd), **f32), q.new_empty((b * h, c + 1), **f32))  # fmt: skip


@torch.library.custom_op("llnbench::lln_causal_backward", mutates_args=())
def lln_causal_backward(
    grad_out: Tensor, q: Tensor, k: Tensor, v: Tensor, alpha: Tensor, beta: Tensor,
    key_mask: Tensor | None, states: Tensor, vectors: Tensor, shifts: Tensor,
    eps: float, ab_div: int, chunk: int,
) -> tuple[Tensor, Tensor, Tensor]:  # fmt: skip
    """(dq, dk, dv) in the dtypes of q, k, v."""
    q, k, v, grad_out = (_unit_stride(t) for t in (q, k, v, grad_out))
    b, h, n, d, c, bd = _sizes(q, chunk)
    mask, has_mask, smb = _mask_args(key_mask, q)
    f32 = {"dtype": torch.float32, "device": q.device}
    ker, precision, headroom = kernels(), _precision(q), QUERY_HEADROOM[torch.float32]
    dq = torch.empty((b, h, n, d), dtype=q.dtype, device=q.device)
    rows = torch.empty(b * h, c * chunk, 2, **f32)  # 1 / den and d(loss)/d(den) per query
    w = torch.empty(b * h, c, bd, bd, **f32)
    wz = torch.empty(b * h, c, bd, **f32)
    ker.query_backward_kernel[(b * h, c)](
        q, k, v, mask, alpha, beta, states, vectors, shifts, grad_out, dq, rows, w, wz,
        eps, headroom, h, n, d, c, ab_div, *_strides(q), *_strides(k), *_strides(v),
        *_strides(grad_out), *_strides(dq), smb,
        HAS_MASK=has_mask, CHUNK=chunk, BLOCK_D=bd, PRECISION=precision, num_warps=_warps(bd),
    )  # fmt: skip
    g = torch.empty(b * h, c, bd, bd, **f32)
    gz = torch.empty(b * h, c, bd, **f32)
    ker.suffix_scan_kernel[(b * h, bd // _SCAN_ROWS)](
        w, wz, shifts, g, gz, c, BLOCK_K=_SCAN_ROWS, BLOCK_D=bd, num_warps=2
    )
    dk = torch.empty((b, h, n, d), dtype=k.dtype, device=q.device)
    dv = torch.empty((b, h, n, d), dtype=v.dtype, device=q.device)
    ker.key_backward_kernel[(b * h, c)](
        q, k, v, mask, alpha, beta, vectors, shifts, grad_out, rows, g, gz, dk, dv,
        headroom, h, n, d, c, ab_div, *_strides(q), *_strides(k), *_strides(v),
        *_strides(grad_out), *_strides(dk), *_strides(dv), smb,
        HAS_MASK=has_mask, CHUNK=chunk, BLOCK_D=bd, PRECISION=precision, num_warps=_warps(bd),
    )  # fmt: skip
    return dq, dk, dv


@lln_causal_backward.register_fake
def _(grad_out, q, k, v, alpha, beta, key_mask, states, vectors, shifts, eps, ab_div, chunk):
    return torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)


def _setup_context(ctx, inputs, output) -> None:
    q, k, v, alpha, beta, key_mask, eps, ab_div, chunk = inputs
    _, states, vectors, shifts = output
    ctx.save_for_backward(q, k, v, alpha, beta, key_mask, states, vectors, shifts)
    ctx.config = (eps, ab_div, chunk)
    ctx.mark_non_differentiable(states, vectors, shifts)


def _backward(ctx, grad_out, *_unused):
    q, k, v, alpha, beta, key_mask, states, vectors, shifts = ctx.saved_tensors
    dq, dk, dv = lln_causal_backward(
        grad_out, q, k, v, alpha, beta, key_mask, states, vectors, shifts, *ctx.config
    )
    return dq, dk, dv, None, None, None, None, None, None


torch.library.register_autograd(
    "llnbench::lln_causal_forward", _backward, setup_context=_setup_context
)


def _per_group(x: Tensor, b: int, h: int) -> tuple[Tensor, int]:
    """alpha or beta (a scalar, (B,1,1,1) or (B,H,1,1)) as fp32 values and the divisor that
    maps a program's b*H + h to its entry (B*H: one value, H: per sequence, 1: per head)."""
    flat = x.detach().to(torch.float32).reshape(-1)
    div = {1: b * h, b: h, b * h: 1}.get(flat.numel())
    if div is None:
        raise ValueError(f"alpha/beta with {flat.numel()} values for B={b}, H={h}")
    return flat.contiguous(), div


def lln_causal_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    alpha: Tensor,
    beta: Tensor,
    key_mask: Tensor | None = None,
    *,
    eps: float = 1e-8,
    chunk: int = 64,
) -> Tensor:
    """Causal LLN output (B, H, N, d) in v's dtype; differentiable in q, k and v.

    ``alpha``, ``beta``: temperatures of one statistics scope (a scalar, (B,1,1,1) or (B,H,1,1));
    ``key_mask``: (B, N) bool, True = real token; ``chunk``: one of ``CHUNKS``."""
    b, h, _, d = q.shape
    if chunk not in CHUNKS:
        raise ValueError(f"chunk {chunk} not in {CHUNKS}")
    if d > MAX_HEAD_DIM:
        raise ValueError(f"head_dim {d} > {MAX_HEAD_DIM}")
    (alpha, div), (beta, beta_div) = _per_group(alpha, b, h), _per_group(beta, b, h)
    if div != beta_div:
        raise ValueError("alpha and beta must come from one statistics scope (same shape)")
    mask = None if key_mask is None else key_mask.to(torch.uint8).contiguous()
    out, *_ = lln_causal_forward(q, k, v, alpha, beta, mask, float(eps), div, int(chunk))
    return out
