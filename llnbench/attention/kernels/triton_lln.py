"""Fused bidirectional LLN in Triton: a forward is 5 kernel launches, a backward 2 (and 2 sums).

Math (per (b, h); alpha, beta autograd constants; shifts detached, exactly as ``lln.py``):

    M_t = max over real j of beta k_jt (per feature),  phi_k_j = exp(beta k_j - M),
    phi_q_i = exp(alpha q_i + M - max_t (alpha q_it + M_t))   (each query's largest term is 1),
    S = sum_j phi_k_j^T v_j (d x d),  z = sum_j phi_k_j,  out_i = phi_q_i S / (phi_q_i . z + eps)

Passes (HBM traffic in units of N d elements per head):
1. ``moments_kernel``: per-column (count, mean, M2) of the real entries of q and k per row range
   (reads q, k: 2); ``temperatures_kernel`` merges them per statistics group (Chan) into sigma_q,
   sigma_k and the moment-matched alpha, beta (``lln.symmetric_temperatures``).
2. ``kv_state_kernel``: partial (S, z) per row range, each with its own running per-feature max
   shifts (reads k, v: 2); ``merge_states_kernel`` rescales them to the shifts M.
3. ``query_kernel``: out from phi_q, S, z (reads q, writes out: 2).
Backward: ``query_backward_kernel`` (dq and partial dS, dz: reads q, dout, writes dq: 3) and
``key_backward_kernel`` (dk, dv: reads k, v, writes dk, dv: 4). Outputs are recomputed, not
stored. Dots are IEEE fp32 for fp32 inputs and TF32 for 16-bit inputs (features in (0, 1]).
Few launches matter: at B=1 and 16k tokens the whole layer is ~0.1 ms of memory traffic.
"""

from __future__ import annotations

import importlib
import math
from dataclasses import dataclass
from types import ModuleType

import torch
from torch import Tensor

KERNELS = "llnbench.attention.kernels._triton_lln_kernels"


def kernels() -> ModuleType:
    """The kernel module currently imported (compiled or, under TRITON_INTERPRET=1, interpreted)."""
    return importlib.import_module(KERNELS)


@dataclass(frozen=True)
class Tiling:
    """Rows per tile, and how many programs to aim for (default: 4 per multiprocessor)."""

    block: int = 64
    target_programs: int | None = None


def block_d(head_dim: int) -> int:
    return max(16, 1 << (head_dim - 1).bit_length())


def _splits(n: int, heads: int, tiling: Tiling, device: torch.device) -> tuple[int, int]:
    """(programs per (b, h), row blocks per program) for the passes that reduce over N."""
    n_blocks = max(1, math.ceil(n / tiling.block))
    target = tiling.target_programs
    if target is None and device.type == "cuda":
        target = 4 * torch.cuda.get_device_properties(device).multi_processor_count
    elif target is None:
        target = 4
    per_head = min(n_blocks, max(1, math.ceil(target / heads)))
    blocks_per_prog = math.ceil(n_blocks / per_head)
    return math.ceil(n_blocks / blocks_per_prog), blocks_per_prog


def _unit_stride(t: Tensor) -> Tensor:
    return t if t.stride(-1) == 1 else t.contiguous()


def _mask_arg(key_mask: Tensor | None, like: Tensor) -> tuple[Tensor, bool]:
    if key_mask is None:
        return like, False  # never read (HAS_MASK=False)
    return key_mask.to(torch.uint8).contiguous(), True


def _strides(t: Tensor) -> tuple[int, int, int]:
    return t.stride(0), t.stride(1), t.stride(2)


# how moments_kernel's partials, (bh, split) in order, pool into the scope's groups
SCOPE_GROUPS = {"batch": lambda b, h: (1, b * h), "sequence": lambda b, h: (b, h),
                "head": lambda b, h: (b * h, 1)}  # fmt: skip
_DIMS_SCOPE = {(0, 1, 2, 3): "batch", (1, 2, 3): "sequence", (2, 3): "head"}


@torch.compiler.disable
def moment_temperatures(
    q: Tensor, k: Tensor, key_mask: Tensor | None, scope: str, a: float, b: float,
    *, min_sigma: float = 1e-6, tiling: Tiling = Tiling(),
) -> dict[str, Tensor]:  # fmt: skip
    """sigma_q, sigma_k (unbiased std of the real entries per statistics group, clamped at
    ``min_sigma``) and the moment-matched alpha, beta, st: fp32 tensors of (groups,), where the
    scope ``batch`` has 1 group, ``sequence`` B and ``head`` B*H. Two launches, no torch ops."""
    q, k = _unit_stride(q), _unit_stride(k)
    batch, heads, n, d = q.shape
    bd = block_d(d)
    nsplit, per_prog = _splits(n, batch * heads, tiling, q.device)
    part = torch.empty(batch * heads * nsplit * 6 * bd, dtype=torch.float32, device=q.device)
    mask, has_mask = _mask_arg(key_mask, q)
    ker = kernels()
    ker.moments_kernel[(batch * heads, nsplit)](
        q, k, mask, part, heads, n, d, per_prog, *_strides(q), *_strides(k), n,
        HAS_MASK=has_mask, BLOCK_N=tiling.block, BLOCK_D=bd, num_warps=4,
    )  # fmt: skip
    groups, per_group = SCOPE_GROUPS[scope](batch, heads)
    out = torch.empty(5, groups, dtype=torch.float32, device=q.device)
    ker.temperatures_kernel[(groups,)](
        part, out, per_group * nsplit, groups, float(a), float(b), float(min_sigma),
        BLOCK_D=bd, num_warps=1,
    )  # fmt: skip
    return dict(zip(("sigma_q", "sigma_k", "alpha", "beta", "sigma_tilde"), out, strict=True))


def moment_sigmas(
    q: Tensor, k: Tensor, key_mask: Tensor | None, dims: tuple[int, ...], tiling: Tiling = Tiling()
) -> tuple[Tensor, Tensor]:
    """``masked_std`` of q and k over ``dims`` (keepdim shapes), from the kernels (unclamped)."""
    stats = moment_temperatures(q, k, key_mask, _DIMS_SCOPE[tuple(dims)], 1.0, 0.0,
                                min_sigma=0.0, tiling=tiling)  # fmt: skip
    shape = [q.shape[0] if 0 not in dims else 1, q.shape[1] if 1 not in dims else 1, 1, 1]
    return stats["sigma_q"].reshape(shape), stats["sigma_k"].reshape(shape)


class _FusedLLN(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, alpha, beta, ab_div, key_mask, eps, tiling):
        q, k, v = (_unit_stride(t) for t in (q, k, v))
        b, h, n, d = q.shape
        bd, blk = block_d(d), tiling.block
        precision = "ieee" if q.dtype == torch.float32 else "tf32"
        nsplit, per_prog = _splits(n, b * h, tiling, q.device)
        mask, has_mask = _mask_arg(key_mask, q)
        f32 = {"dtype": torch.float32, "device": q.device}
        m_part = torch.empty(b * h * nsplit, bd, **f32)
        s_part = torch.empty(b * h * nsplit, bd, bd, **f32)
        z_part = torch.empty(b * h * nsplit, bd, **f32)
        ker = kernels()
        ker.kv_state_kernel[(b * h, nsplit)](
            k, v, mask, beta, m_part, s_part, z_part, h, n, d, per_prog, ab_div, *_strides(k),
            *_strides(v), n, HAS_MASK=has_mask, BLOCK_N=blk, BLOCK_D=bd, PRECISION=precision,
            num_warps=4,
        )  # fmt: skip
        shift = torch.empty(b * h, bd, **f32)  # the keys' per-feature maxima
        state = torch.empty(b * h, bd, bd, **f32)
        z = torch.empty(b * h, bd, **f32)
        ker.merge_states_kernel[(b * h,)](
            m_part, s_part, z_part, shift, state, z, nsplit, BLOCK_D=bd, num_warps=4
        )
        out = torch.empty((b, h, n, d), dtype=v.dtype, device=q.device)
        ker.query_kernel[(b * h, math.ceil(n / blk))](
            q, mask, alpha, shift, state, z, out, eps, h, n, d, ab_div, *_strides(q), *_strides(out), n,
            HAS_MASK=has_mask, BLOCK_M=blk, BLOCK_D=bd, PRECISION=precision, num_warps=4,
        )  # fmt: skip
        ctx.save_for_backward(q, k, v, alpha, beta, mask, shift, state, z)
        ctx.config = (eps, tiling, has_mask, precision, ab_div)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        q, k, v, alpha, beta, mask, shift, state, z = ctx.saved_tensors
        eps, tiling, has_mask, precision, ab_div = ctx.config
        grad_out = _unit_stride(grad_out)
        b, h, n, d = q.shape
        bd, blk = block_d(d), tiling.block
        nsplit, per_prog = _splits(n, b * h, tiling, q.device)
        f32 = {"dtype": torch.float32, "device": q.device}
        dq = torch.empty((b, h, n, d), dtype=q.dtype, device=q.device)
        ds_part = torch.empty(b * h * nsplit, bd, bd, **f32)
        dz_part = torch.empty(b * h * nsplit, bd, **f32)
        ker = kernels()
        ker.query_backward_kernel[(b * h, nsplit)](
            q, mask, alpha, shift, state, z, grad_out, dq, ds_part, dz_part, eps, h, n, d, per_prog,
            ab_div, *_strides(q), *_strides(grad_out), *_strides(dq), n, HAS_MASK=has_mask, BLOCK_M=blk,
            BLOCK_D=bd, PRECISION=precision, num_warps=8,
        )  # fmt: skip
        ds = ds_part.view(b * h, nsplit, bd, bd).sum(1)
        dz = dz_part.view(b * h, nsplit, bd).sum(1)
        dk = torch.empty((b, h, n, d), dtype=k.dtype, device=q.device)
        dv = torch.empty((b, h, n, d), dtype=v.dtype, device=q.device)
        ker.key_backward_kernel[(b * h, math.ceil(n / blk))](
            k, v, mask, beta, shift, ds, dz, dk, dv, h, n, d, ab_div, *_strides(k), *_strides(v),
            *_strides(dk), n, HAS_MASK=has_mask, BLOCK_N=blk, BLOCK_D=bd, PRECISION=precision,
            num_warps=4,
        )  # fmt: skip
        return dq, dk, dv, None, None, None, None, None, None


def _per_head(x: Tensor, b: int, h: int) -> tuple[Tensor, int]:
    """alpha or beta (a scalar, (B,1,1,1) or (B,H,1,1)) as fp32 values and the divisor that
    maps a program's b*H + h to its entry (B*H: one value, H: per sequence, 1: per head)."""
    flat = x.to(torch.float32).reshape(-1)
    div = {1: b * h, b: h, b * h: 1}.get(flat.numel())
    if div is None:
        raise ValueError(f"alpha/beta with {flat.numel()} values for B={b}, H={h}")
    return flat.contiguous(), div


@torch.compiler.disable
def lln_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    alpha: Tensor,
    beta: Tensor,
    key_mask: Tensor | None = None,
    *,
    eps: float = 1e-8,
    tiling: Tiling = Tiling(),
) -> Tensor:
    """Bidirectional LLN output (B, H, N, d) in v's dtype; differentiable in q, k and v."""
    b, h = q.shape[:2]
    (alpha, div), (beta, beta_div) = _per_head(alpha, b, h), _per_head(beta, b, h)
    if div != beta_div:
        raise ValueError("alpha and beta must come from one statistics scope (same shape)")
    return _FusedLLN.apply(q, k, v, alpha, beta, div, key_mask, float(eps), tiling)
