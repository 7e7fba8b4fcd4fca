"""Fused bidirectional LLN in Triton: statistics, forward and backward in five kernel launches.

Math (per (b, h); alpha, beta autograd constants; shifts detached, exactly as ``lln.py``):

    phi_q_i = exp(alpha q_i - max_t alpha q_it),  phi_k_j = exp(beta k_j - M),  M = max over real j, t
    S = sum_j phi_k_j^T v_j (d x d),  z = sum_j phi_k_j,  out_i = phi_q_i S / (phi_q_i . z + eps)

Passes (HBM traffic in units of N d elements per head):
1. ``moments_kernel``: sigma_q, sigma_k of the real entries (Chan-merged per column, then in
   float64) for moment matching: reads q, k (2).
2. ``kv_state_kernel``: partial (S, z) per row range, each with its own running max, merged on
   the host side into the global shift M (a few small torch ops): reads k, v (2).
3. ``query_kernel``: out from phi_q, S, z: reads q, writes out (2).
Backward: ``query_backward_kernel`` (dq and partial dS, dz: reads q, dout, writes dq: 3) and
``key_backward_kernel`` (dk, dv: reads k, v, writes dk, dv: 4). The outputs are recomputed, not
stored. Dots are IEEE fp32 for fp32 inputs and TF32 for 16-bit inputs (features in (0, 1]).
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


@torch.compiler.disable
def moment_sigmas(
    q: Tensor, k: Tensor, key_mask: Tensor | None, dims: tuple[int, ...], tiling: Tiling = Tiling()
) -> tuple[Tensor, Tensor]:
    """Unbiased std of the real entries of q and k over ``dims`` (keepdim), as ``masked_std``."""
    q, k = _unit_stride(q), _unit_stride(k)
    b, h, n, d = q.shape
    bd = block_d(d)
    nsplit, per_prog = _splits(n, b * h, tiling, q.device)
    out = torch.empty(b * h * nsplit * 6 * bd, dtype=torch.float32, device=q.device)
    mask, has_mask = _mask_arg(key_mask, q)
    kernels().moments_kernel[(b * h, nsplit)](
        q, k, mask, out, h, n, d, per_prog, *_strides(q), *_strides(k), n,
        HAS_MASK=has_mask, BLOCK_N=tiling.block, BLOCK_D=bd, num_warps=4,
    )  # fmt: skip
    stats = out.view(b, h, nsplit, 2, 3, bd).double()
    count, mean, m2 = (stats[:, :, :, :, i] for i in range(3))  # each (B, H, split, q|k, D)
    # Chan's merge over every group the scope pools: (b, h) as ``dims`` says, splits, columns
    axes = [a for a in dims if a in (0, 1)] + [2, 4]
    total = count.sum(dim=axes, keepdim=True)
    grand = (count * mean).sum(dim=axes, keepdim=True) / total.clamp_min(1)
    var = (m2 + count * (mean - grand) ** 2).sum(dim=axes, keepdim=True)
    std = (var / (total - 1).clamp_min(1)).sqrt().float()  # (B or 1, H or 1, 1, 2, 1)
    return std[:, :, :, 0, :], std[:, :, :, 1, :]


class _FusedLLN(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, alpha, beta, key_mask, eps, tiling):
        q, k, v = (_unit_stride(t) for t in (q, k, v))
        b, h, n, d = q.shape
        bd, blk = block_d(d), tiling.block
        precision = "ieee" if q.dtype == torch.float32 else "tf32"
        nsplit, per_prog = _splits(n, b * h, tiling, q.device)
        mask, has_mask = _mask_arg(key_mask, q)
        f32 = {"dtype": torch.float32, "device": q.device}
        m_part = torch.empty(b * h * nsplit, **f32)
        s_part = torch.empty(b * h * nsplit, bd, bd, **f32)
        z_part = torch.empty(b * h * nsplit, bd, **f32)
        ker = kernels()
        ker.kv_state_kernel[(b * h, nsplit)](
            k, v, mask, beta, m_part, s_part, z_part, h, n, d, per_prog, *_strides(k),
            *_strides(v), n, HAS_MASK=has_mask, BLOCK_N=blk, BLOCK_D=bd, PRECISION=precision,
            num_warps=4,
        )  # fmt: skip
        shift, state, z = _merge_states(m_part, s_part, z_part, b * h, nsplit)
        out = torch.empty((b, h, n, d), dtype=v.dtype, device=q.device)
        ker.query_kernel[(b * h, math.ceil(n / blk))](
            q, mask, alpha, state, z, out, eps, h, n, d, *_strides(q), *_strides(out), n,
            HAS_MASK=has_mask, BLOCK_M=blk, BLOCK_D=bd, PRECISION=precision, num_warps=4,
        )  # fmt: skip
        ctx.save_for_backward(q, k, v, alpha, beta, mask, shift, state, z)
        ctx.config = (eps, tiling, has_mask, precision)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        q, k, v, alpha, beta, mask, shift, state, z = ctx.saved_tensors
        eps, tiling, has_mask, precision = ctx.config
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
            q, mask, alpha, state, z, grad_out, dq, ds_part, dz_part, eps, h, n, d, per_prog,
            *_strides(q), *_strides(grad_out), *_strides(dq), n, HAS_MASK=has_mask, BLOCK_M=blk,
            BLOCK_D=bd, PRECISION=precision, num_warps=8,
        )  # fmt: skip
        ds = ds_part.view(b * h, nsplit, bd, bd).sum(1).contiguous()
        dz = dz_part.view(b * h, nsplit, bd).sum(1).contiguous()
        dk = torch.empty((b, h, n, d), dtype=k.dtype, device=q.device)
        dv = torch.empty((b, h, n, d), dtype=v.dtype, device=q.device)
        ker.key_backward_kernel[(b * h, math.ceil(n / blk))](
            k, v, mask, beta, shift, ds, dz, dk, dv, h, n, d, *_strides(k), *_strides(v),
            *_strides(dk), n, HAS_MASK=has_mask, BLOCK_N=blk, BLOCK_D=bd, PRECISION=precision,
            num_warps=4,
        )  # fmt: skip
        return dq, dk, dv, None, None, None, None, None


def _merge_states(
    m_part: Tensor, s_part: Tensor, z_part: Tensor, heads: int, nsplit: int
) -> tuple[Tensor, Tensor, Tensor]:
    """One global shift M per (b, h) and the partial states rescaled to it (online softmax)."""
    m = m_part.view(heads, nsplit)
    shift = m.amax(1)
    shift = torch.where(torch.isinf(shift), torch.zeros_like(shift), shift)
    weight = torch.exp(m - shift[:, None])  # 0 for a range of padding only
    bd = s_part.shape[-1]
    state = (s_part.view(heads, nsplit, bd, bd) * weight[..., None, None]).sum(1).contiguous()
    z = (z_part.view(heads, nsplit, bd) * weight[..., None]).sum(1).contiguous()
    return shift.contiguous(), state, z


def _per_head(x: Tensor, b: int, h: int) -> Tensor:
    """alpha or beta (a scalar, (B,1,1,1) or (B,H,1,1)) as a contiguous fp32 (B*H,) tensor."""
    return x.to(torch.float32).reshape(x.shape[:2] if x.dim() >= 2 else ()).expand(b, h).reshape(-1)


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
    alpha_bh = _per_head(alpha, b, h).contiguous()
    beta_bh = _per_head(beta, b, h).contiguous()
    return _FusedLLN.apply(q, k, v, alpha_bh, beta_bh, key_mask, float(eps), tiling)
