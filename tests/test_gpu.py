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


def test_scale_on_cuda_measures_memory_with_flash(tmp_path) -> None:
    result = CliRunner().invoke(app, [
        "scale", "--attention", "softmax,lln", "--min-len", "1024", "--max-len", "2048",
        "--device", "cuda", "--dtype", "bf16", "--out", str(tmp_path), "wandb.mode=disabled",
        "min_time_s=0.1",
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    import json

    data = json.loads((tmp_path / "scale.json").read_text())
    assert data["machine"]["sdpa_backend"] == "flash" and data["machine"]["gpu"]
    assert all(r["status"] == "ok" and r["peak_mib"] > 0 for r in data["rows"])
