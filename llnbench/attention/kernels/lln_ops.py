"""The fused bidirectional LLN kernels as ``torch.library`` ops (``llnbench::lln_*``), so that
torch.compile traces through an LLN layer without a graph break and CUDA graphs can capture it.

- ``llnbench::lln_moments(q, k, key_mask, scope, a, b, min_sigma, tiling) -> (5, groups)``:
  sigma_q, sigma_k, alpha, beta, st per statistics group. 1 launch.
- ``llnbench::lln_bidir_fwd(q, k, v, alpha, beta, key_mask, eps, tiling) -> (out, state)``:
  ``state`` (B*H, 2 BD + BD^2) holds the keys' shifts, z and S for the backward. 2 launches.
- ``llnbench::lln_bidir_bwd(grad_out, q, k, v, alpha, beta, key_mask, state, eps, tiling)
  -> (dq, dk, dv)``: 2 launches. ``lln_bidir_fwd``'s autograd formula.

Compiled kernels (CUDA) are registered with ``torch.library.triton_op``: torch.compile sees the
kernels themselves (``wrap_triton``). Under ``TRITON_INTERPRET=1`` (CPU tests), or with
``LLNBENCH_TRITON_OPAQUE=1`` (a fallback should Inductor mishandle a kernel), they are opaque
``custom_op``s with the fake (meta) functions below. ``tiling`` is ``Tiling.as_list()`` or ``[]``
(the table, or the autotuned tiling when ``LLNBENCH_TRITON_AUTOTUNE=1``).

``lln_moments`` and ``lln_forward`` are what callers use: while torch.compile (or another
fake-tensor tracer) looks they call the ops; eagerly they run the same implementations without
the op dispatcher (one ``autograd.Function``), whose Python layers cost more host time per call
than the launches. Host work per eager call: shapes, one dict lookup for the plan (tiling and
grid, cached per shape), the output allocations and the launches.

Workspaces (partials, the state gradient) and the merge counters are cached per (device, dtype)
and reused: nothing in them outlives a call, and every launch leaves its counters at 0. While
tracing (fake tensors) they are fresh allocations, so a compiled graph owns its own (its
counters cost one zero-fill per op); a buffer first needed during a CUDA-graph capture belongs
to that graph and is not cached, and buffers the cache outgrows are kept alive, so a captured
graph never refers to freed memory. One stream at a time: two streams running LLN concurrently
on one device would share a workspace.
"""

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from typing import NamedTuple, Optional

import torch
from torch import Tensor

from llnbench.attention.kernels import _triton_lln_kernels as ker
from llnbench.attention.kernels import tiles
from llnbench.attention.kernels.tiles import Tiling, block_d

OPAQUE_ENV = "LLNBENCH_TRITON_OPAQUE"
REGISTRATION = (
    "custom_op"
    if ker.INTERPRETED or os.environ.get(OPAQUE_ENV, "") not in ("", "0")
    else "triton_op"
)
STAT_NAMES = ("sigma_q", "sigma_k", "alpha", "beta", "sigma_tilde")
# how the moment partials, (bh, split) in order, pool into the scope's groups: (groups, bh each)
SCOPE_GROUPS = {"batch": lambda b, h: (1, b * h), "sequence": lambda b, h: (b, h),
                "head": lambda b, h: (b * h, 1)}  # fmt: skip
FORWARD_KERNELS = ("kv_state_kernel", "query_kernel")
MOMENT_KERNELS = ("moments_kernel",)
BACKWARD_KERNELS = ("query_backward_kernel", "key_backward_kernel")

# -- launches, and a record of them --------------------------------------------------------------

_launch_log: list[str] | None = None


@contextlib.contextmanager
def record_launches() -> Iterator[list[str]]:
    """Collect the names of the kernels launched inside the block, in order (eager calls; while
    tracing, the launches traced)."""
    global _launch_log
    outer, _launch_log = _launch_log, []
    inner = _launch_log
    try:
        yield inner
    finally:
        if outer is not None:
            outer.extend(inner)  # an enclosing record sees these launches too
        _launch_log = outer


def _launch(kernel, grid: tuple[int, ...], *args, **meta) -> None:
    if _launch_log is not None:
        _launch_log.append(kernel.__name__ if hasattr(kernel, "__name__") else kernel.fn.__name__)
    if REGISTRATION == "triton_op":
        kernel = torch.library.wrap_triton(kernel)  # the raw kernel outside tracing
    kernel[grid](*args, **meta)


# -- workspaces ----------------------------------------------------------------------------------

_workspaces: dict[tuple[str, torch.device, torch.dtype], Tensor] = {}
_retired: list[Tensor] = []  # replaced workspaces stay alive: a captured graph may use them


def cached_workspaces() -> dict[tuple[str, torch.device, torch.dtype], Tensor]:
    """The buffers reused across calls, per (name, device, dtype) (tests, memory accounting)."""
    return dict(_workspaces)


def _tracing(t: Tensor) -> bool:
    return type(t) is not Tensor or torch.compiler.is_compiling()


def _capturing(device: torch.device) -> bool:
    return device.type == "cuda" and torch.cuda.is_current_stream_capturing()


def workspace(
    name: str, numel: int, dtype: torch.dtype, like: Tensor, *, zero: bool = False
) -> Tensor:
    """A flat buffer of at least ``numel`` elements (kernels index within it), reused across
    calls; ``zero``: the counters, which every kernel leaves at 0."""
    new = torch.zeros if zero else torch.empty
    if _tracing(like):
        return new(numel, dtype=dtype, device=like.device)
    key = (name, like.device, dtype)
    buf = _workspaces.get(key)
    if buf is not None and buf.numel() >= numel:
        return buf
    fresh = new(max(numel, 2 * (buf.numel() if buf is not None else 0)), dtype=dtype,
                device=like.device)  # fmt: skip
    if _capturing(like.device):
        return fresh  # graph-pool memory: never cached
    if buf is not None:
        _retired.append(buf)
    _workspaces[key] = fresh
    return fresh


# -- tilings -------------------------------------------------------------------------------------

_tuned: dict[tuple, Tiling] = {}


class Plan(NamedTuple):
    """How one call is cut: rows per tile, padded head dim, programs per (b, h) along N, tiles
    per program, warps, backward warps, dot precision."""

    block: int
    bd: int
    nsplit: int
    per_prog: int
    warps: int
    backward_warps: int
    precision: str


def _key(q: Tensor) -> tuple:
    return (q.device, q.dtype, q.shape[-1], tiles.n_bucket(q.shape[2]))


def _tiling(q: Tensor, values: list[int], tune: Callable[[], Tiling] | None = None) -> Tiling:
    if values:
        return Tiling.from_list(list(values))
    key = _key(q)
    found = _tuned.get(key)
    if found is not None:
        return found
    if tune is None or _tracing(q) or not tiles.autotune_enabled():
        return tiles.table_tiling(q.device, q.shape[-1], q.dtype)
    _tuned[key] = tune()
    return _tuned[key]


def tuned_tilings() -> dict[tuple, Tiling]:
    """What the autotuner chose so far, per (device, dtype, head_dim, N bucket)."""
    return dict(_tuned)


def forget_tuned() -> None:
    """Drop the autotuned tilings (the next call tunes again, if autotuning is on)."""
    _tuned.clear()
    _plans.clear()


def set_autotune(enabled: bool | None) -> None:
    """Turn autotuning on or off for this process (None: follow LLNBENCH_TRITON_AUTOTUNE)."""
    tiles.set_autotune(enabled)
    _plans.clear()


_plans: dict[tuple, Plan] = {}


def cached_plan(q: Tensor, values: list[int], tune: Callable[[], Tiling] | None = None) -> Plan:
    """``plan`` of the tiling for this call, cached per (shape, dtype, device, tiling)."""
    key = (q.shape, q.dtype, q.device, tuple(values))
    found = _plans.get(key)
    if found is not None:
        return found
    made = plan(q, _tiling(q, values, tune))
    # a table tiling that the autotuner may still replace (the moments pass runs before the
    # forward tunes) is not kept
    settled = values or not tiles.autotune_enabled() or _key(q) in _tuned
    if settled and not _tracing(q):
        _plans[key] = made
    return made


def plan(q: Tensor, tiling: Tiling) -> Plan:
    b, h, n, d = q.shape
    n_blocks = max(1, -(-n // tiling.block))
    target = tiles.total_programs(tiling, q.device)
    per_head = min(n_blocks, max(1, -(-target // (b * h))))
    per_prog = -(-n_blocks // per_head)
    precision = "ieee" if q.dtype == torch.float32 else "tf32"
    return Plan(tiling.block, block_d(d), -(-n_blocks // per_prog), per_prog, tiling.warps,
                tiling.backward_warps, precision)  # fmt: skip


def _time_ms(fn: Callable[[], object], device: torch.device) -> float:
    if device.type == "cuda":
        import triton.testing

        return float(triton.testing.do_bench(fn, warmup=5, rep=25))
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1e3


def autotune(q, k, v, alpha, beta, key_mask, eps) -> Tiling:
    """The fastest of ``tiles.candidates`` for a forward and backward of these inputs."""
    grad = torch.randn_like(q, dtype=v.dtype)
    timings = []
    for tiling in tiles.candidates(q.device, q.shape[-1]):
        values = tiling.as_list()

        def step(values=values):
            _, state = forward_impl(q, k, v, alpha, beta, key_mask, eps, values)
            return backward_impl(grad, q, k, v, alpha, beta, key_mask, state, eps, values)

        try:
            timings.append((_time_ms(step, q.device), tiling))
        except Exception:  # a tiling this device cannot compile (registers, shared memory)
            continue
    if not timings:
        return tiles.table_tiling(q.device, q.shape[-1], q.dtype)
    return min(timings, key=lambda pair: pair[0])[1]


# -- the implementations -----------------------------------------------------------------------


def _unit_stride(t: Tensor) -> Tensor:
    return t if t.stride()[-1] == 1 else t.contiguous()


def _strides(t: Tensor) -> tuple[int, ...]:
    return t.stride()[:3]


def _mask(key_mask: Optional[Tensor], like: Tensor) -> tuple[Tensor, int, bool]:  # noqa: UP045
    """(pointer, batch stride, HAS_MASK): the bool mask's bytes, or ``like`` (never read)."""
    if key_mask is None:
        return like, 0, False
    key_mask = _unit_stride(key_mask)
    return key_mask.view(torch.uint8), key_mask.stride(0), True


def _ab_div(x: Tensor, b: int, h: int) -> int:
    """What maps a program's b*H + h to its alpha/beta entry (1, B or B*H values)."""
    return {1: b * h, b: h, b * h: 1}[x.numel()]


def moments_impl(
    q: Tensor, k: Tensor, key_mask: Optional[Tensor], scope: str, a: float, b: float,  # noqa: UP045
    min_sigma: float, tiling: list[int],
) -> Tensor:  # fmt: skip
    q, k = _unit_stride(q), _unit_stride(k)
    batch, heads, n, d = q.shape
    p = cached_plan(q, tiling)
    groups, per_group = SCOPE_GROUPS[scope](batch, heads)
    members = per_group * p.nsplit
    part = workspace("moments", batch * heads * p.nsplit * ker.MOMENT_SLOTS, torch.float32, q)
    counter = workspace("counter", batch * heads, torch.int32, q, zero=True)
    temps = torch.empty((5, groups), dtype=torch.float32, device=q.device)
    mask, smb, has_mask = _mask(key_mask, q)
    _launch(
        ker.moments_kernel, (batch * heads, p.nsplit), q, k, mask, part, counter, temps, heads,
        n, d, p.per_prog, members, groups, a, b, min_sigma, *_strides(q), *_strides(k), smb,
        HAS_MASK=has_mask, BLOCK_N=p.block, BLOCK_D=p.bd,
        BLOCK_P=max(16, min(1024, 1 << (members - 1).bit_length())), SLOTS=ker.MOMENT_SLOTS,
        num_warps=p.warps,
    )  # fmt: skip
    return temps


def forward_impl(
    q: Tensor, k: Tensor, v: Tensor, alpha: Tensor, beta: Tensor,
    key_mask: Optional[Tensor], eps: float, tiling: list[int],  # noqa: UP045
) -> tuple[Tensor, Tensor]:  # fmt: skip
    q, k, v = _unit_stride(q), _unit_stride(k), _unit_stride(v)
    b, h, n, d = q.shape

    def tune() -> Tiling:
        return autotune(q, k, v, alpha, beta, key_mask, eps)

    p = cached_plan(q, tiling, tune)
    bd = p.bd
    stride = 2 * bd + bd * bd
    part = workspace("key_states", b * h * p.nsplit * stride, torch.float32, q)
    counter = workspace("counter", b * h, torch.int32, q, zero=True)
    state = torch.empty((b * h, stride), dtype=torch.float32, device=q.device)
    out = torch.empty((b, h, n, d), dtype=v.dtype, device=q.device)
    mask, smb, has_mask = _mask(key_mask, q)
    div = _ab_div(alpha, b, h)
    _launch(
        ker.kv_state_kernel, (b * h, p.nsplit), k, v, mask, beta, part, counter, state, h, n, d,
        p.per_prog, div, *_strides(k), *_strides(v), smb, HAS_MASK=has_mask, BLOCK_N=p.block,
        BLOCK_D=bd, PRECISION=p.precision, num_warps=p.warps,
    )  # fmt: skip
    _launch(
        ker.query_kernel, (b * h, p.nsplit), q, mask, alpha, state, out, eps, h, n, d, p.per_prog,
        div, *_strides(q), *_strides(out), smb, HAS_MASK=has_mask, BLOCK_M=p.block, BLOCK_D=bd,
        PRECISION=p.precision, num_warps=p.warps,
    )  # fmt: skip
    return out, state


def backward_impl(
    grad_out: Tensor, q: Tensor, k: Tensor, v: Tensor, alpha: Tensor, beta: Tensor,
    key_mask: Optional[Tensor], state: Tensor, eps: float, tiling: list[int],  # noqa: UP045
) -> tuple[Tensor, Tensor, Tensor]:  # fmt: skip
    grad_out, q, k, v = (_unit_stride(t) for t in (grad_out, q, k, v))
    b, h, n, d = q.shape
    p = cached_plan(q, tiling)
    bd = p.bd
    stride = bd + bd * bd
    part = workspace("state_grads", b * h * p.nsplit * stride, torch.float32, q)
    dstate = workspace("state_grad", b * h * stride, torch.float32, q)
    counter = workspace("counter", b * h, torch.int32, q, zero=True)
    dq = torch.empty((b, h, n, d), dtype=q.dtype, device=q.device)
    dk = torch.empty((b, h, n, d), dtype=k.dtype, device=q.device)
    dv = torch.empty((b, h, n, d), dtype=v.dtype, device=q.device)
    mask, smb, has_mask = _mask(key_mask, q)
    div = _ab_div(alpha, b, h)
    _launch(
        ker.query_backward_kernel, (b * h, p.nsplit), q, mask, alpha, state, grad_out, dq, part,
        counter, dstate, eps, h, n, d, p.per_prog, div, *_strides(q), *_strides(grad_out),
        *_strides(dq), smb, HAS_MASK=has_mask, BLOCK_M=p.block, BLOCK_D=bd,
        PRECISION=p.precision, num_warps=p.backward_warps,
    )  # fmt: skip
    _launch(
        ker.key_backward_kernel, (b * h, p.nsplit), k, v, mask, beta, state, dstate, dk, dv, h, n,
        d, p.per_prog, div, *_strides(k), *_strides(v), *_strides(dk), smb, HAS_MASK=has_mask,
        BLOCK_N=p.block, BLOCK_D=bd, PRECISION=p.precision, num_warps=p.warps,
    )  # fmt: skip
    return dq, dk, dv


# -- fake (meta) functions: shapes and dtypes only -------------------------------------------


def moments_fake(q, k, key_mask, scope, a, b, min_sigma, tiling):
    groups, _ = SCOPE_GROUPS[scope](q.shape[0], q.shape[1])
    return q.new_empty((5, groups), dtype=torch.float32)


def forward_fake(q, k, v, alpha, beta, key_mask, eps, tiling):
    b, h, n, d = q.shape
    bd = block_d(d)
    return (q.new_empty((b, h, n, d), dtype=v.dtype),
            q.new_empty((b * h, 2 * bd + bd * bd), dtype=torch.float32))  # fmt: skip


def backward_fake(grad_out, q, k, v, alpha, beta, key_mask, state, eps, tiling):
    return q.new_empty(q.shape), k.new_empty(k.shape), v.new_empty(v.shape)


# -- registration --------------------------------------------------------------------------------


def _register(name: str, impl: Callable, fake: Callable):
    qualname = f"llnbench::{name}"
    if REGISTRATION == "triton_op":  # the fake is the implementation itself, traced
        return torch.library.triton_op(qualname, impl, mutates_args=())
    op = torch.library.custom_op(qualname, impl, mutates_args=())
    op.register_fake(fake)
    return op


moments = _register("lln_moments", moments_impl, moments_fake)
bidir_forward = _register("lln_bidir_fwd", forward_impl, forward_fake)
bidir_backward = _register("lln_bidir_bwd", backward_impl, backward_fake)


def _setup_context(ctx, inputs, output) -> None:
    q, k, v, alpha, beta, key_mask, eps, tiling = inputs
    ctx.save_for_backward(q, k, v, alpha, beta, key_mask, output[1])
    ctx.eps, ctx.tiling = eps, tiling
    ctx.mark_non_differentiable(output[1])


def _input_grads(ctx, grad_out: Tensor, run: Callable) -> tuple:
    q, k, v, alpha, beta, key_mask, state = ctx.saved_tensors
    dq, dk, dv = run(grad_out, q, k, v, alpha, beta, key_mask, state, ctx.eps, ctx.tiling)
    return dq, dk, dv, None, None, None, None, None


def _backward(ctx, grad_out, _grad_state):
    return _input_grads(ctx, grad_out, bidir_backward)


bidir_forward.register_autograd(_backward, setup_context=_setup_context)


class _EagerForward(torch.autograd.Function):
    """The same implementations without the op dispatcher, for eager calls (its Python layers
    cost more host time per call than the launches themselves)."""

    @staticmethod
    def forward(ctx, q, k, v, alpha, beta, key_mask, eps, tiling):
        out, state = forward_impl(q, k, v, alpha, beta, key_mask, eps, tiling)
        ctx.save_for_backward(q, k, v, alpha, beta, key_mask, state)
        ctx.eps, ctx.tiling = eps, tiling
        return out

    @staticmethod
    def backward(ctx, grad_out):
        return _input_grads(ctx, grad_out, backward_impl)


def _use_ops(q: Tensor) -> bool:
    """The registered ops while torch.compile (or any fake-tensor tracer) looks; eagerly the
    implementations directly."""
    return torch.compiler.is_compiling() or type(q) is not Tensor


def lln_moments(
    q: Tensor, k: Tensor, key_mask: Optional[Tensor], scope: str, a: float, b: float,  # noqa: UP045
    min_sigma: float, tiling: list[int],
) -> Tensor:  # fmt: skip
    """``llnbench::lln_moments`` (q and k are not differentiated through)."""
    run = moments if _use_ops(q) else moments_impl
    return run(q, k, key_mask, scope, a, b, min_sigma, tiling)


def lln_forward(
    q: Tensor, k: Tensor, v: Tensor, alpha: Tensor, beta: Tensor,
    key_mask: Optional[Tensor], eps: float, tiling: list[int],  # noqa: UP045
) -> Tensor:  # fmt: skip
    """The output of ``llnbench::lln_bidir_fwd``, differentiable in q, k and v."""
    if _use_ops(q):
        return bidir_forward(q, k, v, alpha, beta, key_mask, eps, tiling)[0]
    return _EagerForward.apply(q, k, v, alpha, beta, key_mask, eps, tiling)
