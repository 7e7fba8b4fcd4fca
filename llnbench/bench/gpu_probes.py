"""gpu-check's measurements that are not ``llnbench scale`` sweeps, one subcommand each:

    python -m llnbench.bench.gpu_probes nan OUT.json --n 65536 [--device cuda]
    python -m llnbench.bench.gpu_probes profile OUT.json --n 16384 65536
    python -m llnbench.bench.gpu_probes longest OUT.json --n 131072 262144 [--tiny]

``nan``: bf16 LLN forward + backward at length n on every backend, both directions: finite?
``profile``: per attention layer (fwd+bwd, B=1, H=12, d=64): wall time per step (host clock
around the call and a device sync), kernel time per step and launches per step (torch.profiler's
device events), and the replay time of the same step captured as one CUDA graph.
``longest``: one ``model=base`` LLN training step (bf16, batch 1) at each n, longest last: time,
peak memory, and whether the loss is finite. Each case that fails (an unavailable backend, out of
memory, a capture error) is a row saying so; the JSON is written after every case, so a step cut
by its time budget keeps what it measured.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

NAN_BACKENDS = {False: ("torch", "triton"), True: ("torch", "triton", "fla")}
# (series, mechanism, causal, options) profiled per N; softmax on PyTorch's own SDPA choice
PROFILED = [
    ("softmax", "softmax", False, {}),
    ("lln/torch", "lln", False, {"backend": "torch"}),
    ("lln/triton", "lln", False, {"backend": "triton"}),
    ("causal softmax", "softmax", True, {}),
    ("causal lln/triton", "lln", True, {"backend": "triton"}),
    ("causal lln/fla", "lln", True, {"backend": "fla"}),
]


def _error(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}"[:240]


def _save(path: Path, data: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    tmp.replace(path)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# -- nan ------------------------------------------------------------------------------------


def nan_probe(path: Path, n: int, device: torch.device) -> dict[str, Any]:
    """bf16 (fp32 on CPU) LLN forward + backward at length n: finite outputs and gradients."""
    from llnbench.attention import build_attention

    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    results: dict[str, Any] = {}
    for causal, backends in NAN_BACKENDS.items():
        for backend in backends:
            key = f"{'causal' if causal else 'bidir'}/{backend}"
            try:
                attn = build_attention("lln", num_heads=12, head_dim=64, causal=causal,
                                       backend=backend).to(device).train()  # fmt: skip
                gen = torch.Generator(device=device).manual_seed(0)
                q, k, v = (3 * torch.randn(1, 12, n, 64, device=device, generator=gen)
                           for _ in range(3))  # fmt: skip
                q, k, v = (t.to(dtype).requires_grad_() for t in (q, k, v))
                out = attn(q, k, v)
                out.float().square().mean().backward()
                finite = bool(torch.isfinite(out).all()) and all(
                    bool(torch.isfinite(t.grad).all()) for t in (q, k, v)
                )
                results[key] = {"finite": finite, "backend": attn.last_backend, "n": n}
            except Exception as exc:  # an unavailable backend is a result, not a crash
                results[key] = {"finite": None, "error": _error(exc), "n": n}
            _save(path, results)
    return results


# -- profile --------------------------------------------------------------------------------


def wall_ms(fn: Callable[[], None], device: torch.device, repeats: int = 10) -> float:
    """Median host wall time of one call, device work included (sync after each)."""
    times = []
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def kernel_profile(fn: Callable[[], None], device: torch.device, steps: int = 5) -> dict[str, Any]:
    """Device time and launches per call from torch.profiler's device events (CUDA only)."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        for _ in range(steps):
            fn()
        _sync(device)
    events = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    kernels = [
        e for e in events if "memcpy" not in e.name.lower() and "memset" not in e.name.lower()
    ]
    busy_us = sum(e.time_range.elapsed_us() for e in events)
    top: dict[str, float] = {}
    for e in kernels:
        top[e.name] = top.get(e.name, 0.0) + e.time_range.elapsed_us()
    heaviest = sorted(top.items(), key=lambda kv: -kv[1])[:3]
    return {
        "kernel_ms": busy_us / 1000 / steps if events else None,
        "launches": len(kernels) / steps if events else None,
        "copies": (len(events) - len(kernels)) / steps if events else None,
        "top_kernels": [f"{name[:60]} {us / 1000 / steps:.3f} ms" for name, us in heaviest],
    }


def graph_replay_ms(fn: Callable[[], None], device: torch.device) -> float:
    """The call captured as one CUDA graph (after warm-up on a side stream), replay time."""
    from llnbench.bench.timing import time_call

    stream = torch.cuda.Stream(device)
    stream.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(stream):
        for _ in range(3):
            fn()
    torch.cuda.current_stream(device).wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    return time_call(graph.replay, device, warmup=3, min_time_s=0.1, max_repeats=30).ms_median


def profile_layers(path: Path, lengths: list[int], device: torch.device) -> list[dict[str, Any]]:
    from llnbench.bench.cells import layer_call

    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    heads = 12 if device.type == "cuda" else 2
    rows: list[dict[str, Any]] = []
    for n in lengths:
        for series, name, causal, options in PROFILED:
            row: dict[str, Any] = {"series": series, "seq_len": n, "causal": causal,
                                   "mode": "fwdbwd", "status": "ok"}  # fmt: skip
            fn = None
            try:
                fn = layer_call(name, options, batch=1, heads=heads, head_dim=64, n=n,
                                causal=causal, mode="fwdbwd", device=device, dtype=dtype)  # fmt: skip
                for _ in range(3):  # warm-up: autotuning, caches
                    fn()
                row["backend"] = getattr(fn.module, "last_backend", None)  # type: ignore[attr-defined]
                row["wall_ms"] = wall_ms(fn, device)
                row.update(kernel_profile(fn, device))
                if device.type == "cuda":
                    try:
                        row["graph_ms"] = graph_replay_ms(fn, device)
                    except Exception as exc:  # a host sync or allocation inside the step
                        row["graph_ms"], row["graph_error"] = None, _error(exc)
            except torch.OutOfMemoryError:
                row.update(status="oom")
            except Exception as exc:
                row.update(status="error", reason=_error(exc))
            finally:
                del fn
                if device.type == "cuda":
                    torch.cuda.empty_cache()
            rows.append(row)
            _save(path, rows)
    return rows


# -- longest --------------------------------------------------------------------------------


def base_model_config(tiny: bool):
    """conf/model/base.yaml (tiny: 1 layer of 64, for the dry run), as a ModelConfig."""
    import yaml

    from llnbench.config import config_dir, from_dict
    from llnbench.model.roberta import ModelConfig

    cfg = from_dict(ModelConfig, yaml.safe_load((config_dir() / "model" / "base.yaml").read_text()))
    if tiny:
        cfg = dataclasses.replace(cfg, layers=1, hidden=64, heads=1, ffn=128)
    return cfg


def longest_step(path: Path, lengths: list[int], device: torch.device, tiny: bool) -> list[dict]:
    """One LLN train step of model=base (fwd, MLM loss, bwd, AdamW) at each n, bf16 autocast."""
    from llnbench.model.roberta import IGNORE_INDEX, RobertaForMaskedLM
    from llnbench.schema import AttentionConfig
    from llnbench.train.config import TrainerConfig
    from llnbench.train.optim import build_optimizer

    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    rows: list[dict[str, Any]] = []
    for n in sorted(lengths):
        row: dict[str, Any] = {"seq_len": n, "model": "base" if not tiny else "tiny-dry-run",
                               "dtype": str(dtype).removeprefix("torch."), "status": "ok"}  # fmt: skip
        model = optimizer = None
        try:
            cfg = dataclasses.replace(base_model_config(tiny), max_len=n)
            torch.manual_seed(0)
            model = RobertaForMaskedLM(cfg, AttentionConfig("lln", {}), 1).to(device).train()
            optimizer = build_optimizer(model, TrainerConfig())
            ids = torch.randint(5, cfg.vocab_size, (1, n), device=device)
            labels = torch.where(torch.rand(1, n, device=device) < 0.15, ids, IGNORE_INDEX)
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            times, losses = [], []
            for _ in range(3):  # the first is warm-up
                _sync(device)
                start = time.perf_counter()
                with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
                    loss = model(ids, labels)[0]
                loss.backward()
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                _sync(device)
                times.append((time.perf_counter() - start) * 1000)
                losses.append(float(loss.detach()))
            row.update(
                step_ms=statistics.median(times[1:]), losses=losses,
                finite=all(math.isfinite(x) for x in losses),
                backend="+".join(sorted({getattr(m, "last_backend", None) for m in model.modules()}
                                        - {None})),
                peak_gib=torch.cuda.max_memory_allocated(device) / 2**30
                if device.type == "cuda" else None,
            )  # fmt: skip
        except torch.OutOfMemoryError:
            row.update(status="oom", finite=None)
        except Exception as exc:
            row.update(status="error", finite=None, reason=_error(exc))
        finally:
            del model, optimizer
            if device.type == "cuda":
                torch.cuda.empty_cache()
        rows.append(row)
        _save(path, rows)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gpu_probes", description=__doc__.splitlines()[0])
    parser.add_argument("probe", choices=["nan", "profile", "longest"])
    parser.add_argument("out", type=Path)
    parser.add_argument("--n", type=int, nargs="+", required=True)
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--tiny", action="store_true", help="longest: a 1-layer model (dry run)")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if args.probe == "nan":
        rows: Any = nan_probe(args.out, args.n[0], device)
        print(json.dumps(rows))
    elif args.probe == "profile":
        rows = profile_layers(args.out, args.n, device)
        for r in rows:
            print(r["series"], r["seq_len"], r["status"], r.get("wall_ms"), r.get("kernel_ms"),
                  r.get("launches"), r.get("graph_ms"), r.get("reason") or r.get("graph_error"))  # fmt: skip
    else:
        rows = longest_step(args.out, args.n, device, args.tiny)
        for r in rows:
            print(r["seq_len"], r["status"], r.get("step_ms"), r.get("finite"), r.get("peak_gib"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
