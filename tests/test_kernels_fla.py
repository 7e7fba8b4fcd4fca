"""The causal LLN -> fla Simple-GLA mapping (g_t = m_{t-1} - m_t), checked on CPU through fla's own
pure-torch references (fla-core's Triton kernels do not run under the interpreter; see
fla_causal's docstring), forward and backward, with padding and adversarial future keys.
Tolerance: fla's references compute in fp32, so 1e-5 relative against the float64 torch core.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
from helpers import qkv, right_padding_mask

from llnbench.attention import build_attention
from llnbench.attention.kernels import dispatch, fla_causal
from llnbench.attention.linear_core import exp_features, linear_attention


def _fla_naive():
    """fla.ops.simple_gla.naive, loaded by path: importing the fla package builds every kernel."""
    spec = importlib.util.find_spec("fla")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("fla-core is part of the dev extra")
    path = Path(next(iter(spec.submodule_search_locations))) / "ops" / "simple_gla" / "naive.py"
    module_spec = importlib.util.spec_from_file_location("_fla_simple_gla_naive", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module", params=["naive_recurrent_simple_gla", "naive_chunk_simple_gla"])
def fla_kernel(request):
    return getattr(_fla_naive(), request.param)


def causal_inputs(n: int = 70, scale: float = 2.0, mask=None):
    q, k, v = (t.requires_grad_() for t in qkv(2, 2, n, 8, scale=scale))
    phi_q, phi_k, shift = exp_features(1.3 * q, 1.1 * k, mask, causal=True)
    return (q, k, v), (phi_q, phi_k, v, mask, shift)


def both_cores(fla_kernel, features, eps=1e-8):
    phi_q, phi_k, v, mask, shift = features
    ref = linear_attention(phi_q, phi_k, v, mask, causal=True, eps=eps, chunk=16, key_shift=shift)
    out = fla_causal.linear_attention(
        phi_q, phi_k, v, mask, causal=True, eps=eps, key_shift=shift, kernel=fla_kernel
    )
    return out, ref


def test_log_decay_telescopes_to_the_prefix_shift() -> None:
    shift = torch.cummax(torch.randn(2, 3, 40, dtype=torch.float64) * 5, dim=-1).values
    g = fla_causal.log_decay(shift)
    assert torch.all(g <= 0) and torch.all(g[..., 0] == 0)
    cum = g.cumsum(-1)  # G_i - G_j = m_j - m_i
    torch.testing.assert_close(cum[..., :, None] - cum[..., None, :],
                               shift[..., None, :] - shift[..., :, None])  # fmt: skip


@pytest.mark.parametrize("padding", ["none", "right", "left"])
def test_mapping_equals_the_torch_core_forward_and_backward(fla_kernel, padding: str) -> None:
    mask = None
    if padding != "none":
        mask = right_padding_mask([70, 45], 70)
        if padding == "left":
            mask = mask.flip(-1)
    inputs, features = causal_inputs(mask=mask)
    out, ref = both_cores(fla_kernel, features)
    assert out.dtype == torch.float64 and torch.isfinite(out).all()
    real = torch.ones(2, 1, 70, 1) if mask is None else mask[:, None, :, None].double()
    scale = ref.abs().max()
    assert ((out - ref) * real).abs().max() <= 1e-5 * scale
    grad = torch.randn_like(ref) * real
    grads = torch.autograd.grad((out * grad).sum(), inputs, retain_graph=True)
    ref_grads = torch.autograd.grad((ref * grad).sum(), inputs)
    for a, b in zip(grads, ref_grads):
        assert (a - b).abs().max() <= 1e-5 * b.abs().max()


def test_mapping_keeps_strict_causality(fla_kernel) -> None:
    """A huge future key leaves earlier outputs alone: the decay only ever shrinks old keys."""
    (q, k, v), _ = causal_inputs(scale=1.0)
    q, k, v = q.detach(), k.detach(), v.detach()
    evil_k = k.clone()
    evil_k[:, :, 30:] = 500.0
    outs = []
    for keys in (k, evil_k):
        phi_q, phi_k, shift = exp_features(1.3 * q, 1.1 * keys, None, causal=True)
        outs.append(both_cores(fla_kernel, (phi_q, phi_k, v, None, shift))[0])
    torch.testing.assert_close(outs[1][:, :, :30], outs[0][:, :, :30], atol=1e-6, rtol=0)
    assert torch.isfinite(outs[1]).all()


def test_module_through_the_fla_path_equals_torch_backend(fla_kernel, monkeypatch) -> None:
    """The whole causal LLN module on the fla code path (dispatch forced, fla's kernel swapped for
    its reference) equals backend=torch, outputs and gradients."""
    monkeypatch.setattr(fla_causal, "_chunk_simple_gla", lambda: fla_kernel)
    attn = build_attention("lln", num_heads=2, head_dim=8, causal=True, backend="torch").train()
    mask = right_padding_mask([50, 31], 50)
    inputs = [t.float().requires_grad_() for t in qkv(2, 2, 50, 8)]
    ref = attn(*inputs, mask)
    monkeypatch.setattr(dispatch, "select", lambda *a, **k: ("fla", None))
    clones = [t.detach().clone().requires_grad_() for t in inputs]
    out = attn(*clones, mask)
    assert attn.last_backend == "fla"
    real = mask[:, None, :, None]
    torch.testing.assert_close(out * real, ref * real, atol=1e-5, rtol=1e-5)
    (out * real).sum().backward()
    (ref * real).sum().backward()
    for a, b in zip(clones, inputs):
        torch.testing.assert_close(a.grad, b.grad, atol=1e-5, rtol=1e-4)


def test_short_autotune_keeps_four_configs_per_kernel() -> None:
    """LLNBENCH_FLA_AUTOTUNE=short (make gpu-check): at most 4 configs, num_warps=4/stages=2 first."""
    triton = pytest.importorskip("triton")
    import types

    configs = [triton.Config({"B": b}, num_warps=w, num_stages=s)
               for b in (16, 32) for w in (1, 2, 4, 8) for s in (2, 3, 4)]  # fmt: skip
    tuner = triton.runtime.autotuner.Autotuner(_dummy_kernel, ["x"], configs, [], None, None)
    wrapped = types.SimpleNamespace(fn=tuner)  # as triton.heuristics wraps an autotuner
    module = types.ModuleType("fake_fla_ops")
    module.kernel, module.other = wrapped, 3
    assert fla_causal.shorten_autotune([module]) == 1
    assert [(c.kwargs["B"], c.num_warps, c.num_stages) for c in tuner.configs] == [
        (16, 4, 2), (32, 4, 2), (16, 1, 2), (16, 1, 3)]  # fmt: skip


def _dummy_kernel(x):  # stands for a jit function: the autotuner only stores it here
    return x
