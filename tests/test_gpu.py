"""CUDA paths (skipped cleanly without a GPU): bf16 cores against float64, SDPA backends, memory."""

from __future__ import annotations

import pytest
import torch
from helpers import qkv, right_padding_mask
from typer.testing import CliRunner

from llnbench.attention import ATTENTIONS, build_attention
from llnbench.attention.reference import lln_matrix, lln_temperatures
from llnbench.cli import app

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
]


@pytest.mark.parametrize("name", list(ATTENTIONS))
def test_every_mechanism_runs_in_bf16_autocast_on_cuda(name: str) -> None:
    attn = build_attention(name, num_heads=4, head_dim=64).cuda()
    q, k, v = (t.cuda().requires_grad_() for t in qkv(2, 4, 512, 64, dtype=torch.float32))
    mask = right_padding_mask([512, 300], 512).cuda()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out = attn(q.bfloat16(), k.bfloat16(), v.bfloat16(), mask)
    assert out.dtype == torch.bfloat16 and torch.isfinite(out.float()).all()
    out.float().sum().backward()
    assert all(torch.isfinite(t.grad).all() for t in (q, k, v))


@pytest.mark.parametrize("causal", [False, True], ids=["bidir", "causal"])
def test_lln_bf16_long_sequence_on_cuda(causal: bool) -> None:
    """Spec §3.3 bf16 acceptance at 64k tokens on the GPU (bidirectional) / 8k (causal, dense ref)."""
    n = 8192 if causal else 65536
    q, k, v = (t.cuda().bfloat16() for t in qkv(1, 2, n, 64, dtype=torch.float32, scale=3.0))
    attn = build_attention("lln", num_heads=2, head_dim=64, causal=causal, eps=0.0).cuda().train()
    out = attn(q, k, v)
    assert torch.isfinite(out.float()).all()
    alpha, beta = lln_temperatures(q.cpu(), k.cpu(), None, "batch", attn.a, attn.b)
    qd, kd, vd = (t.double().cpu() for t in (q, k, v))
    if causal:
        ref = lln_matrix(qd, kd, alpha, beta, causal=True) @ vd
    else:
        fq, fk = torch.exp(alpha * qd), torch.exp(beta * kd)
        ref = (fq @ (fk.transpose(-1, -2) @ vd)) / (fq @ fk.sum(-2, keepdim=True).transpose(-1, -2))
    assert (out.double().cpu() - ref).abs().max() <= 1e-2 * ref.abs().max()


def test_scale_on_cuda_times_every_sdpa_backend_and_measures_memory(tmp_path) -> None:
    result = CliRunner().invoke(app, [
        "scale", "--attention", "softmax,lln", "--min-len", "1024", "--max-len", "2048",
        "--device", "cuda", "--dtype", "bf16", "--out", str(tmp_path), "wandb.mode=disabled",
        "min_time_s=0.1",
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    import json

    data = json.loads((tmp_path / "scale.json").read_text())
    assert data["machine"]["sdpa_backend"] == "cudnn,flash,efficient (fastest per cell)"
    assert data["machine"]["gpu"]
    series = {r["series"] for r in data["rows"]}
    assert {"softmax", "softmax[cudnn]", "softmax[flash]", "softmax[efficient]", "lln"} == series
    main = [r for r in data["rows"] if r["series"] in ("softmax", "lln")]
    assert all(r["status"] == "ok" and r["peak_mib"] > 0 for r in main)
    flash = [r for r in data["rows"] if r["series"] == "softmax[flash]"]
    assert all(r["status"] == "ok" for r in flash)  # every CUDA GPU since Ampere has it


# -- the GPU fast paths (attention.backend=triton | fla) against float64 ------------------------
# Tolerances: fp32 inputs on the Triton kernels use IEEE dots: <= 1e-5 * max|ref|. bf16 inputs
# (TF32 dots) and every fla case (fla runs fp32 dots as TF32): <= 1e-2 * max|ref| for outputs
# (spec §3.3) and 2e-2 for gradients, against float64 on the same rounded inputs.


def _errors(out, ref, grads, ref_grads, real):
    pairs = [(out.float() * real, ref * real), *zip(grads, ref_grads)]
    return [((a.double().cpu() - b).abs().max() / b.abs().max()).item() for a, b in pairs]


@pytest.mark.parametrize(
    ("backend", "causal", "dtype", "tol"),
    [("triton", False, torch.float32, (1e-5, 1e-5)), ("triton", False, torch.bfloat16, (1e-2, 2e-2)),
     ("triton", True, torch.float32, (1e-4, 1e-4)), ("triton", True, torch.bfloat16, (1e-2, 2e-2)),
     ("fla", True, torch.float32, (1e-2, 2e-2)), ("fla", True, torch.bfloat16, (1e-2, 2e-2))],
    ids=["triton-fp32", "triton-bf16", "triton-causal-fp32", "triton-causal-bf16", "fla-fp32",
         "fla-bf16"],
)  # fmt: skip
def test_fast_backends_match_float64_forward_and_backward(backend, causal, dtype, tol) -> None:
    skip_where_fla_refuses(backend)
    n = 1000  # not a multiple of the 64-row tiles
    attn = build_attention("lln", num_heads=2, head_dim=64, causal=causal, backend=backend,
                           eps=0.0).cuda().train()  # fmt: skip
    q64, k64, v64 = qkv(2, 2, n, 64, scale=2.0)
    mask = right_padding_mask([n, 700], n)
    q, k, v = (t.to(dtype).cuda().requires_grad_() for t in (q64, k64, v64))
    out = attn(q, k, v, mask.cuda())
    assert attn.last_backend == backend and out.dtype == dtype
    qd, kd, vd = (t.detach().double().cpu().requires_grad_() for t in (q, k, v))
    alpha, beta = lln_temperatures(qd, kd, mask, "batch", attn.a, attn.b)
    ref = lln_matrix(qd, kd, alpha, beta, mask, causal) @ vd
    real = mask[:, None, :, None].double()
    grad = torch.randn_like(ref) * real
    (out.float() * grad.float().cuda()).sum().backward()
    (ref * grad).sum().backward()
    errors = _errors(out.detach().cpu(), ref.detach(), [t.grad for t in (q, k, v)],
                     [qd.grad, kd.grad, vd.grad], real)  # fmt: skip
    assert errors[0] <= tol[0] and max(errors[1:]) <= tol[1], errors


def skip_where_fla_refuses(backend: str) -> None:
    """fla-core refuses its gated backward on Hopper with Triton 3.4-3.7.0 (so does backend=fla)."""
    from llnbench.attention.kernels.fla_causal import backward_refusal

    reason = backward_refusal(torch.cuda.current_device()) if backend == "fla" else None
    if reason:
        pytest.skip(reason)


def test_fla_path_is_strictly_causal_in_eval() -> None:
    skip_where_fla_refuses("fla")
    attn = build_attention("lln", num_heads=2, head_dim=64, causal=True, backend="fla").cuda()
    attn.eval()  # running statistics: nothing after position i reaches output i
    q, k, v = (t.float().cuda() for t in qkv(1, 2, 300, 64))
    evil_q, evil_k = q.clone(), k.clone()
    evil_k[:, :, 30:] = 500.0
    evil_q[:, :, 30:] = -500.0
    clean, evil = attn(q, k, v), attn(evil_q, evil_k, v)
    assert attn.last_backend == "fla" and torch.isfinite(evil).all()
    torch.testing.assert_close(evil[:, :, :30], clean[:, :, :30], atol=1e-5, rtol=1e-4)


def test_auto_runs_the_kernels_on_cuda_and_compiles_around_them() -> None:
    q, k, v = (t.cuda().bfloat16() for t in qkv(1, 2, 256, 64, dtype=torch.float32))
    for name, causal, expected in (("lln", False, "triton"), ("lln", True, "triton"),
                                   ("lln_diag", False, "triton"), ("lln_diag", True, "triton")):  # fmt: skip
        attn = build_attention(name, num_heads=2, head_dim=64, causal=causal).cuda()
        ref = attn(q, k, v)
        assert attn.last_backend == expected, (name, causal)
        compiled = torch.compile(attn, backend="aot_eager")
        torch.testing.assert_close(compiled(q, k, v), ref, atol=2e-2, rtol=2e-2)


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_bidirectional_bf16_64k_every_backend_is_finite(backend: str) -> None:
    attn = build_attention("lln", num_heads=2, head_dim=64, backend=backend).cuda().train()
    q, k, v = (t.cuda().bfloat16().requires_grad_()
               for t in qkv(1, 2, 65536, 64, dtype=torch.float32, scale=3.0))  # fmt: skip
    out = attn(q, k, v)
    out.float().square().mean().backward()
    assert torch.isfinite(out.float()).all()
    assert all(torch.isfinite(t.grad.float()).all() for t in (q, k, v))


# -- compiled: the LLN kernels inside the graph, CUDA graphs -----------------------------------


@pytest.mark.parametrize("causal", [False, True], ids=["bidir", "causal"])
def test_triton_kernels_sit_inside_the_compiled_graph(causal: bool) -> None:
    """The kernels are registered ops: dynamo traces through them with no graph break."""
    from llnbench.compiling import configure

    configure("eager")
    attn = build_attention("lln", num_heads=2, head_dim=64, causal=causal, backend="triton")
    attn = attn.cuda().train()
    q, k, v = (
        t.cuda().bfloat16().requires_grad_() for t in qkv(1, 2, 256, 64, dtype=torch.float32)
    )
    torch._dynamo.reset()
    explained = torch._dynamo.explain(attn)(q, k, v)
    torch._dynamo.reset()
    assert explained.graph_break_count == 0, [str(b.reason)[:200] for b in explained.break_reasons]


def test_reduce_overhead_trains_a_model_like_eager() -> None:
    """trainer.compile=reduce-overhead: CUDA graphs of the static encoder; the same losses."""
    from llnbench.compiling import maybe_compile, step_begin
    from llnbench.model.roberta import IGNORE_INDEX, ModelConfig, RobertaForMaskedLM
    from llnbench.schema import AttentionConfig

    cfg = ModelConfig(layers=1, hidden=64, heads=1, ffn=128, max_len=256, vocab_size=128,
                      dropout=0.0, attention_dropout=0.0)  # fmt: skip
    losses = {}
    for setting in (False, "reduce-overhead"):
        torch.manual_seed(0)
        model = RobertaForMaskedLM(cfg, AttentionConfig("lln", {}), 1).cuda().train()
        run = maybe_compile(model, setting)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        gen = torch.Generator().manual_seed(1)
        losses[setting] = []
        for _ in range(4):
            ids = torch.randint(5, 128, (2, 256), generator=gen).cuda()
            labels = torch.where(torch.rand(2, 256, generator=gen).cuda() < 0.15, ids, IGNORE_INDEX)
            step_begin(setting)
            loss = run(ids, labels)[0]
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            losses[setting].append(float(loss.detach()))
    torch._dynamo.reset()
    assert losses["reduce-overhead"] == pytest.approx(losses[False], rel=1e-3)
