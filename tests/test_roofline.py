"""FLOP/byte models, device peaks, achieved rates, and scale's per-backend series."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from llnbench.bench import roofline
from llnbench.bench.scale_report import summarise
from llnbench.cli import app
from llnbench.model.roberta import ModelConfig


@pytest.mark.parametrize(
    ("name", "label"),
    [("NVIDIA H100 80GB HBM3", "NVIDIA H100 SXM 80GB"), ("NVIDIA H200", "NVIDIA H200 SXM 141GB"),
     ("NVIDIA H100 PCIe", "NVIDIA H100 PCIe 80GB"), ("NVIDIA A100-SXM4-40GB", "NVIDIA A100 40GB"),
     ("NVIDIA A100-SXM4-80GB", "NVIDIA A100 SXM 80GB")],
)  # fmt: skip
def test_device_peaks_by_name(name: str, label: str) -> None:
    assert roofline.device_peak(name)["device"] == label
    assert roofline.device_peak("NVIDIA GeForce RTX 4090") is None
    assert roofline.device_peak(None) is None


def test_flop_models() -> None:
    n, d = 1024, 64
    assert roofline.attention_flops("softmax", n, "fwd", False, d, {}) == 4 * n * n * d
    assert roofline.attention_flops("softmax", n, "fwd", True, d, {}) == 2 * n * n * d
    assert roofline.attention_flops("softmax", n, "fwdbwd", False, d, {}) == 14 * n * n * d
    assert roofline.attention_flops("lln", n, "fwdbwd", True, d, {}) == 12 * n * d * d
    diag = roofline.attention_flops("lln_diag", n, "fwd", False, d, {})
    assert diag == 4 * n * d * d + 4 * n * d * d  # blocks of w = d
    assert roofline.attention_flops("performer", n, "fwd", False, d, {"nb_features": 32}) == (
        8 * n * 32 * d)  # fmt: skip
    assert roofline.attention_flops("lara", n, "fwd", False, d, {}) is None


def row(name: str, n: int, ms: float, mode: str = "fwdbwd", **extra) -> dict:
    return {"attention": name, "seq_len": n, "mode": mode, "causal": False, "batch": 1,
            "heads": 12, "head_dim": 64, "dtype": "bf16", "scope": "layer", "status": "ok",
            "ms_median": ms, "options": {}, **extra}  # fmt: skip


def test_rates_roofline_floor_and_bound() -> None:
    peak = roofline.device_peak("NVIDIA H100 80GB HBM3")
    lln = roofline.rates(row("lln", 65536, 1.0), peak)
    nbytes = 12 * 12 * 65536 * 64 * 2
    assert lln["gbps"] == pytest.approx(nbytes / 1e6, rel=1e-3) and lln["bound"] == "memory"
    assert lln["floor_ms"] == pytest.approx(nbytes / 3350e6, rel=1e-3)  # the issue's ~0.40 ms
    assert lln["x_floor"] == pytest.approx(1.0 / lln["floor_ms"], rel=1e-2)
    soft = roofline.rates(row("softmax", 16384, 10.0), peak)
    assert soft["bound"] == "compute"
    assert soft["tflops"] == pytest.approx(14 * 12 * 16384**2 * 64 / 10.0 / 1e9, rel=1e-3)
    cpu = roofline.rates(row("lln", 1024, 5.0, dtype="fp32"), None)
    assert cpu["tflops"] > 0 and cpu["peak_fraction"] is None and cpu["bound"] is None
    model = ModelConfig(layers=2, hidden=64, heads=1, ffn=128)
    step = roofline.rates(row("softmax", 128, 1.0, scope="model", heads=1), None, model)
    dense = 2 * (4 * 64**2 + 2 * 64 * 128)
    assert step["tflops"] == pytest.approx((6 * 128 * dense + 2 * 14 * 128**2 * 64) / 1e9, 1e-3)
    assert step["gbps"] is None
    assert roofline.rates({**row("lln", 64, 1.0), "status": "oom"}, peak)["tflops"] is None


def test_scale_times_one_series_per_backend(tmp_path) -> None:
    result = CliRunner().invoke(app, [
        "scale", "--attention", "softmax,lln,lln_diag", "--backend", "torch,triton", "--min-len",
        "64", "--max-len", "64", "--mode", "fwd", "--device", "cpu", "--heads", "2", "--out",
        str(tmp_path), "warmup=1", "min_time_s=0", "max_repeats=3", "wandb.mode=disabled",
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "scale.json").read_text())
    got = {r["series"]: (r["attention"], r["status"], r["backend"]) for r in data["rows"]}
    assert got["softmax"] == ("softmax", "ok", None)
    assert got["lln/torch"] == ("lln", "ok", "torch")
    assert got["lln_diag/torch"] == ("lln_diag", "ok", "torch")
    assert (
        next(r for r in data["rows"] if r["series"] == "lln/torch")["options"]["backend"] == "torch"
    )
    assert got["softmax[math]"] == ("softmax", "ok", None)  # each SDPA backend, and the fastest
    triton = next(r for r in data["rows"] if r["series"] == "lln/triton")
    assert triton["status"] == "skipped" and "CUDA tensors" in triton["reason"]
    assert data["machine"]["peak"] == "unknown"
    assert {"tflops", "gbps", "peak_fraction", "x_floor"} <= set(data["rows"][0])
    assert set(summarise(data["rows"])) >= {"lln/torch/fwd", "lln/triton/fwd", "softmax/fwd"}
    assert "lln/torch" in result.output and "device peaks unknown" in result.output
