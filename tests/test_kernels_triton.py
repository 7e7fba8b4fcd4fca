"""The fused Triton LLN: ``interp_triton_lln.py`` (the kernels against float64, forward and
backward; launches, workspaces, the ops under opcheck and torch.compile) runs in a child process
under TRITON_INTERPRET=1, so the interpreter never leaks into the rest of the suite: the variable
must be set before ``import triton``, which this process may already have done.

In this process the kernels are the compiled (CUDA) build, registered as ``triton_op``s: traced
with fake tensors, without a GPU, they show what torch.compile sees on one."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from helpers import run_under_triton_interpreter

pytest.importorskip("triton", reason="triton is part of the dev extra")
CHECKS = Path(__file__).with_name("interp_triton_lln.py")


def test_triton_kernels_match_float64_under_the_interpreter() -> None:
    run_under_triton_interpreter(CHECKS)


class _TargetOnly:
    """A Triton driver that only names a target: enough to lower kernels to TTIR (which the
    mutation analysis of ``wrap_triton`` reads), not to run them."""

    def get_current_target(self):
        from triton.backends.compiler import GPUTarget

        return GPUTarget("cuda", 90, 32)


@pytest.fixture
def traceable_ops(monkeypatch):
    from llnbench.attention.kernels import lln_ops

    if lln_ops.REGISTRATION != "triton_op":
        pytest.skip(f"ops registered as {lln_ops.REGISTRATION} in this process")
    import triton

    try:
        triton.runtime.driver.active  # noqa: B018 (a real GPU: use it)
    except RuntimeError:
        monkeypatch.setattr(triton.runtime.driver, "_active", _TargetOnly())
    return lln_ops


def _calls(gm: torch.fx.GraphModule) -> list:
    return [node.target for node in gm.graph.nodes if node.op == "call_function"]


@pytest.mark.filterwarnings("ignore:TRITON_DEFAULT_FP_FUSION")
def test_compiled_layer_traces_to_three_kernels_forward_and_two_backward(
    traceable_ops, caplog
) -> None:
    """torch.compile's view of one moment-matched layer (AOT forward and backward graphs):
    the kernels themselves, and between them only allocations, views and the counters' zeros.
    Each kernel lowers to TTIR for sm90 at head_dim 128 on the way (the mutation analysis)."""
    from functorch.compile import aot_function, make_boxed_func
    from torch._higher_order_ops.triton_kernel_wrap import kernel_side_table
    from torch._subclasses.fake_tensor import FakeTensorMode

    from llnbench.attention.kernels import triton_lln

    graphs = {}

    def keep(name):
        def compiler(gm, _inputs):
            graphs[name] = gm
            return make_boxed_func(gm)

        return compiler

    def layer(q, k, v, mask):
        stats = triton_lln.moment_temperatures(q, k, mask, "batch", 0.15, -0.35)
        return triton_lln.lln_attention(q, k, v, stats["alpha"], stats["beta"], mask)

    with FakeTensorMode(), caplog.at_level(logging.WARNING, "torch._higher_order_ops"):
        q, k, v = (torch.randn(2, 3, 40, 128, requires_grad=True) for _ in range(3))
        mask = torch.ones(2, 40, dtype=torch.bool)
        out = aot_function(layer, fw_compiler=keep("forward"), bw_compiler=keep("backward"))(
            q, k, v, mask
        )
        out.sum().backward()
        assert out.shape == q.shape and q.grad.shape == q.shape
    assert not [r.getMessage() for r in caplog.records if "exception" in r.getMessage()]
    plan = triton_lln.launch_plan()
    assert set(graphs) == {"forward", "backward"}
    for name, gm in graphs.items():
        launched = [node.kwargs["kernel_idx"] for node in gm.graph.nodes
                    if node.target is torch.ops.higher_order.triton_kernel_wrapper_functional]  # fmt: skip
        assert len(launched) == len(plan[name]), gm.code
        names = [kernel_side_table.get_kernel(i).fn.__name__ for i in launched]
        assert names == list(plan[name])
        for target in _calls(gm):
            allowed = (
                target is torch.ops.higher_order.triton_kernel_wrapper_functional
                or getattr(target, "__name__", "") == "getitem"
                or getattr(target, "is_view", False)
                or target in (torch.ops.aten.empty.memory_format, torch.ops.aten.zeros.default)
            )
            assert allowed, f"{name}: {target} between the launches"


def test_fake_functions_agree_with_the_traced_ops(traceable_ops) -> None:
    """The interpreter build registers explicit fakes; they must match what the compiled build's
    implementations produce under fake tensors (shape, dtype, strides)."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    ops = traceable_ops
    with FakeTensorMode():
        q, k = torch.randn(2, 3, 17, 48), torch.randn(2, 3, 17, 48)
        v = torch.randn(2, 3, 17, 48, dtype=torch.bfloat16)
        mask = torch.ones(2, 17, dtype=torch.bool)
        alpha = beta = torch.ones(2)
        calls = [
            (ops.moments, ops.moments_fake, (q, k, mask, "sequence", 0.15, -0.35, 1e-6, [])),
            (ops.bidir_forward, ops.forward_fake, (q, k, v, alpha, beta, mask, 1e-8, [])),
            (ops.bidir_backward, ops.backward_fake,
             (torch.randn_like(v), q, k, v, alpha, beta, mask, torch.empty(6, 32 * 32 + 64), 1e-8,
              [])),
        ]  # fmt: skip
        for op, fake, args in calls:
            real, meta = op(*args), fake(*args)
            real, meta = (x if isinstance(x, tuple) else (x,) for x in (real, meta))
            for a, b in zip(real, meta, strict=True):
                assert (a.shape, a.dtype, a.stride()) == (b.shape, b.dtype, b.stride()), op


# -- on a GPU (skipped without CUDA): what the interpreter cannot show -------------------------

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
GPU_CASES = [(64, torch.bfloat16, 1e-2), (128, torch.bfloat16, 1e-2), (64, torch.float32, 1e-5)]


@pytest.mark.gpu
@cuda
@pytest.mark.parametrize(("head_dim", "dtype", "tolerance"), GPU_CASES,
                         ids=["d64-bf16", "d128-bf16", "d64-fp32"])  # fmt: skip
def test_cuda_kernels_match_float64_across_many_programs(head_dim, dtype, tolerance) -> None:
    """Hundreds of programs per call, running at once: the last-program merges (atomics,
    barriers, memory order) against float64, and bitwise repeatable."""
    from helpers import right_padding_mask
    from interp_triton_lln import parity

    from llnbench.attention.kernels import triton_lln

    mask = right_padding_mask([1500, 700], 1500)
    runs = []
    for _ in range(2):
        torch.manual_seed(0)  # the same output gradient both times
        runs.append(parity(triton_lln, 1500, head_dim, mask=mask, scale=2.0, dtype=dtype,
                           moment_matched=True, device="cuda"))  # fmt: skip
    assert max(runs[0]) < tolerance, runs[0]
    assert runs[0] == runs[1]  # the merges sum in a fixed order


def _lln_step(attn, q, k, v, mask, grad):
    out = attn(q, k, v, mask)
    return (out, *torch.autograd.grad(out, (q, k, v), grad))


@pytest.mark.gpu
@cuda
def test_cuda_graph_replays_a_layer_forward_and_backward() -> None:
    from helpers import qkv, right_padding_mask

    from llnbench.attention import build_attention

    attn = build_attention("lln", num_heads=4, head_dim=64, backend="triton").cuda()
    q, k, v = (t.cuda().to(torch.bfloat16).requires_grad_() for t in qkv(2, 4, 1024, 64))
    mask = right_padding_mask([1024, 600], 1024).cuda()
    grad = torch.randn_like(q)
    eager = _lln_step(attn, q, k, v, mask, grad)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(2):
            _lln_step(attn, q, k, v, mask, grad)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured = _lln_step(attn, q, k, v, mask, grad)
    graph.replay()
    torch.cuda.synchronize()
    for a, b in zip(captured, eager):
        assert torch.equal(a, b)


@pytest.mark.gpu
@cuda
@pytest.mark.parametrize("mode", [None, "reduce-overhead"], ids=["inductor", "cudagraphs"])
def test_cuda_inductor_compiles_the_layer_without_graph_breaks(mode) -> None:
    from helpers import qkv, right_padding_mask
    from torch._dynamo.utils import counters

    from llnbench.attention import build_attention

    attn = build_attention("lln", num_heads=4, head_dim=64, backend="triton").cuda()
    q, k, v = (t.cuda().float().requires_grad_() for t in qkv(2, 4, 512, 64))
    mask = right_padding_mask([512, 300], 512).cuda()
    grad = torch.randn_like(q)
    eager = _lln_step(attn, q, k, v, mask, grad)
    counters.clear()
    torch._dynamo.reset()
    compiled = torch.compile(attn, fullgraph=True, mode=mode)
    for _ in range(3):  # cudagraphs: warm-up, record, replay
        got = _lln_step(compiled, q, k, v, mask, grad)
    assert not counters["graph_break"], dict(counters["graph_break"])
    for a, b in zip(got, eager):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
