"""``llnbench scale``: time and peak memory of attention against sequence length.

Layer scope (default): one attention core on (B, H, N, d) Gaussian inputs. Softmax is SDPA, timed
on every backend the device runs (``sdpa_backend=auto``: cudnn, flash and efficient on CUDA; flash
and math on CPU), each its own series (``softmax[cudnn]``); the fastest per cell is the row
``softmax`` that every ratio divides by. ``--sdpa-backend X`` times X alone (``default``: PyTorch's
own choice). Lengths double from ``min_len`` to ``max_len``; each cell warms up,
repeats, and records median, p20 and p80. An out-of-memory cell becomes a row (status ``oom``) and
that mechanism's longer lengths are skipped; so are lengths past the time budget or past what the
host's free memory could hold. Results: scale.json, scale.csv, scale.png, a rich table of ratios to
softmax at the same length, metrics.jsonl, and a W&B table when W&B is enabled.
"""

from __future__ import annotations

import dataclasses
import gc
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from rich.markup import escape

from llnbench import files
from llnbench.attention import ATTENTIONS, attention_class, attention_options, check_options
from llnbench.attention.external import is_spec
from llnbench.attention.kernels.dispatch import BACKENDS, BackendUnavailable
from llnbench.bench import roofline
from llnbench.bench.cell_progress import Cell, CellProgress
from llnbench.bench.cells import (
    SDPA_BACKENDS,
    backends_used,
    check_builds,
    layer_call,
    model_call,
    sdpa_backend,
    sdpa_backend_names,
)
from llnbench.bench.machine import machine_info
from llnbench.bench.scale_report import ratio_table, summarise, write_plot
from llnbench.bench.timing import free_host_memory_bytes, peak_memory_mib, time_call
from llnbench.compiling import CompileBackend, compile_backend
from llnbench.config import Seed
from llnbench.console import console
from llnbench.devices import dtype_name, resolve_device, resolve_dtype
from llnbench.errors import ConfigError, one_of
from llnbench.model.roberta import ModelConfig
from llnbench.progress import ProgressBar
from llnbench.runs import as_plain, open_run_dir, save_config
from llnbench.schema import AttentionConfig, WandbConfig
from llnbench.testing.outside import broken_outside_attentions, is_outside
from llnbench.tracking import Tracker

DEFAULT_ATTENTIONS = ["softmax", "lln", "lln_diag", "lara"]


@dataclass
class ScaleConfig:
    attentions: list[str] = field(default_factory=lambda: list(DEFAULT_ATTENTIONS))
    options: dict[str, dict[str, Any]] = field(default_factory=dict)  # per-mechanism options
    # LLN backends to time, one series each ("lln/triton"), for mechanisms with that option
    backends: list[str] = field(default_factory=list)
    compile: bool | CompileBackend = False  # torch.compile each timed layer / model
    min_len: int = 1024
    max_len: int = 16384
    seq_lens: list[int] = field(default_factory=list)  # explicit lengths instead of the doubling
    mode: Literal["fwd", "fwdbwd", "both"] = "both"
    causal: bool = False
    device: str = "auto"
    dtype: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    batch_size: int = 1
    heads: int = 12
    head_dim: int = 64
    scope: Literal["layer", "model"] = "layer"
    # auto: every SDPA backend of the device, the fastest per cell is `softmax`; or one pinned
    sdpa_backend: Literal["auto", "default", "cudnn", "flash", "efficient", "math"] = "auto"
    warmup: int = 3
    min_time_s: float = 1.0
    max_repeats: int = 30
    # a cell slower than this skips the mechanism's longer lengths (its calls: one-off compile
    # or Triton JIT in the first call does not count)
    budget_s: float = 120.0
    memory_fraction: float = 0.5  # CPU: skip cells whose estimate exceeds this share of free RAM
    seed: Seed = 0
    run_dir: str | None = None
    model: ModelConfig = field(default_factory=ModelConfig)  # --scope model: the preset timed
    wandb: WandbConfig = field(default_factory=WandbConfig)
    # outside mechanisms skipped by `--attention all` for failing the interface check: name -> why
    broken: dict[str, str] = field(default_factory=dict, init=False)

    def validate(self) -> None:
        everything = self.attentions in (["all"], ("all",))
        if everything:
            self.attentions = list(ATTENTIONS)
        # outside mechanisms pass the interface check first; with `all`, a broken one is a row
        self.broken = broken_outside_attentions(
            self.attentions, self.options, skip_broken=everything, causal=self.causal,
            num_heads=self.model.heads if self.scope == "model" else max(1, self.heads),
            head_dim=self.model.head_dim if self.scope == "model" else max(1, self.head_dim),
            # resolved only for an outside mechanism: a composed cuda config validates on CPU
            device=resolve_device(self.device) if any(map(is_outside, self.attentions)) else "cpu",
        )  # fmt: skip
        self.attentions = [name for name in self.attentions if name not in self.broken]
        if not self.attentions:
            raise ConfigError("attentions is empty; give at least one mechanism (or all)")
        for name in self.attentions:
            if is_spec(name):
                attention_class(name)  # module.path:ClassName: importable, or says why not
            elif name not in ATTENTIONS:
                raise one_of("attention", name, ["all", *ATTENTIONS])
        for name, opts in self.options.items():
            if not is_spec(name) and name not in ATTENTIONS:
                raise one_of("attention in options", name, list(ATTENTIONS))
            check_options(name, opts, prefix=f"options.{name}")  # names and types
        for backend in self.backends:
            if backend not in BACKENDS:
                raise one_of("backend", backend, BACKENDS)
        compile_backend(self.compile)
        if self.sdpa_backend not in SDPA_BACKENDS:
            raise one_of("sdpa_backend", self.sdpa_backend, SDPA_BACKENDS)
        bad = [n for n in self.seq_lens if n < 1]
        if bad:
            raise ConfigError(f"seq_lens must be positive, got {bad[0]}")
        if not 1 <= self.min_len <= self.max_len:
            raise ConfigError(
                f"need 1 <= min_len <= max_len, got min_len={self.min_len}, max_len={self.max_len}"
            )
        model = self.scope == "model"
        # a value a mechanism cannot take stops here, before any file exists (options of a
        # mechanism not in this run included: they are a mistake either way)
        for name in dict.fromkeys([*self.attentions, *self.options]):
            check_builds(
                name, self.options.get(name, {}),
                heads=self.model.heads if model else max(1, self.heads),
                head_dim=self.model.head_dim if model else max(1, self.head_dim),
                causal=self.causal and attention_class(name).supports_causal,
            )  # fmt: skip
        if self.causal and len(self.attentions) == 1:
            cls = ATTENTIONS[self.attentions[0]]
            if not cls.supports_causal:
                raise ConfigError(f"attention {cls.name!r} has no causal form; drop --causal")
        for name in ("batch_size", "heads", "head_dim", "max_repeats", "budget_s"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)}")
        for name in ("warmup", "min_time_s"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not 0.0 < self.memory_fraction <= 1.0:
            raise ConfigError(f"memory_fraction must be in (0, 1], got {self.memory_fraction}")

    def lengths(self) -> list[int]:
        if self.seq_lens:
            return sorted(set(self.seq_lens))
        out, n = [], self.min_len
        while n <= self.max_len:
            out.append(n)
            n *= 2
        return out

    def modes(self) -> list[str]:
        return ["fwd", "fwdbwd"] if self.mode == "both" else [self.mode]

    def series(self, device: torch.device) -> list[Series]:
        """One timed line per LLN backend where that applies, per SDPA backend for softmax."""
        out = []
        for name in self.attentions:
            options = self.options.get(name, {})
            if name == "softmax":
                sdpas = sdpa_backend_names(self.sdpa_backend, device)
                several = self.sdpa_backend == "auto"
                out += [Series(f"softmax[{b}]" if several else name, name, options, b)
                        for b in sdpas]  # fmt: skip
            elif self.backends and "backend" in attention_options(name):
                out += [
                    Series(f"{name}/{b}", name, {**options, "backend": b}) for b in self.backends
                ]
            else:
                out.append(Series(name, name, options))
        return out


@dataclass(frozen=True)
class Series:
    label: str  # the row's `series`: softmax[cudnn], lln/triton, lln
    name: str  # the mechanism
    options: dict[str, Any]
    sdpa: str = "default"  # the SDPA backend pinned around the call (softmax only)


def run(cfg: ScaleConfig) -> Path:
    device = resolve_device(cfg.device)
    dtype = resolve_dtype(cfg.dtype, device)
    run_dir = open_run_dir("scale", "-".join(cfg.attentions), cfg.run_dir)  # not another job's
    save_config(run_dir, cfg)
    sdpas = sdpa_backend_names(cfg.sdpa_backend, device)
    backend = ",".join(sdpas) + (" (fastest per cell)" if len(sdpas) > 1 else "")
    machine = machine_info(device, dtype_name(dtype), sdpa_backend=backend, scope=cfg.scope)
    machine["peak"] = roofline.device_peak(machine.get("gpu")) or "unknown"
    tracker = Tracker(
        run_dir, job="scale", name=f"scale-{device.type}-{dtype_name(dtype)}",
        config=as_plain(cfg), wandb_cfg=cfg.wandb,
    )  # fmt: skip
    console.print(
        "[bold]llnbench scale[/bold] "
        + escape(
            f"{device} {dtype_name(dtype)}, {shape_text(cfg)}, "
            f"N={cfg.min_len}..{cfg.max_len}, "
            f"{'causal' if cfg.causal else 'bidirectional'}, SDPA backend {backend}, "
            f"{torch.get_num_threads()} threads"
        )
    )
    if device.type == "cpu":
        console.print("[dim]peak memory is not measured on CPU (no peak counter in PyTorch)[/dim]")

    peak = machine["peak"] if isinstance(machine["peak"], dict) else None
    rows = sweep(cfg, device, dtype, tracker, peak)

    result = {"machine": machine, "config": as_plain(cfg), "rows": rows}
    files.write_json(run_dir / "scale.json", result)
    files.write_csv(run_dir / "scale.csv", rows)
    write_plot(rows, run_dir / "scale.png", machine)
    summary = summarise(rows)
    console.print(ratio_table(rows, machine))
    tracker.table("scale", rows)
    tracker.image("scale_plot", run_dir / "scale.png")
    tracker.finish({"machine": machine, "summary": summary})
    console.print(f"run directory: [bold]{escape(str(run_dir))}[/bold]")
    return run_dir


def sweep(
    cfg: ScaleConfig, device, dtype, tracker: Tracker, peak: dict | None = None
) -> list[dict[str, Any]]:
    """Measure every (series, length, mode) cell in order, skipping what cannot fit; then the
    fastest softmax per (length, mode) when several SDPA backends were timed."""
    lengths, modes = cfg.lengths(), cfg.modes()
    rows: list[dict[str, Any]] = [
        {
            **base_row(cfg, name, lengths[0], modes[0], dtype),
            "series": name,
            "status": "skipped",
            "reason": reason,
        }
        for name, reason in cfg.broken.items()
    ]  # an entry point that failed its interface check: a row saying why
    series = cfg.series(device)
    plan = [(s, n, mode) for s in series for n in lengths for mode in modes]
    cells = [Cell(s.label, n, mode, 1.0 if attention_class(s.name).linear_in_n else 2.0)
             for s, n, mode in plan]  # fmt: skip
    # a terminal gets the live bar; a log gets a line per cell and a heartbeat inside long ones
    live = console.is_terminal
    progress = ProgressBar("scale", len(plan), unit="cell", enabled=live)
    lines = CellProgress(cells, console, enabled=not live, budget_s=cfg.budget_s)
    stopped: dict[tuple[str, str], str] = {}  # (series, mode) -> why longer lengths are skipped
    with progress, lines:
        for index, (s, n, mode) in enumerate(plan):
            lines.start(index)
            cell_cfg = dataclasses.replace(cfg, options={**cfg.options, s.name: s.options})
            text = f"{s.label:<14} N={n:<6} {mode:<6}"
            progress.update(description=text)

            def phase(what: str, text: str = text) -> None:
                lines.set_phase(what)
                if live:
                    progress.update(description=f"{text} {what}")

            row = {**base_row(cell_cfg, s.name, n, mode, dtype), "series": s.label}
            if s.name == "softmax":
                row["sdpa_backend"] = s.sdpa
            reason = stopped.get((s.label, mode)) or cannot_run(
                cfg, s.name, n, mode, device, s.sdpa
            )
            if reason:
                row.update(status="skipped", reason=reason)
            else:
                row.update(measure_cell(cell_cfg, s.name, n, mode, device, dtype, s.sdpa, phase))
                row.update(roofline.rates(row, peak, cfg.model))
                if row["status"] == "oom":
                    stopped[(s.label, mode)] = f"oom at N={n}"
                elif steady_s(row, cfg.warmup) > cfg.budget_s:
                    stopped[(s.label, mode)] = f"over the {cfg.budget_s:g} s budget at N={n}"
            rows.append(row)
            tracker.log({k: v for k, v in row.items() if k != "options"})
            lines.done(index, outcome(row), row.get("wall_s"))
            progress.update(advance=1)
    if cfg.sdpa_backend == "auto" and "softmax" in cfg.attentions:
        fastest = fastest_softmax(rows)
        for row in fastest:
            tracker.log({k: v for k, v in row.items() if k != "options"})
        last = max(i for i, r in enumerate(rows) if r["attention"] == "softmax")
        rows[last + 1 : last + 1] = fastest
    return rows


def steady_s(row: dict[str, Any], warmup: int) -> float:
    """What the cell's calls take without one-off compilation: the median call times the calls
    made (warm-up, timed, the memory pass), capped by the cell's real wall time."""
    calls = warmup + (row.get("repeats") or 0) + 1
    return min(row.get("wall_s") or 0.0, (row.get("ms_median") or 0.0) / 1000 * calls)


def outcome(row: dict[str, Any]) -> str:
    if row["status"] == "ok":
        return f"{row['ms_median']:.4g} ms"
    return row["status"] + (f" ({row['reason']})" if row.get("reason") else "")


def fastest_softmax(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (seq_len, mode): the fastest ok ``softmax[...]`` row, as series ``softmax`` (what every
    ratio divides by); where none ran, a row saying what each backend did."""
    groups: dict[tuple[int, str], list[dict[str, Any]]] = {}
    for row in rows:
        if row["attention"] == "softmax" and row["series"].startswith("softmax["):
            groups.setdefault((row["seq_len"], row["mode"]), []).append(row)
    out = []
    for group in groups.values():
        ok = [r for r in group if r["status"] == "ok" and r.get("ms_median") is not None]
        tried = ", ".join(f"{r['sdpa_backend']} {_short(r)}" for r in group)
        if ok:
            best = min(ok, key=lambda r: r["ms_median"])
            out.append({**best, "series": "softmax", "fastest_of": tried})
        else:
            statuses = {r["status"] for r in group}
            status = "oom" if statuses == {"oom"} else "error" if "error" in statuses else "skipped"
            out.append({**group[0], "series": "softmax", "status": status, "sdpa_backend": None,
                        "reason": f"no SDPA backend ran: {tried}", "fastest_of": tried})  # fmt: skip
    return out


def _short(row: dict[str, Any]) -> str:
    return f"{row['ms_median']:.4g} ms" if row["status"] == "ok" else row["status"]


def base_row(cfg: ScaleConfig, name: str, n: int, mode: str, dtype: torch.dtype) -> dict[str, Any]:
    model = cfg.scope == "model"
    return {
        "attention": name, "seq_len": n, "mode": mode, "causal": cfg.causal,
        "ms_median": None, "ms_p20": None, "ms_p80": None, "peak_mib": None,
        "status": "ok", "reason": None, "batch": cfg.batch_size,
        "heads": cfg.model.heads if model else cfg.heads,
        "head_dim": cfg.model.head_dim if model else cfg.head_dim,
        "dtype": dtype_name(dtype), "scope": cfg.scope,
        "model": cfg.model.name if model else None, "options": cfg.options.get(name, {}),
        "compile": compile_backend(cfg.compile), "backend": None, "sdpa_backend": None,
    }  # fmt: skip


def shape_text(cfg: ScaleConfig) -> str:
    """What one cell runs: one attention call (layer scope) or one training step of a model."""
    if cfg.scope == "model":
        m = cfg.model
        return (f"B={cfg.batch_size}, model {m.name} ({m.layers} layers x {m.hidden}, {m.heads} "
                f"heads), one training step (fwd+bwd+AdamW)")  # fmt: skip
    return f"B={cfg.batch_size} H={cfg.heads} d={cfg.head_dim}, one attention call"


def cannot_run(
    cfg: ScaleConfig, name: str, n: int, mode: str, device: torch.device, sdpa: str = "default"
) -> str | None:
    """A reason to skip a cell before trying it: no causal form, or too big for host memory."""
    cls = ATTENTIONS[name]
    if cfg.causal and not cls.supports_causal:
        return "no causal form"
    if device.type == "cpu":
        free = free_host_memory_bytes()
        need = estimated_bytes(cfg, name, n, mode, sdpa)
        if free is not None and need > cfg.memory_fraction * free:
            return f"needs ~{need / 2**30:.1f} GiB, over {cfg.memory_fraction:g} of free RAM"
    return None


def estimated_bytes(cfg: ScaleConfig, name: str, n: int, mode: str, sdpa: str = "default") -> float:
    """The dominant allocation: N x N fp32 scores for softmax on the math backend, else O(N d)
    buffers (SDPA's flash CPU kernel, and RA's SDPA-based products, stay linear in N)."""
    b, h, d, layers = cfg.batch_size, cfg.heads, cfg.head_dim, 1
    if cfg.scope == "model":  # every layer, plus weights, gradients and Adam moments
        h, d, layers = cfg.model.heads, cfg.model.head_dim, cfg.model.layers
    dense = name == "softmax" and sdpa == "math"
    per_layer = 4 * b * h * n * n * 3 if dense else 4 * b * h * n * d * 32
    weights = 16 * 12 * cfg.model.layers * cfg.model.hidden**2 if cfg.scope == "model" else 0
    return per_layer * layers * (2 if mode == "fwdbwd" else 1) + weights


def measure_cell(cfg, name, n, mode, device, dtype, sdpa="default", phase=None) -> dict[str, Any]:
    """Time and (on CUDA) peak memory of one cell; OOM and other failures become statuses."""
    start = time.perf_counter()
    fn = None
    say = phase or (lambda what: None)
    try:
        fn = make_call(cfg, name, n, mode, device, dtype)
        # the pinned backend is softmax's; other mechanisms' internal SDPA calls dispatch freely
        with sdpa_backend(sdpa if name == "softmax" else "default"):
            timing = time_call(
                fn, device, warmup=cfg.warmup, min_time_s=cfg.min_time_s,
                max_repeats=cfg.max_repeats, on_call=say,
            )  # fmt: skip
            say("peak memory")
            memory = peak_memory_mib(fn, device)
        return {
            "backend": backends_used(fn),
            "ms_median": timing.ms_median, "ms_p20": timing.ms_p20, "ms_p80": timing.ms_p80,
            "peak_mib": memory and memory[0], "total_mib": memory and memory[1],
            "repeats": timing.repeats, "status": "ok",
            "wall_s": round(time.perf_counter() - start, 2),
        }  # fmt: skip
    except torch.OutOfMemoryError:
        return {"status": "oom", "reason": "out of memory"}
    except BackendUnavailable as err:  # an explicit backend this device cannot run
        return {"status": "skipped", "reason": str(err)}
    except Exception as err:  # any other failure (a kernel that does not compile): a row
        message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        return {"status": "error", "reason": message[:300]}
    finally:
        del fn
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()


def make_call(cfg: ScaleConfig, name, n, mode, device, dtype) -> Callable[[], None]:
    """The closure one cell times: an attention layer, or a whole-model training step."""
    torch.manual_seed(cfg.seed)
    options = cfg.options.get(name, {})
    # compiled over several lengths: one dynamic-shape graph per mechanism, not one per length
    dynamic = True if len(cfg.lengths()) > 1 else None
    if cfg.scope == "model":
        model_cfg = dataclasses.replace(cfg.model, causal=cfg.causal)
        attention = AttentionConfig(name, options)
        return model_call(
            model_cfg, attention, batch=cfg.batch_size, n=n, mode=mode, device=device, dtype=dtype,
            compile=cfg.compile, dynamic=dynamic,
        )  # fmt: skip
    return layer_call(
        name, options, batch=cfg.batch_size, heads=cfg.heads, head_dim=cfg.head_dim, n=n,
        causal=cfg.causal, mode=mode, device=device, dtype=dtype, compile=cfg.compile,
        dynamic=dynamic,
    )  # fmt: skip
