"""Work models (FLOPs, ideal HBM bytes) of one scale cell, device peaks, and the rates achieved.

FLOPs per call, B batch, H heads, N tokens, d head dim (multiply-add = 2 FLOPs):

| mechanism | forward | forward + backward |
|---|---|---|
| softmax (SDPA) | 4 B H N^2 d (causal: half) | 3.5 x forward (FlashAttention's count: bwd = 2.5 fwd) |
| lln, linear_elu | 4 B H N d^2 (state phi_k^T v, then phi_q S) | 3 x forward |
| cosformer | 4 B H N (2d) d | 3 x forward |
| performer (m features) | 4 B H N m d (features) + 4 B H N m d (core) | 3 x forward |
| lln_diag (blocks of w) | lln + 4 B H N w d (causal: half) | 3 x lln + 3.5 x blocks |
| nystrom (m landmarks) | 8 B H N m d + 66 B H N d (conv 33) | 3 x forward |
| local (radius r) | 4 B H N (2r + 1) d (causal: r + 1) | 3.5 x forward |
| lara, ra | no model (None) | |

Bytes: the ideal HBM traffic, every tensor moved once: forward reads q, k, v and writes out
(4 B H N d elements); backward reads q, k, v, dout and writes dq, dk, dv, plus out or its
statistics (8 B H N d): 12 B H N d elements for forward + backward, times the element size.
Model scope (one training step): FLOPs = 6 B N P (2 B N P forward only), P = the encoder's
dense weights, layers x (4 h^2 + 2 h ffn), plus layers x the attention's own FLOPs; no byte model.

Peaks: vendors' datasheet figures, dense (no sparsity); an unlisted device (every CPU) has
"unknown" peaks and no fraction, never an invented one.
"""

from __future__ import annotations

from typing import Any

# name pattern (all words must appear in the device name), label, bf16/fp16 tensor TFLOP/s,
# fp32 (non-tensor) TFLOP/s, HBM GB/s. The first match wins: specific parts before generic ones.
PEAKS: list[tuple[tuple[str, ...], str, float, float, float]] = [
    (("H200", "NVL"), "NVIDIA H200 NVL", 835.0, 60.0, 4800.0),
    (("H200",), "NVIDIA H200 SXM 141GB", 989.4, 66.9, 4800.0),
    (("H100", "PCIE"), "NVIDIA H100 PCIe 80GB", 756.5, 51.2, 2000.0),
    (("H100", "NVL"), "NVIDIA H100 NVL 94GB", 835.0, 60.0, 3900.0),
    (("H100",), "NVIDIA H100 SXM 80GB", 989.4, 66.9, 3350.0),
    (("A100", "40GB"), "NVIDIA A100 40GB", 312.0, 19.5, 1555.0),
    (("A100", "PCIE"), "NVIDIA A100 PCIe 80GB", 312.0, 19.5, 1935.0),
    (("A100",), "NVIDIA A100 SXM 80GB", 312.0, 19.5, 2039.0),
]
PEAK_SOURCE = "vendor datasheets, dense (no sparsity)"
ELEMENT_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}


def device_peak(gpu_name: str | None) -> dict[str, Any] | None:
    """Peak figures of a GPU by its CUDA name (e.g. 'NVIDIA H100 80GB HBM3'); None if unknown."""
    if not gpu_name:
        return None
    upper = gpu_name.upper()
    for words, label, bf16, fp32, hbm in PEAKS:
        if all(w in upper for w in words):
            return {"device": label, "bf16_tflops": bf16, "fp32_tflops": fp32, "hbm_gbps": hbm,
                    "source": PEAK_SOURCE}  # fmt: skip
    return None


def _forward_flops(
    name: str, n: int, causal: bool, d: int, options: dict[str, Any]
) -> float | None:
    """Forward FLOPs per (batch, head); None for mechanisms without a model (lara, ra)."""
    if name == "softmax":
        return 4 * n * n * d * (0.5 if causal else 1.0)
    if name in ("lln", "linear_elu"):
        return 4 * n * d * d
    if name == "cosformer":
        return 8 * n * d * d
    if name == "performer":
        return 8 * n * int(options.get("nb_features", 64)) * d
    if name == "nystrom":
        return 8 * n * int(options.get("num_landmarks", 64)) * d + 66 * n * d
    if name == "local":
        r = int(options.get("window", 32))
        return 4 * n * (r + 1 if causal else 2 * r + 1) * d
    return None


def attention_flops(
    name: str, n: int, mode: str, causal: bool, d: int, options: dict[str, Any]
) -> float | None:
    """FLOPs of one call per (batch, head), or None where there is no model (lara, ra)."""
    if name == "lln_diag":
        w = min(int(options.get("diag_block") or d), n)
        blocks = 4 * n * w * d * (0.5 if causal else 1.0)
        linear = _forward_flops("lln", n, causal, d, options) or 0.0
        return linear + blocks if mode == "fwd" else 3 * linear + 3.5 * blocks
    fwd = _forward_flops(name, n, causal, d, options)
    if fwd is None or mode == "fwd":
        return fwd
    return fwd * (3.5 if name in ("softmax", "local") else 3.0)


def work(row: dict[str, Any], model: Any = None) -> tuple[float | None, float | None]:
    """(FLOPs, ideal bytes) of one scale row; model scope needs the ModelConfig timed."""
    n, mode, causal = row["seq_len"], row["mode"], row["causal"]
    b, h, d = row["batch"], row["heads"], row["head_dim"]
    per_head = attention_flops(row["attention"], n, mode, causal, d, row.get("options") or {})
    if row["scope"] == "model":
        dense = model.layers * (4 * model.hidden**2 + 2 * model.hidden * model.ffn)
        flops = (6 if mode == "fwdbwd" else 2) * b * n * dense
        if per_head is not None:
            flops += model.layers * b * h * per_head
        return flops, None
    elements = (12 if mode == "fwdbwd" else 4) * b * h * n * d
    flops = None if per_head is None else b * h * per_head
    return flops, elements * ELEMENT_BYTES.get(row["dtype"], 4)


def _sig(x: float) -> float:
    return float(f"{x:.4g}")


def rates(row: dict[str, Any], peak: dict[str, Any] | None, model: Any = None) -> dict[str, Any]:
    """Achieved TFLOP/s and GB/s of an ok row, the roofline floor and the fraction of it reached.

    floor_ms = max(FLOPs / peak compute, bytes / peak bandwidth); ``bound`` names the larger
    term; ``peak_fraction`` = floor_ms / ms_median (1.0 = at the roofline).
    """
    out: dict[str, Any] = {"tflops": None, "gbps": None, "floor_ms": None, "x_floor": None,
                           "peak_fraction": None, "bound": None}  # fmt: skip
    ms = row.get("ms_median")
    if row.get("status") != "ok" or not ms:
        return out
    flops, nbytes = work(row, model)
    if flops is not None:
        out["tflops"] = _sig(flops / ms / 1e9)
    if nbytes is not None:
        out["gbps"] = _sig(nbytes / ms / 1e6)
    if peak is None:
        return out
    tflops = peak["fp32_tflops"] if row["dtype"] == "fp32" else peak["bf16_tflops"]
    terms = {}
    if flops is not None:
        terms["compute"] = flops / (tflops * 1e9)  # ms
    if nbytes is not None:
        terms["memory"] = nbytes / (peak["hbm_gbps"] * 1e6)
    if terms:
        bound = max(terms, key=terms.get)
        floor = terms[bound]
        out.update(floor_ms=_sig(floor), x_floor=_sig(ms / floor), peak_fraction=_sig(floor / ms),
                   bound=bound)  # fmt: skip
    return out
