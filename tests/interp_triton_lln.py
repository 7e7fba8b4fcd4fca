"""The fused Triton LLN against the float64 formula, forward and backward, on CPU tensors under
the Triton interpreter, at tiny sizes. Not collected by the suite itself (no ``test_`` prefix):
``test_kernels_triton.py`` runs this file in a child process with TRITON_INTERPRET=1, which must
be set before ``import triton`` (tl.zeros, tl.sum and friends are jit functions decorated then).

Tolerance: fp32 kernels vs float64, max |error| <= 1e-5 * max(max |reference|, 1) (measured <= 1e-6),
outputs and q, k, v gradients alike; the kernels' sigma_q, sigma_k, alpha, beta within 1e-6
relative. bf16 inputs: <= 1e-2 * max |reference| (spec §3.3).
"""

from __future__ import annotations

import pytest
import torch
from helpers import qkv, right_padding_mask

from llnbench.attention import build_attention
from llnbench.attention.base import masked_std
from llnbench.attention.kernels import lln_ops, tiles
from llnbench.attention.linear_core import exp_features, linear_attention
from llnbench.attention.lln import PAPER_A, PAPER_B, STATS_SCOPES
from llnbench.attention.reference import lln_matrix, lln_temperatures

TOLERANCE = {torch.float32: 1e-5, torch.bfloat16: 1e-2}


@pytest.fixture(scope="module")
def triton_lln():
    """The launcher, its kernels built for the interpreter (this process has TRITON_INTERPRET=1)."""
    from llnbench.attention.kernels import triton_lln

    if not triton_lln.kernels().INTERPRETED:
        pytest.fail("run these checks through tests/test_kernels_triton.py (TRITON_INTERPRET=1)")
    return triton_lln


def relative_errors(out, ref, grads, ref_grads, real) -> list[float]:
    pairs = [(out * real, ref * real), *zip(grads, ref_grads)]
    # relative to the reference's largest entry, or absolute where it is below 1 (N=1: the
    # q and k gradients are exactly 0)
    return [((a.double() - b).abs().max() / b.abs().max().clamp_min(1.0)).item() for a, b in pairs]


def parity(triton_lln, n, d, *, mask=None, tiling=None, scale=1.0, dtype=torch.float32,
           moment_matched=False, device="cpu"):  # fmt: skip
    """Errors of the kernel (fwd, dq, dk, dv) against the unshifted float64 formula (on the
    CPU); with ``moment_matched`` the kernels' own temperatures (checked against float64 too).
    ``device``: where the kernels run (test_kernels_triton.py's CUDA checks use this too)."""
    q64, k64, v64 = qkv(2, 3, n, d, scale=scale)
    q, k, v = (t.to(dtype).to(device).requires_grad_() for t in (q64, k64, v64))
    on_device = None if mask is None else mask.to(device)
    # the formula and its gradients, on the same rounded inputs
    qd, kd, vd = (t.detach().cpu().double().requires_grad_() for t in (q, k, v))
    alpha, beta = lln_temperatures(qd, kd, mask, "batch")
    if moment_matched:
        stats = triton_lln.moment_temperatures(q, k, on_device, "batch", PAPER_A, PAPER_B,
                                               tiling=tiling)  # fmt: skip
        got = torch.stack([stats["alpha"], stats["beta"]]).cpu().double().flatten()
        torch.testing.assert_close(got, torch.cat([alpha, beta]).flatten(), rtol=1e-6, atol=0)
        kernel_alpha, kernel_beta = stats["alpha"], stats["beta"]
    else:
        kernel_alpha, kernel_beta = alpha.float().to(device), beta.float().to(device)
    out = triton_lln.lln_attention(q, k, v, kernel_alpha, kernel_beta, on_device, eps=0.0,
                                   tiling=tiling)  # fmt: skip
    assert out.dtype == dtype and out.shape == q.shape and torch.isfinite(out).all()
    ref = lln_matrix(qd, kd, alpha, beta, mask) @ vd
    real = torch.ones(2, 1, n, 1) if mask is None else mask[:, None, :, None].double()
    grad = torch.randn_like(ref) * real  # padded query rows carry no gradient
    (out * grad.to(dtype).to(device)).sum().backward()
    (ref * grad).sum().backward()
    grads = [t.grad.cpu() for t in (q, k, v)]
    return relative_errors(out.detach().cpu(), ref.detach(), grads, (qd.grad, kd.grad, vd.grad),
                           real)  # fmt: skip


CASES = [  # head_dim, N, masked, dtype, input std
    (8, 1, False, torch.float32, 1.0),
    (8, 5, True, torch.float32, 2.0),
    (16, 37, False, torch.float32, 1.0),
    (32, 50, True, torch.float32, 1.5),
    (64, 131, False, torch.float32, 1.0),
    (64, 70, True, torch.bfloat16, 3.0),
    (128, 9, False, torch.float32, 1.0),
    (128, 20, True, torch.float32, 2.0),
    (128, 12, True, torch.bfloat16, 3.0),
    (96, 7, True, torch.float32, 1.0),  # padded to 128 columns
]


def case_id(case) -> str:
    d, n, masked, dtype, _ = case
    return f"d{d}-n{n}-{'masked' if masked else 'unmasked'}-{str(dtype).removeprefix('torch.')}"


@pytest.mark.parametrize("case", CASES, ids=[case_id(c) for c in CASES])
def test_forward_and_backward_match_float64(triton_lln, case) -> None:
    d, n, masked, dtype, scale = case
    mask = right_padding_mask([n, max(1, n // 2)], n) if masked else None
    errors = parity(triton_lln, n, d, mask=mask, scale=scale, dtype=dtype, moment_matched=True)
    assert max(errors) < TOLERANCE[dtype], errors


@pytest.mark.parametrize(("head_dim", "n"), [(8, 83), (128, 40)], ids=["d8-n83", "d128-n40"])
def test_several_tiles_and_row_splits(triton_lln, head_dim: int, n: int) -> None:
    """Small tiles and many programs: the online max rescaling, and the last-program merges of
    statistics, states and state gradients over several programs per (b, h)."""
    tiling = triton_lln.Tiling(block=16, target_programs=64)
    errors = parity(triton_lln, n, head_dim, mask=right_padding_mask([n, n // 2], n),
                    tiling=tiling, scale=2.0, moment_matched=True)  # fmt: skip
    assert max(errors) < 1e-5, errors


def test_left_and_right_padding(triton_lln) -> None:
    mask = right_padding_mask([29, 11], 29)
    mask[0, :4] = False  # left padding too
    errors = parity(triton_lln, 29, 8, mask=mask)
    assert max(errors) < 1e-5, errors


def test_eps_enters_like_the_torch_path(triton_lln) -> None:
    """eps is added to the shifted denominator (spec §3.3), as linear_core does: compare with
    the torch path's own float64 evaluation, forward and backward."""
    q, k, v = (t.requires_grad_() for t in qkv(2, 3, 21, 8, scale=2.0))
    mask = right_padding_mask([21, 9], 21)
    alpha, beta = lln_temperatures(q, k, mask, "batch")
    phi_q, phi_k, _ = exp_features(alpha * q, beta * k, mask, causal=False)
    ref = linear_attention(phi_q, phi_k, v, mask, eps=1e-3)
    fp32 = [t.detach().float().requires_grad_() for t in (q, k, v)]
    out = triton_lln.lln_attention(*fp32, alpha.float(), beta.float(), mask, eps=1e-3)
    real = mask[:, None, :, None].double()
    grad = torch.randn_like(ref) * real
    (ref * grad).sum().backward()
    (out * grad.float()).sum().backward()
    errors = relative_errors(out.detach(), ref.detach(), [t.grad for t in fp32],
                             [q.grad, k.grad, v.grad], real)  # fmt: skip
    assert max(errors) < 1e-5, errors


@pytest.mark.parametrize("scope", list(STATS_SCOPES))
def test_moment_statistics_match_masked_std(triton_lln, scope: str) -> None:
    q, k, _ = qkv(2, 3, 45, 8, dtype=torch.float32, scale=1.7)
    q = q + 0.5  # a mean away from 0
    mask = right_padding_mask([45, 20], 45)
    tiling = triton_lln.Tiling(block=16, target_programs=16)
    sq, sk = triton_lln.moment_sigmas(q, k, mask, STATS_SCOPES[scope], tiling)
    for got, x in ((sq, q), (sk, k)):
        want = masked_std(x.double(), mask, STATS_SCOPES[scope])
        assert got.shape == want.shape
        torch.testing.assert_close(got.double(), want, atol=0, rtol=1e-6)


# -- launches, workspaces, determinism ---------------------------------------------------------


def masked_inputs(n: int = 24, d: int = 16, seed: int = 0):
    q, k, v = (t.float().requires_grad_() for t in qkv(2, 3, n, d, scale=1.5, seed=seed))
    return q, k, v, right_padding_mask([n, n // 2], n)


def moment_matched_layer(triton_lln, q, k, v, mask):
    stats = triton_lln.moment_temperatures(q, k, mask, "batch", PAPER_A, PAPER_B)
    return triton_lln.lln_attention(q, k, v, stats["alpha"], stats["beta"], mask)


def test_a_layer_launches_three_kernels_forward_and_two_backward(triton_lln) -> None:
    q, k, v, mask = masked_inputs()
    plan = triton_lln.launch_plan()
    with triton_lln.record_launches() as forward:
        out = moment_matched_layer(triton_lln, q, k, v, mask)
    with triton_lln.record_launches() as backward:
        out.sum().backward()
    assert forward == ["moments_kernel", "kv_state_kernel", "query_kernel"] == [*plan["forward"]]
    assert backward == ["query_backward_kernel", "key_backward_kernel"] == [*plan["backward"]]
    attn = build_attention("lln", num_heads=3, head_dim=16, backend="triton")
    with triton_lln.record_launches() as module:
        attn(q, k, v, mask)
    assert module == forward  # the module adds no launch of its own
    fixed = build_attention("lln", num_heads=3, head_dim=16, backend="triton",
                            fixed_alpha_beta=(0.9, 1.1))  # fmt: skip
    with triton_lln.record_launches() as given:
        fixed(q, k, v, mask)
    assert given == [*triton_lln.launch_plan(moment_matching=False)["forward"]]


def test_repeated_calls_reuse_workspaces_and_agree_bitwise(triton_lln) -> None:
    q, k, v, mask = masked_inputs()
    runs = []
    for _ in range(2):
        for t in (q, k, v):
            t.grad = None
        out = moment_matched_layer(triton_lln, q, k, v, mask)
        out.square().sum().backward()
        buffers = {key: buf.data_ptr() for key, buf in lln_ops.cached_workspaces().items()}
        runs.append((out.detach(), [t.grad for t in (q, k, v)], buffers))
    (out1, grads1, buffers1), (out2, grads2, buffers2) = runs
    assert torch.equal(out1, out2) and all(map(torch.equal, grads1, grads2))
    assert buffers1 == buffers2 and {"key_states", "state_grads", "counter"} <= {
        key[0] for key in buffers1
    }
    counters = lln_ops.cached_workspaces()[("counter", q.device, torch.int32)]
    assert torch.all(counters == 0)  # every launch leaves its counters at 0


def test_saved_state_is_not_a_reused_workspace(triton_lln) -> None:
    """Forward twice, then backward through the first: its saved state must be its own."""
    first, second = masked_inputs(seed=1), masked_inputs(seed=2)
    out1 = moment_matched_layer(triton_lln, *first)
    out2 = moment_matched_layer(triton_lln, *second)
    out1.square().sum().backward()
    out2.square().sum().backward()
    fresh = [t.detach().clone().requires_grad_() for t in first[:3]]
    moment_matched_layer(triton_lln, *fresh, first[3]).square().sum().backward()
    for used, alone in zip(first[:3], fresh):
        assert torch.equal(used.grad, alone.grad)


# -- torch.library ops -------------------------------------------------------------------------


def op_args(d: int = 16, n: int = 10):
    q, k, v, mask = masked_inputs(n, d)
    stats = lln_ops.moments(q.detach(), k.detach(), mask, "sequence", PAPER_A, PAPER_B, 1e-6, [])
    alpha, beta = stats[2].contiguous(), stats[3].contiguous()
    return q, k, v, alpha, beta, mask


def test_ops_pass_opcheck(triton_lln) -> None:
    """Schemas, fake (meta) functions, autograd registration and AOT dispatch of the three ops."""
    q, k, v, alpha, beta, mask = op_args()
    torch.library.opcheck(lln_ops.moments, (q.detach(), k.detach(), mask, "head", 0.15, -0.35,
                                            1e-6, []))  # fmt: skip
    torch.library.opcheck(lln_ops.bidir_forward, (q, k, v, alpha, beta, mask, 1e-8, []))
    _, state = lln_ops.bidir_forward(q, k, v, alpha, beta, mask, 1e-8, [])
    grad = torch.randn_like(q)
    torch.library.opcheck(lln_ops.bidir_backward, (grad, q.detach(), k.detach(), v.detach(),
                                                   alpha, beta, mask, state, 1e-8, []))  # fmt: skip


def test_the_registered_ops_equal_the_eager_path_bitwise(triton_lln) -> None:
    """Eager calls skip the op dispatcher (``_EagerForward``); the ops run the same code."""
    q, k, v, alpha, beta, mask = op_args()
    clones = [t.detach().clone().requires_grad_() for t in (q, k, v)]
    eager = lln_ops.lln_forward(q, k, v, alpha, beta, mask, 1e-8, [])
    op, _ = lln_ops.bidir_forward(*clones, alpha, beta, mask, 1e-8, [])
    assert torch.equal(eager, op)
    grad = torch.randn_like(eager)
    eager.backward(grad)
    op.backward(grad)
    for a, b in zip((q, k, v), clones):
        assert torch.equal(a.grad, b.grad)
    stats = lln_ops.moments(q.detach(), k.detach(), mask, "batch", PAPER_A, PAPER_B, 1e-6, [])
    assert torch.equal(stats, lln_ops.lln_moments(q, k, mask, "batch", PAPER_A, PAPER_B, 1e-6, []))


def test_compiled_module_has_no_graph_break_and_matches_eager(triton_lln) -> None:
    """torch.compile(fullgraph=True) of an LLN layer on the Triton ops, forward and backward."""
    from torch._dynamo.utils import counters

    attn = build_attention("lln", num_heads=3, head_dim=16, backend="triton").train()
    inputs = masked_inputs(20, 16)
    clones = [t.detach().clone().requires_grad_() for t in inputs[:3]]
    graphs = []

    def aot_eager_keeping_the_graph(gm, example_inputs):
        graphs.append(gm)
        return torch._dynamo.lookup_backend("aot_eager")(gm, example_inputs)

    counters.clear()
    torch._dynamo.reset()
    compiled = torch.compile(attn, backend=aot_eager_keeping_the_graph, fullgraph=True)
    with triton_lln.record_launches() as launches:
        out = compiled(*inputs)
    assert not counters["graph_break"], dict(counters["graph_break"])
    (graph,) = graphs
    ops = [n.target for n in graph.graph.nodes if n.op == "call_function"]
    assert torch.ops.llnbench.lln_moments.default in ops
    assert torch.ops.llnbench.lln_bidir_fwd.default in ops
    assert [*triton_lln.launch_plan()["forward"]] == launches[-3:]
    eager = attn(*clones, inputs[3])
    torch.testing.assert_close(out, eager, atol=0, rtol=0)
    out.square().sum().backward()
    eager.square().sum().backward()
    for a, b in zip(inputs[:3], clones):
        torch.testing.assert_close(a.grad, b.grad, atol=0, rtol=0)
    assert attn.last_backend == "triton" and "alpha" in attn.last_stats


def test_autotune_picks_a_candidate_once_and_keeps_results(triton_lln) -> None:
    q, k, v, mask = masked_inputs(40, 16)
    table = moment_matched_layer(triton_lln, q, k, v, mask)
    triton_lln.set_autotune(True)
    try:
        triton_lln.forget_tuned()
        tuned = moment_matched_layer(triton_lln, q, k, v, mask)
        chosen = triton_lln.tuned_tilings()
        assert list(chosen) == [(q.device, q.dtype, 16, tiles.n_bucket(40))]
        assert next(iter(chosen.values())) in tiles.CPU_CANDIDATES
        with triton_lln.record_launches() as launches:
            moment_matched_layer(triton_lln, q, k, v, mask)
        assert len(launches) == 3  # tuned once, then looked up
    finally:
        triton_lln.set_autotune(None)
        triton_lln.forget_tuned()
    torch.testing.assert_close(tuned, table, atol=1e-6, rtol=1e-5)


# -- the module on the Triton backend ----------------------------------------------------------


def lln_pair(**options):
    """The same LLN module on the torch and the Triton backends."""
    return [build_attention("lln", num_heads=3, head_dim=16, backend=b, **options).train()
            for b in ("torch", "triton")]  # fmt: skip


@pytest.mark.parametrize(
    "options",
    [{}, {"stats_scope": "head"}, {"fixed_alpha_beta": (0.9, 1.2)}, {"moment_matching": False}],
    ids=["batch", "head", "fixed", "no-mm"],
)
def test_module_backend_triton_equals_torch_backend(triton_lln, options) -> None:
    torch_attn, triton_attn = lln_pair(**options)
    mask = right_padding_mask([33, 21], 33)
    inputs = [t.float().requires_grad_() for t in qkv(2, 3, 33, 16, scale=1.5)]
    clones = [t.detach().clone().requires_grad_() for t in inputs]
    outs = [attn(*x, mask) for attn, x in ((torch_attn, inputs), (triton_attn, clones))]
    assert triton_attn.last_backend == "triton" and torch_attn.last_backend == "torch"
    real = mask[:, None, :, None]
    torch.testing.assert_close(outs[1][real.expand_as(outs[1])],
                               outs[0][real.expand_as(outs[0])], atol=1e-5, rtol=1e-5)  # fmt: skip
    for out in outs:
        (out * real).square().sum().backward()
    for a, b in zip(inputs, clones):
        torch.testing.assert_close(b.grad, a.grad, atol=1e-5, rtol=1e-4)
    assert triton_attn.last_stats.keys() == torch_attn.last_stats.keys()


def test_junk_padding_is_ignored_and_gets_zero_gradient(triton_lln) -> None:
    _, attn = lln_pair(stats_scope="sequence")
    q, k, v = (t.float().requires_grad_() for t in qkv(2, 3, 24, 16))
    mask = right_padding_mask([24, 15], 24)
    pad = ~mask[:, None, :, None]
    junk = [t.masked_fill(pad, float("nan")) for t in (q, k, v)]
    out = attn(*junk, mask)
    assert torch.isfinite(out).all()
    clean = attn(q[1:, :, :15], k[1:, :, :15], v[1:, :, :15])
    torch.testing.assert_close(out[1:, :, :15], clean, atol=1e-6, rtol=1e-5)
    out[mask[:, None, :, None].expand_as(out)].sum().backward()
    for t in (q, k, v):
        assert torch.isfinite(t.grad).all()
        assert torch.all(t.grad.masked_select(pad.expand_as(t.grad)) == 0)


def test_lln_diag_runs_its_lln_branch_on_triton(triton_lln) -> None:
    kwargs = {"num_heads": 2, "head_dim": 16}
    fused = build_attention("lln_diag", backend="triton", **kwargs)
    plain = build_attention("lln_diag", backend="torch", **kwargs)
    q, k, v = (t.float() for t in qkv(1, 2, 40, 16))
    torch.testing.assert_close(fused(q, k, v), plain(q, k, v), atol=1e-5, rtol=1e-5)
    assert fused.last_backend == "triton" and fused.options()["backend"] == "triton"
