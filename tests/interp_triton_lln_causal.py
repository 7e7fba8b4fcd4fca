"""The chunked causal Triton LLN against float64, forward and backward, on CPU tensors under the
Triton interpreter, at tiny sizes. Not collected by the suite itself (no ``test_`` prefix):
``test_kernels_triton_causal.py`` runs this file in a child process with TRITON_INTERPRET=1, which
must be set before ``import triton``.

References (float64, on the same rounded inputs):
- the dense formula ``reference.lln_matrix(causal=True)`` (unshifted; its eps is relative to each
  row's largest term, which is the module's eps in the shifted units), on real query rows;
- the torch path in float64 (``exp_features`` + ``linear_core.linear_attention``), on every row,
  padded query rows included: they behave as on the torch path (left padding before any real key
  gives 0, right padding reads the real keys with uniform query features).
Tolerances, outputs and q, k, v gradients alike: fp32 inputs max |error| <= 1e-5 * max(max |ref|,
1) (measured <= 1e-6); bf16 and fp16 inputs <= 1e-2 * max(max |ref|, 1) (spec §3.3).
"""

from __future__ import annotations

import importlib

import pytest
import torch
from helpers import qkv, right_padding_mask

from llnbench.attention import build_attention
from llnbench.attention.base import upcast_and_zero_padding
from llnbench.attention.linear_core import exp_features, linear_attention
from llnbench.attention.reference import lln_matrix, lln_temperatures

FP32_TOL, HALF_TOL = 1e-5, 1e-2


@pytest.fixture(scope="module")
def causal():
    """The launcher, its kernels built for the interpreter (this process has TRITON_INTERPRET=1)."""
    launcher = importlib.import_module("llnbench.attention.kernels.triton_lln_causal")
    if not launcher.kernels().INTERPRETED:
        pytest.fail("run these checks through tests/test_kernels_triton_causal.py")
    return launcher


def masks(kind: str, n: int) -> torch.Tensor | None:
    """None, or (2, n): batch 0 left-padded by 5, batch 1 right-padded to n // 2 (``both``)."""
    if kind == "none":
        return None
    mask = right_padding_mask([n, n // 2], n)
    mask[0, :5] = False
    return mask


def torch_path(q, k, v, alpha, beta, mask, eps, chunk=64):
    """The module's causal torch path, run in float64."""
    q, k, v = upcast_and_zero_padding(mask, q, k, v)
    phi_q, phi_k, shift = exp_features(alpha * q, beta * k, mask, True)
    return linear_attention(phi_q, phi_k, v, mask, causal=True, eps=eps, chunk=chunk,
                            key_shift=shift)  # fmt: skip


def relative(a, b) -> float:
    return ((a.double() - b).abs().max() / b.abs().max().clamp_min(1.0)).item()


def errors(causal, n, d, *, mask_kind="none", dtype=torch.float32, chunk=16, eps=1e-6,
           scale=1.0, scope="batch"):  # fmt: skip
    """max relative errors of (out, dq, dk, dv) against the dense formula (real rows) and against
    the float64 torch path (every row)."""
    mask = masks(mask_kind, n)
    q64, k64, v64 = qkv(2, 2, n, d, scale=scale, seed=n + d)
    q, k, v = (t.to(dtype) for t in (q64, k64, v64))
    alpha, beta = lln_temperatures(q.double(), k.double(), mask, scope)
    inputs = [t.clone().requires_grad_() for t in (q, k, v)]
    out = causal.lln_causal_attention(*inputs, alpha.float(), beta.float(), mask, eps=eps,
                                      chunk=chunk)  # fmt: skip
    assert out.dtype == dtype and out.shape == q.shape and torch.isfinite(out).all()
    grad = torch.randn(out.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    real = torch.ones(2, 1, n, 1) if mask is None else mask[:, None, :, None].double()
    found = []
    for kind in ("dense", "torch"):
        refs = [t.double().requires_grad_() for t in (q, k, v)]
        if kind == "dense":
            ref, g = (
                lln_matrix(*refs[:2], alpha, beta, mask, causal=True, eps=eps) @ refs[2],
                grad * real,
            )
        else:
            ref, g = torch_path(*refs, alpha, beta, mask, eps), grad
        for t in inputs:
            t.grad = None
        (out * g.to(dtype)).sum().backward(retain_graph=True)
        (ref * g).sum().backward()
        pairs = [(out.detach() * real, ref.detach() * real) if kind == "dense" else (out, ref)]
        pairs += [(t.grad, r.grad) for t, r in zip(inputs, refs)]
        found.append([relative(a.detach(), b.detach()) for a, b in pairs])
    return found


CASES = [  # (n, d, mask, dtype, chunk): every n is not a multiple of the chunk
    (37, 16, "both", torch.float32, 16),
    (20, 32, "none", torch.float32, 16),
    (40, 64, "both", torch.float32, 32),
    (18, 128, "both", torch.float32, 16),
    (1, 16, "none", torch.float32, 16),
    (33, 32, "both", torch.bfloat16, 16),
    (23, 32, "both", torch.float16, 16),
]


@pytest.mark.parametrize(
    ("n", "d", "mask_kind", "dtype", "chunk"), CASES,
    ids=[f"d{d}-n{n}-{m}mask-{str(t)[6:]}-chunk{c}" for n, d, m, t, c in CASES],
)  # fmt: skip
def test_forward_and_backward_match_float64(causal, n, d, mask_kind, dtype, chunk) -> None:
    tol = FP32_TOL if dtype == torch.float32 else HALF_TOL
    for found in errors(causal, n, d, mask_kind=mask_kind, dtype=dtype, chunk=chunk):
        assert max(found) < tol, found


@pytest.mark.parametrize("scope", ["sequence", "head"])
def test_per_sequence_and_per_head_temperatures(causal, scope: str) -> None:
    for found in errors(causal, 21, 16, mask_kind="both", scope=scope):
        assert max(found) < FP32_TOL, found


def test_spread_logits_and_no_eps(causal) -> None:
    """Inputs of std 3 (key logits tens of nats apart: the running shift grows chunk after
    chunk) and eps = 0 (a row with no real key divides by 1 and gives 0)."""
    dense, path = errors(causal, 40, 16, mask_kind="both", scale=3.0, eps=0.0)
    assert max(dense) < FP32_TOL and max(path) < FP32_TOL, (dense, path)


def test_strictly_causal_under_huge_future_keys(causal) -> None:
    """Outputs and gradients of the first 30 positions do not move, bit for bit, when every later
    key grows by 40 nats (with a global shift they would underflow towards eps)."""
    q, k, v = (t.float() for t in qkv(1, 2, 45, 16, seed=3))
    evil = k.clone()
    evil[:, :, 30:] += 40.0
    alpha, beta = torch.tensor(1.0), torch.tensor(1.0)
    outs, grads = [], []
    for keys in (k, evil):
        inputs = [t.clone().requires_grad_() for t in (q, keys, v)]
        out = causal.lln_causal_attention(*inputs, alpha, beta, eps=1e-6, chunk=16)
        out[:, :, :30].sum().backward()
        outs.append(out[:, :, :30].detach())
        grads.append([t.grad[:, :, :30] for t in inputs])
    assert torch.equal(outs[0], outs[1])
    for a, b in zip(*grads):
        assert torch.equal(a, b)


def test_junk_in_padded_rows_is_never_read(causal) -> None:
    q, k, v = (t.float() for t in qkv(2, 2, 26, 16, seed=5))
    mask = masks("both", 26)
    pad = ~mask[:, None, :, None]
    alpha, beta = torch.tensor(1.1), torch.tensor(0.8)
    clean = causal.lln_causal_attention(q, k, v, alpha, beta, mask, chunk=16)
    junk = [t.masked_fill(pad, float("nan")).requires_grad_() for t in (q, k, v)]
    out = causal.lln_causal_attention(*junk, alpha, beta, mask, chunk=16)
    torch.testing.assert_close(out, clean, atol=0, rtol=0)
    out.sum().backward()
    for t in junk:
        assert torch.isfinite(t.grad).all() and torch.all(
            t.grad.masked_select(pad.expand_as(t.grad)) == 0
        )


@pytest.mark.parametrize(
    "options",
    [{"train": True}, {"train": False}, {"train": True, "stats_scope": "head", "chunk": 32}],
    ids=["train", "eval-running-stats", "head-scope-chunk32"],
)
def test_module_backend_triton_equals_torch_backend(causal, options) -> None:
    train = options.pop("train")
    pair = [build_attention("lln", num_heads=2, head_dim=16, causal=True, backend=b, **options)
            for b in ("torch", "triton")]  # fmt: skip
    for attn in pair:
        attn.running_sigma_q.fill_(1.3)
        attn.train(train)
    mask = masks("both", 40)
    inputs = [t.float().requires_grad_() for t in qkv(2, 2, 40, 16, scale=1.5)]
    clones = [[t.detach().clone().requires_grad_() for t in inputs] for _ in pair]
    outs = [attn(*x, mask) for attn, x in zip(pair, clones)]
    assert [attn.last_backend for attn in pair] == ["torch", "triton"]
    assert relative(outs[1], outs[0]) < FP32_TOL  # two fp32 evaluations of one formula
    for out in outs:
        out.square().sum().backward()
    for a, b in zip(*clones):
        assert relative(b.grad, a.grad) < FP32_TOL
    torch.testing.assert_close(pair[1].running_sigma_k, pair[0].running_sigma_k)


def test_custom_ops_pass_opcheck(causal) -> None:
    """Schema, fake (meta) implementation, autograd registration and AOT dispatch."""
    q, k, v = (t.float().requires_grad_() for t in qkv(1, 2, 20, 16))
    mask = masks("both", 20)[:1].to(torch.uint8)
    args = (q, k, v, torch.tensor([1.2]), torch.tensor([0.9]), mask, 1e-6, 2, 16)
    torch.library.opcheck(causal.lln_causal_forward, args)


def test_compiles_with_no_graph_break(causal) -> None:
    """torch.compile(fullgraph=True) traces through the ops in one frame (a graph break would
    raise), forward and backward, and gives the eager result."""
    from torch._dynamo.testing import CompileCounterWithBackend

    def loss(q, k, v, mask):
        out = causal.lln_causal_attention(q, k, v, torch.tensor(1.2), torch.tensor(0.9), mask,
                                          eps=1e-6, chunk=16)  # fmt: skip
        return (out * out).sum()

    q, k, v = (t.float() for t in qkv(2, 2, 20, 16))
    mask = masks("both", 20)
    counter = CompileCounterWithBackend("aot_eager")
    grads = []
    for fn in (loss, torch.compile(loss, backend=counter, fullgraph=True)):
        inputs = [t.clone().requires_grad_() for t in (q, k, v)]
        fn(*inputs, mask).backward()
        grads.append([t.grad for t in inputs])
    assert counter.frame_count == 1
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, atol=0, rtol=0)


def test_the_causal_module_on_triton_has_no_graph_break(causal) -> None:
    """The whole LLN module (dispatch, temperatures, running statistics, the op) in one graph."""
    import torch._dynamo as dynamo

    attn = build_attention("lln", num_heads=2, head_dim=16, causal=True, backend="triton")
    q, k, v = (t.float() for t in qkv(2, 2, 20, 16))
    explained = dynamo.explain(attn)(q, k, v, masks("both", 20))
    assert explained.graph_break_count == 0, explained.break_reasons
    assert explained.graph_count == 1


def test_causal_lln_diag_runs_its_lln_branch_on_triton(causal) -> None:
    kwargs = {"num_heads": 2, "head_dim": 16, "causal": True}
    fused = build_attention("lln_diag", backend="triton", **kwargs)
    plain = build_attention("lln_diag", backend="torch", **kwargs)
    q, k, v = (t.float() for t in qkv(1, 2, 40, 16))
    assert relative(fused(q, k, v), plain(q, k, v)) < FP32_TOL
    assert fused.last_backend == "triton" and plain.last_backend == "torch"
