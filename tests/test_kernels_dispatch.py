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
    assert attn.fallback_reason == "triton runs on CUDA tensors, got cpu"


def test_auto_picks_the_kernel_on_cuda_and_falls_back_where_it_cannot() -> None:
    assert dispatch.select("auto", causal=False, q=fake_cuda()) == ("triton", None)
    assert dispatch.select("auto", causal=True, q=fake_cuda(torch.float32)) == ("triton", None)
    assert dispatch.select("auto", causal=True, q=fake_cuda(head_dim=128)) == ("triton", None)
    assert dispatch.select("auto", causal=False, q=fake_cuda(head_dim=128)) == ("triton", None)
    assert dispatch.select("auto", causal=False, q=fake_cuda(head_dim=256)) == (
        "torch", "head_dim 256 > 128")  # fmt: skip
    assert dispatch.select("auto", causal=True, q=fake_cuda(head_dim=256)) == (
        "torch", "head_dim 256 > 128")  # fmt: skip
    assert dispatch.select("auto", causal=True, q=fake_cuda(torch.float64)) == (
        "torch", "triton kernels take fp32/bf16/fp16 tensors, got float64")  # fmt: skip
    assert dispatch.select("auto", causal=False, q=fake_cuda(), matmul_dtype="bf16")[0] == "torch"
    assert dispatch.select("torch", causal=False, q=fake_cuda()) == ("torch", None)


def test_auto_without_the_packages_falls_back(monkeypatch) -> None:
    monkeypatch.setattr(dispatch, "package_missing", lambda name: name == "fla")
    attn = build_attention("lln", num_heads=2, head_dim=8, causal=True)
    # auto never needs fla-core
    assert dispatch.select("auto", causal=True, q=fake_cuda(), missing=attn._missing_package) == (
        "triton", None)  # fmt: skip
    monkeypatch.setattr(dispatch, "package_missing", lambda name: name == "triton")
    attn = build_attention("lln", num_heads=2, head_dim=8, causal=True)
    backend, reason = dispatch.select(
        "auto", causal=True, q=fake_cuda(), missing=attn._missing_package
    )
    assert backend == "torch" and reason == "triton is not installed (pip install -e '.[gpu]')"
    monkeypatch.setattr(dispatch, "package_missing", lambda name: True)
    with pytest.raises(ConfigError, match=r"backend=fla: fla-core is not installed \(pip install"):
        build_attention("lln", num_heads=2, head_dim=8, causal=True, backend="fla")
    with pytest.raises(ConfigError, match=r"backend=triton: triton is not installed"):
        build_attention("lln", num_heads=2, head_dim=8, backend="triton")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"backend": "cuda"}, r"unknown LLN backend 'cuda'; allowed: auto, torch, triton, fla"),
        ({"backend": "fla"}, r"backend=fla is the causal LLN kernel; bidirectional LLN: auto, "
                             r"torch, triton"),
        ({"backend": "triton", "head_dim": 256},
         r"supports head_dim <= 128 \(bidirectional\), got 256"),
        ({"backend": "triton", "head_dim": 256, "causal": True},
         r"supports head_dim <= 128 \(causal\), got 256"),
        ({"backend": "triton", "matmul_dtype": "bf16"}, r"matmul_dtype=bf16 runs on backend=torch"),
    ],
    ids=["unknown", "fla-bidir", "triton-d256", "triton-causal-d256", "triton-bf16-matmul"],
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
        ("fla", True, r"backend=fla: fla runs on CUDA tensors, got cpu; allowed: auto, torch, "
                      r"triton, fla"),
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
    with pytest.raises(ConfigError, match="backend=fla is the causal LLN kernel"):
        build_attention("lln_diag", num_heads=2, head_dim=8, causal=False, backend="fla")


def fake_gpu(monkeypatch, name: str, capability: tuple[int, int], triton: str | None) -> None:
    """What ``fla_causal.backward_refusal`` reads of the device and of Triton, faked."""
    from llnbench.attention.kernels import fla_causal

    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index=None: name)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda index=None: capability)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(fla_causal, "triton_version", lambda: triton)
    fla_causal.backward_refusal.cache_clear()  # cached per device index


H100_SHARED = 232_448  # bytes of shared memory one program may use (opt-in)


@pytest.fixture(autouse=True)
def _fresh_refusal_cache(monkeypatch):
    """An H100's shared memory for the fake CUDA tensors; fla's guard recomputed per test."""
    from llnbench.attention.kernels import fla_causal

    monkeypatch.setattr(dispatch, "device_shared_memory", lambda index: (9, H100_SHARED))
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    yield
    fla_causal.backward_refusal.cache_clear()


@pytest.mark.parametrize(
    ("major", "shared_kb", "head_dim", "picked"),
    [(9, 227, 64, "triton"), (9, 227, 128, "triton"), (8, 163, 64, "triton"),
     (8, 163, 128, "triton"), (8, 99, 64, "triton"), (8, 99, 128, "torch"), (7, 64, 16, "torch"),
     (9, 100, 64, "torch")],
    ids=["h100-d64", "h100-d128", "a100-d64", "a100-d128", "rtx4090-d64", "rtx4090-d128",
         "t4-d16", "hopper-with-100kb-d64"],
)  # fmt: skip
def test_causal_triton_needs_its_shared_memory(monkeypatch, major, shared_kb, head_dim, picked):
    monkeypatch.setattr(dispatch, "device_shared_memory", lambda index: (major, shared_kb * 1024))
    backend, reason = dispatch.select("auto", causal=True, q=fake_cuda(head_dim=head_dim))
    assert backend == picked
    if picked == "torch":
        assert reason.startswith("the causal triton kernel needs ")
        assert reason.endswith(f"KB of shared memory per block at head_dim {head_dim}, "
                               f"this GPU has {shared_kb} KB")  # fmt: skip
        with pytest.raises(dispatch.BackendUnavailable, match=r"^attention.backend=triton: the"):
            dispatch.select("triton", causal=True, q=fake_cuda(head_dim=head_dim))
    # the bidirectional kernel is not subject to it
    assert dispatch.select("auto", causal=False, q=fake_cuda())[0] == "triton"


def test_unknown_shared_memory_lets_the_kernel_try(monkeypatch) -> None:
    monkeypatch.setattr(dispatch, "device_shared_memory", lambda index: (9, None))
    assert dispatch.select("auto", causal=True, q=fake_cuda()) == ("triton", None)


@pytest.mark.parametrize(
    ("name", "capability", "triton", "refused"),
    [
        ("NVIDIA H200", (9, 0), "3.6.0", True),
        ("NVIDIA H100 80GB HBM3", (9, 0), "3.4.0", True),
        ("NVIDIA H100 80GB HBM3", (9, 0), "3.7.0+git3f2a", True),
        ("NVIDIA GH200 480GB", (9, 0), "3.5.1", True),
        ("NVIDIA H200", (9, 0), "3.7.1", False),
        ("NVIDIA H200", (9, 0), "3.3.1", False),
        ("NVIDIA A100-SXM4-80GB", (8, 0), "3.6.0", False),
        ("NVIDIA B200", (10, 0), "3.6.0", False),
        ("NVIDIA H200", (9, 0), None, False),
    ],
    ids=["h200-3.6", "h100-3.4", "h100-3.7.0-git", "gh200-3.5", "h200-3.7.1", "h200-3.3",
         "a100-3.6", "b200-3.6", "no-triton"],
)  # fmt: skip
def test_fla_hopper_guard_mirrors_fla_core(monkeypatch, name, capability, triton, refused) -> None:
    from llnbench.attention.kernels import fla_causal

    fake_gpu(monkeypatch, name, capability, triton)
    reason = fla_causal.backward_refusal(0)
    assert (reason is not None) == refused
    if refused:
        assert f"on {name} (Hopper) with Triton {triton}" in reason
        assert "incorrect results for gated chunk_bwd_dqkwg" in reason


def test_explicit_fla_under_the_guard_is_one_clear_error_and_auto_avoids_it(monkeypatch) -> None:
    fake_gpu(monkeypatch, "NVIDIA H200", (9, 0), "3.6.0")
    q = fake_cuda(torch.float32)
    with pytest.raises(dispatch.BackendUnavailable) as err:
        dispatch.select("fla", causal=True, q=q)
    message = str(err.value)
    assert "\n" not in message and message.startswith("attention.backend=fla: fla-core refuses")
    assert message.endswith("allowed: auto, torch, triton, fla")
    assert dispatch.select("auto", causal=True, q=q) == ("triton", None)
    fake_gpu(monkeypatch, "NVIDIA H200", (9, 0), "3.7.1")
    assert dispatch.select("fla", causal=True, q=q) == ("fla", None)
    fake_gpu(monkeypatch, "NVIDIA A100-SXM4-80GB", (8, 0), "3.6.0")
    assert dispatch.select("fla", causal=True, q=q) == ("fla", None)


def test_auto_never_picks_fla(monkeypatch) -> None:
    """Not on Hopper, not elsewhere, not when triton's kernel cannot take the call."""
    fake_gpu(monkeypatch, "NVIDIA A100-SXM4-80GB", (8, 0), "3.6.0")
    for q in (fake_cuda(), fake_cuda(torch.float16), fake_cuda(torch.float64),
              fake_cuda(head_dim=256)):  # fmt: skip
        assert dispatch.select("auto", causal=True, q=q)[0] in ("triton", "torch")
    cpu = SimpleNamespace(dtype=torch.float32, device=torch.device("cpu"), shape=(1, 2, 8, 64))
    assert dispatch.select("auto", causal=True, q=cpu) == (
        "torch", "triton runs on CUDA tensors, got cpu")  # fmt: skip
