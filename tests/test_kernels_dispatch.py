"""Backend selection: auto falls back to torch (and says why), explicit backends fail clearly."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from helpers import qkv

from llnbench.attention import build_attention
from llnbench.attention.kernels import dispatch
from llnbench.errors import ConfigError


def fake_cuda(dtype=torch.bfloat16, head_dim: int = 64):
    """What ``select`` reads of a tensor (dtype, device, shape), as if it lived on a GPU."""
    return SimpleNamespace(dtype=dtype, device=torch.device("cuda"), shape=(1, 2, 8, head_dim))


@pytest.mark.parametrize("causal", [False, True], ids=["bidir", "causal"])
def test_auto_runs_torch_on_cpu_and_records_it(causal: bool) -> None:
    attn = build_attention("lln", num_heads=2, head_dim=8, causal=causal)
    out = attn(*(t.float() for t in qkv(1, 2, 9, 8)))
    assert out.shape == (1, 2, 9, 8)
    assert attn.last_backend == "torch" and attn.options()["backend"] == "auto"
    assert attn.fallback_reason == f"{'fla' if causal else 'triton'} runs on CUDA tensors, got cpu"


def test_auto_picks_the_kernel_on_cuda_and_falls_back_where_it_cannot() -> None:
    assert dispatch.select("auto", causal=False, q=fake_cuda()) == ("triton", None)
    assert dispatch.select("auto", causal=True, q=fake_cuda(torch.float32)) == ("fla", None)
    assert dispatch.select("auto", causal=False, q=fake_cuda(head_dim=128)) == ("triton", None)
    assert dispatch.select("auto", causal=False, q=fake_cuda(head_dim=256)) == (
        "torch", "head_dim 256 > 128")  # fmt: skip
    assert dispatch.select("auto", causal=True, q=fake_cuda(torch.float64)) == (
        "torch", "fla kernels take fp32/bf16/fp16 tensors, got float64")  # fmt: skip
    assert dispatch.select("auto", causal=False, q=fake_cuda(), matmul_dtype="bf16")[0] == "torch"
    assert dispatch.select("torch", causal=False, q=fake_cuda()) == ("torch", None)


def test_auto_without_the_packages_falls_back(monkeypatch) -> None:
    monkeypatch.setattr(dispatch, "package_missing", lambda name: name == "fla")
    attn = build_attention("lln", num_heads=2, head_dim=8, causal=True)
    backend, reason = dispatch.select(
        "auto", causal=True, q=fake_cuda(), missing=attn._missing_package
    )
    assert backend == "torch" and reason == "fla-core is not installed (pip install -e '.[gpu]')"
    monkeypatch.setattr(dispatch, "package_missing", lambda name: True)
    with pytest.raises(ConfigError, match=r"backend=fla: fla-core is not installed \(pip install"):
        build_attention("lln", num_heads=2, head_dim=8, causal=True, backend="fla")
    with pytest.raises(ConfigError, match=r"backend=triton: triton is not installed"):
        build_attention("lln", num_heads=2, head_dim=8, backend="triton")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"backend": "cuda"}, r"unknown LLN backend 'cuda'; allowed: auto, torch, triton, fla"),
        ({"backend": "triton", "causal": True},
         r"backend=triton is the bidirectional LLN kernel; causal LLN: auto, torch, fla"),
        ({"backend": "fla"}, r"backend=fla is the causal LLN kernel; bidirectional LLN: auto, "
                             r"torch, triton"),
        ({"backend": "triton", "head_dim": 256}, r"supports head_dim <= 128, got 256"),
        ({"backend": "triton", "matmul_dtype": "bf16"}, r"matmul_dtype=bf16 runs on backend=torch"),
    ],
    ids=["unknown", "triton-causal", "fla-bidir", "triton-d256", "triton-bf16-matmul"],
)  # fmt: skip
def test_explicit_backend_that_cannot_be_built_says_why(options, message: str) -> None:
    options = {"head_dim": 8, "causal": False, **options}
    with pytest.raises(ConfigError, match=message):
        build_attention("lln", num_heads=2, **options)


@pytest.mark.parametrize(
    ("backend", "causal", "message"),
    [
        ("triton", False, r"backend=triton: triton runs on CUDA tensors, got cpu; allowed: auto, "
                          r"torch, triton"),
        ("fla", True, r"backend=fla: fla runs on CUDA tensors, got cpu; allowed: auto, torch, fla"),
    ],
)  # fmt: skip
def test_explicit_backend_on_cpu_tensors_is_one_clear_error(backend, causal, message) -> None:
    if dispatch.package_missing("triton") or (backend == "fla" and dispatch.package_missing("fla")):
        pytest.skip("the [gpu] packages are part of the dev extra")
    attn = build_attention("lln", num_heads=2, head_dim=8, causal=causal, backend=backend)
    with pytest.raises(dispatch.BackendUnavailable, match=message):
        attn(*(t.float() for t in qkv(1, 2, 9, 8)))


def test_lln_diag_forwards_the_backend_to_its_lln_branch() -> None:
    attn = build_attention("lln_diag", num_heads=2, head_dim=8, causal=True, backend="torch")
    attn(*(t.float() for t in qkv(1, 2, 20, 8)))
    assert attn.lln.backend == "torch" and attn.last_backend == "torch"
    with pytest.raises(ConfigError, match="backend=triton is the bidirectional LLN kernel"):
        build_attention("lln_diag", num_heads=2, head_dim=8, causal=True, backend="triton")
