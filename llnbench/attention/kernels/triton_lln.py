"""Fused bidirectional LLN in Triton: a moment-matched forward is 3 kernel launches (2 with given
temperatures), a backward 2, and nothing else runs on the device between them.

Math (per (b, h); alpha, beta autograd constants; shifts detached, exactly as ``lln.py``):

    M_t = max over real j of beta k_jt (per feature),  phi_k_j = exp(beta k_j - M),
    phi_q_i = exp(alpha q_i + M - max_t (alpha q_it + M_t))   (each query's largest term is 1),
    S = sum_j phi_k_j^T v_j (d x d),  z = sum_j phi_k_j,  out_i = phi_q_i S / (phi_q_i . z + eps)

Passes (HBM traffic in units of N d elements per head; each on a (B*H, splits) grid):
1. ``moments_kernel``: count, mean, M2 of the real entries of q and k per program (reads q, k: 2);
   the last program of each statistics group pools them into sigma_q, sigma_k and the
   moment-matched alpha, beta (``lln.symmetric_temperatures``). Op ``llnbench::lln_moments``.
2. ``kv_state_kernel``: partial (S, z) per program with its own running per-feature max shifts
   (reads k, v: 2); the last program of each (b, h) rescales them to the shifts M and sums them.
3. ``query_kernel``: out from phi_q, S, z (reads q, writes out: 2). Ops 2-3: ``lln_bidir_fwd``.
Backward (``lln_bidir_bwd``): ``query_backward_kernel`` (dq, and dS, dz summed by the last
program per (b, h): reads q, dout, writes dq: 3) and ``key_backward_kernel`` (dk, dv: reads k, v,
writes dk, dv: 4). Outputs are recomputed, not stored. Dots are IEEE fp32 for fp32 inputs and
TF32 for 16-bit inputs (features in (0, 1]). Merges are in a fixed order: results are bitwise
reproducible.

The moments cannot share the key-state pass: phi_k = exp(beta k) needs beta, which needs
sigma_k (and sigma_q) over the whole statistics group, i.e. every key of the call under the
default scope, before the first key is weighed. What was fused is every merge: no launch of its
own, and the last program of a group does it.

Before this layout (GPU issue 19): 5 launches forward (moments, a one-program temperature
merge, key state, a state merge, queries) plus 2 mask conversions, 4 backward (2 kernels and 2
torch sums), buffers allocated and device properties read per call. Now 3 + 2 launches and no
other device op; eager calls skip the op dispatcher (``lln_ops.lln_forward``). Host time per
fwd+bwd with the launches stubbed out (2-core CPU VM, B=1, H=12, N=64, d=64): 538 us before,
414 us now (Triton's own launch cost, ~10-30 us each on a GPU host, comes on top: 7 -> 5).

To be measured on a GPU (``scale`` / ``gpu-check``; B=1, H=12, d=64, bf16): 13 units of traffic
per fwd+bwd against the 11 that reading the inputs and writing the outputs needs, so the floor at
16k is ~0.07 ms on an H200 (4.8 TB/s) and the goal <= 0.25 ms; at 64k <= 0.6 ms. The tile table
(``tiles.TABLE``) is unmeasured; ``LLNBENCH_TRITON_AUTOTUNE=1`` times the candidates instead.
``record_launches`` lists what ran, for a per-layer profile.
"""

from __future__ import annotations

from types import ModuleType

import torch
from torch import Tensor

from llnbench.attention.kernels import _triton_lln_kernels, lln_ops
from llnbench.attention.kernels.tiles import Tiling, block_d

__all__ = [
    "Tiling",
    "block_d",
    "forget_tuned",
    "kernels",
    "launch_plan",
    "lln_attention",
    "moment_sigmas",
    "moment_temperatures",
    "record_launches",
    "set_autotune",
    "tuned_tilings",
]
record_launches = lln_ops.record_launches
tuned_tilings = lln_ops.tuned_tilings
forget_tuned = lln_ops.forget_tuned
set_autotune = lln_ops.set_autotune
_DIMS_SCOPE = {(0, 1, 2, 3): "batch", (1, 2, 3): "sequence", (2, 3): "head"}


def kernels() -> ModuleType:
    """The kernel module (compiled or, under TRITON_INTERPRET=1, interpreted)."""
    return _triton_lln_kernels


def launch_plan(*, moment_matching: bool = True) -> dict[str, tuple[str, ...]]:
    """The kernels one LLN layer launches, in order: ``forward`` and ``backward`` (the names a
    profiler shows)."""
    forward = lln_ops.FORWARD_KERNELS
    if moment_matching:
        forward = lln_ops.MOMENT_KERNELS + forward
    return {"forward": forward, "backward": lln_ops.BACKWARD_KERNELS}


def _tiling_arg(tiling: Tiling | None) -> list[int]:
    return [] if tiling is None else tiling.as_list()


def moment_temperatures(
    q: Tensor, k: Tensor, key_mask: Tensor | None, scope: str, a: float, b: float,
    *, min_sigma: float = 1e-6, tiling: Tiling | None = None,
) -> dict[str, Tensor]:  # fmt: skip
    """sigma_q, sigma_k (unbiased std of the real entries per statistics group, clamped at
    ``min_sigma``) and the moment-matched alpha, beta, st: fp32 tensors of (groups,), where the
    scope ``batch`` has 1 group, ``sequence`` B and ``head`` B*H. One launch; constants for
    autograd."""
    temps = lln_ops.lln_moments(q.detach(), k.detach(), key_mask, scope, float(a), float(b),
                            float(min_sigma), _tiling_arg(tiling))  # fmt: skip
    return dict(zip(lln_ops.STAT_NAMES, temps.unbind(0), strict=True))


def moment_sigmas(
    q: Tensor,
    k: Tensor,
    key_mask: Tensor | None,
    dims: tuple[int, ...],
    tiling: Tiling | None = None,
) -> tuple[Tensor, Tensor]:
    """``masked_std`` of q and k over ``dims`` (keepdim shapes), from the kernels (unclamped)."""
    stats = moment_temperatures(q, k, key_mask, _DIMS_SCOPE[tuple(dims)], 1.0, 0.0,
                                min_sigma=0.0, tiling=tiling)  # fmt: skip
    shape = [q.shape[0] if 0 not in dims else 1, q.shape[1] if 1 not in dims else 1, 1, 1]
    return stats["sigma_q"].reshape(shape), stats["sigma_k"].reshape(shape)


def _per_head(x: Tensor, b: int, h: int) -> Tensor:
    """alpha or beta (a scalar, (B,1,1,1) or (B,H,1,1)) as fp32 values, one per statistics group."""
    flat = x.detach().to(torch.float32).reshape(-1)
    if flat.numel() not in (1, b, b * h):
        raise ValueError(f"alpha/beta with {flat.numel()} values for B={b}, H={h}")
    return flat.contiguous()


def lln_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    alpha: Tensor,
    beta: Tensor,
    key_mask: Tensor | None = None,
    *,
    eps: float = 1e-8,
    tiling: Tiling | None = None,
) -> Tensor:
    """Bidirectional LLN output (B, H, N, d) in v's dtype; differentiable in q, k and v."""
    b, h = q.shape[:2]
    alpha, beta = _per_head(alpha, b, h), _per_head(beta, b, h)
    if alpha.numel() != beta.numel():
        raise ValueError("alpha and beta must come from one statistics scope (same shape)")
    if key_mask is not None and key_mask.dtype != torch.bool:
        key_mask = key_mask.to(torch.bool)
    return lln_ops.lln_forward(q, k, v, alpha, beta, key_mask, float(eps), _tiling_arg(tiling))
