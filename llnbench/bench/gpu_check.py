"""``make gpu-check``: the whole GPU validation in one run of at most 8 minutes, one summary table.

    python -m llnbench.bench.gpu_check [--out DIR] [--wheels DIR] [--budget-s 480] [--skip a,b]
    python -m llnbench.bench.gpu_check --dry-run --out DIR     # the same steps, tiny, on CPU

Steps, in order, each with its own time budget and a hard overall deadline (a step that does not
fit in what is left is skipped and says so): install the [gpu] extra (and this project's own
missing dependencies) without touching torch; ``tests/test_gpu.py``; ``llnbench scale``
bidirectional and causal, bf16, N = 1k..64k, for softmax (SDPA flash), LLN on every backend,
LLN+Diag, Performer and Nyströmformer; a bf16 NaN probe at 64k; ``scale --scope model`` to 16k;
200 steps of ``model=base`` bf16 pretraining on the embedded corpus at blocks of 512 and 4096.
Everything goes under one folder (default ``runs/gpu-check/<stamp>/``): each step's run
directory and log, ``summary.json``, ``summary.md`` (the table printed at the end) and
``gpu-check.tar.gz`` (all of it but checkpoints, for machines that return few files).

Without CUDA it says so and exits 0 having run nothing. ``--dry-run`` runs every step at tiny
sizes on CPU, in this process (installs nothing), so a typo fails here and not on the GPU.

On a lent machine that reaches no registry: ``make gpu-wheels`` here (fills ``.whl/``), carry
``.whl``, and run ``make gpu-check GPU_CHECK_ARGS="--wheels .whl --export $OUT"`` (or
``python3 -m llnbench.bench.gpu_check ...`` where there is no make); ``--export`` copies the
three result files flat, for tools that bring back only a few files.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llnbench.bench.gpu_summary import goals, markdown, pretrain_rows, versions_line

BUDGET_S = 480.0
# import name -> requirement; what the GPU steps import beyond torch (wandb and datasets are
# not needed: W&B is disabled and the embedded corpus is read without datasets)
NEEDED = {
    "hydra": "hydra-core>=1.3.2",
    "omegaconf": "omegaconf>=2.3",
    "antlr4": "antlr4-python3-runtime==4.9.3",
    "einops": "einops",
    "triton": "triton>=3.0",
    "fla": "fla-core>=0.6.0",
    "typer": "typer>=0.12",
    "rich": "rich>=13",
    "tokenizers": "tokenizers>=0.19",
    "matplotlib": "matplotlib>=3.8",
    "pytest": "pytest>=8",
}
BIDIR = "softmax,lln,lln_diag,performer,nystrom"


@dataclass
class Step:
    name: str
    budget_s: float
    argv: list[str]  # llnbench CLI arguments, or a module + arguments for kind "module"
    kind: str = "llnbench"  # llnbench | module | install | probe
    status: str = "pending"
    seconds: float = 0.0
    detail: str = ""
    env: dict[str, str] = field(default_factory=dict)


def overrides(values: dict[str, Any]) -> list[str]:
    return [f"{k}={_value(v)}" for k, v in values.items()]


def _value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (list, tuple)):
        return "[" + ",".join(map(str, v)) + "]"
    return str(v)


def plan(out: Path, dry: bool) -> list[Step]:
    """The steps with their arguments: GPU sizes, or the same keys at tiny CPU sizes (dry run)."""
    timing = {"warmup": 3, "min_time_s": 0.2, "max_repeats": 10, "budget_s": 15.0,
              "wandb.mode": "disabled"}  # fmt: skip
    gpu = {"device": "cuda", "dtype": "bf16", "min_len": 1024, "max_len": 65536}
    tiny = {"device": "cpu", "dtype": "fp32", "min_len": 64, "max_len": 64, "heads": 2,
            "warmup": 1, "min_time_s": 0, "max_repeats": 2}  # fmt: skip
    layer = {**timing, "mode": "fwdbwd", "attentions": BIDIR.split(","), **(tiny if dry else gpu)}
    bidir = {**layer, "backends": ["torch", "triton"], "run_dir": out / "scale-bidir"}
    causal = {
        **layer,
        "causal": True,
        "backends": ["torch", "fla"],
        "run_dir": out / "scale-causal",
    }
    model = {**layer, "scope": "model", "attentions": ["softmax", "lln", "lln_diag"],
             "min_len": 1024, "max_len": 16384, "run_dir": out / "scale-model"}  # fmt: skip
    model.pop("heads", None)
    if dry:
        model.update({"min_len": 32, "max_len": 32, "model.layers": 1, "model.hidden": 64,
                      "model.heads": 1, "model.ffn": 128})  # fmt: skip
    # budgets (s) add up to BUDGET_S - 10; the overall deadline cuts what overruns
    steps = [
        Step("install", 30, [], kind="install"),
        Step(
            "tests",
            120,
            ["pytest", "-q", "-p", "no:cacheprovider", "tests/test_gpu.py"],
            kind="module",
        ),
        Step("scale-bidir", 90, ["scale", *overrides(bidir)]),
        Step("scale-causal", 70, ["scale", *overrides(causal)]),
        Step(
            "probe-64k", 20, [str(out / "probe-64k.json"), "256" if dry else "65536"], kind="probe"
        ),
        Step("scale-model", 60, ["scale", *overrides(model)]),
    ]
    for block, batch in ((512, 16), (4096, 4)):
        train = {"attention": "lln", "model": "base", "model.max_len": block, "block_size": block,
                 "trainer.batch_size": batch, "trainer.max_steps": 200, "trainer.lr": 1e-4,
                 "trainer.log_every": 20, "trainer.eval_every": 200,
                 "trainer.checkpoint_every": 200, "trainer.precision": "bf16",
                 "trainer.device": "cuda", "eval_blocks": 64, "wandb.mode": "disabled",
                 "run_dir": out / f"pretrain-lln-{block}"}  # fmt: skip
        if dry:
            train.update({"model": "tiny", "model.max_len": 64, "block_size": 64,
                          "trainer.max_steps": 2, "trainer.batch_size": 2, "eval_blocks": 2,
                          "trainer.precision": "fp32", "trainer.device": "cpu"})  # fmt: skip
        steps.append(Step(f"pretrain-{block}", 40, ["pretrain", *overrides(train)]))
    for step in steps:  # the fla autotuner's short list (see attention/kernels/fla_causal.py)
        step.env = {"LLNBENCH_FLA_AUTOTUNE": "short", "PYTHONUNBUFFERED": "1"}
    return steps


# -- running ------------------------------------------------------------------------------------


def missing_modules() -> list[str]:
    return [name for name in NEEDED if importlib.util.find_spec(name) is None]


def install(step: Step, out: Path, wheels: Path | None, dry: bool) -> None:
    """pip-install what is missing, never touching the torch that is there (a constraint pins it)."""
    import torch

    missing = missing_modules()
    if not missing:
        step.status, step.detail = "ok", "nothing missing"
        return
    reqs = [NEEDED[m] for m in missing]
    constraints = out / "constraints.txt"
    constraints.write_text(f"torch=={torch.__version__}\n")
    cmd = [sys.executable, "-m", "pip", "install", "--quiet", "-c", str(constraints), *reqs]
    if wheels is not None:
        cmd[4:4] = ["--no-index", "--find-links", str(wheels)]
    if dry:
        step.status, step.detail = "skipped", "dry run; would run: " + " ".join(cmd)
        return
    run_subprocess(step, cmd, out)
    still = missing_modules()
    if step.status == "ok" and still:
        step.status, step.detail = "error", f"still missing after pip: {', '.join(still)}"
    elif step.status == "ok":
        step.detail = f"installed {', '.join(reqs)}"


def run_subprocess(step: Step, cmd: list[str], out: Path, timeout: float | None = None) -> None:
    log = out / "logs" / f"{step.name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **step.env}
    with log.open("w") as handle:
        handle.write(" ".join(cmd) + "\n")
        handle.flush()
        try:
            proc = subprocess.run(cmd, stdout=handle, stderr=subprocess.STDOUT, env=env,
                                  timeout=timeout or step.budget_s, cwd=Path.cwd())  # fmt: skip
        except subprocess.TimeoutExpired:
            step.status, step.detail = "timeout", f"over its {timeout or step.budget_s:.0f} s"
            return
    tail = [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip()][-1:]
    step.status = "ok" if proc.returncode == 0 else "error"
    step.detail = tail[0][:200] if tail else ""


def run_in_process(step: Step) -> None:
    """Dry run: the llnbench CLI in this process (no interpreter start-up per step)."""
    from llnbench.cli import app

    old = {k: os.environ.get(k) for k in step.env}
    os.environ.update(step.env)
    try:
        app(step.argv, standalone_mode=False)
        step.status = "ok"
    except SystemExit as exc:
        step.status = "ok" if exc.code in (0, None) else "error"
        step.detail = f"exit {exc.code}"
    except Exception as exc:
        step.status, step.detail = "error", f"{type(exc).__name__}: {exc}"[:300]
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def probe(path: Path, n: int, device: str) -> dict[str, Any]:
    """bf16 LLN forward + backward at length n on every backend: finite outputs and gradients."""
    import torch

    from llnbench.attention import build_attention

    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    results: dict[str, Any] = {}
    for causal, backends in ((False, ("torch", "triton")), (True, ("torch", "fla"))):
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
                results[key] = {"finite": None, "error": f"{type(exc).__name__}: {exc}"[:200]}
    path.write_text(json.dumps(results, indent=1))
    return results


def run_steps(steps: list[Step], out: Path, *, dry: bool, wheels: Path | None,
              budget_s: float, skip: set[str]) -> None:  # fmt: skip
    deadline = time.monotonic() + budget_s
    for step in steps:
        left = deadline - time.monotonic()
        start = time.monotonic()
        if step.name in skip:
            step.status, step.detail = "skipped", "--skip"
        elif left < min(step.budget_s, 20):
            step.status, step.detail = "skipped", f"deadline: {left:.0f} s left of {budget_s:.0f}"
        elif step.kind == "install":
            install(step, out, wheels, dry)
        elif step.kind == "probe":
            target = "cpu" if dry else "cuda"
            if dry:
                probe(Path(step.argv[0]), int(step.argv[1]), target)
                step.status = "ok"
            else:
                cmd = [sys.executable, "-m", "llnbench.bench.gpu_check", "--probe", *step.argv]
                run_subprocess(step, cmd, out, timeout=min(step.budget_s, left))
        elif step.kind == "module":
            argv = [*step.argv, "--collect-only"] if dry else step.argv
            run_subprocess(
                step, [sys.executable, "-m", *argv], out, timeout=min(step.budget_s, left)
            )
        elif dry:
            run_in_process(step)
        else:
            cmd = [sys.executable, "-m", "llnbench", *step.argv]
            run_subprocess(step, cmd, out, timeout=min(step.budget_s, left))
        step.seconds = round(time.monotonic() - start, 1)
        print(f"[gpu-check] {step.name}: {step.status} ({step.seconds:.0f} s) {step.detail}",
              flush=True)  # fmt: skip


def bundle(out: Path) -> Path:
    """Everything but checkpoints in one tarball (the device tool returns at most a few files)."""
    target = out / "gpu-check.tar.gz"
    with tarfile.open(target, "w:gz") as tar:
        for path in sorted(out.rglob("*")):
            if path.is_file() and path.suffix != ".pt" and path != target:
                tar.add(path, arcname=str(path.relative_to(out)))
    return target


def drop_checkpoints(out: Path) -> None:
    for path in out.rglob("*.pt"):
        path.unlink()


def main(argv: list[str] | None = None, *, cuda_available: Callable[[], bool] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gpu-check", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help="results folder")
    parser.add_argument("--wheels", type=Path, default=None,
                        help="install missing packages from this folder of wheels, offline")  # fmt: skip
    parser.add_argument("--budget-s", type=float, default=BUDGET_S, help="hard overall deadline")
    parser.add_argument("--skip", default="", help="comma list of step names to skip")
    parser.add_argument("--dry-run", action="store_true", help="tiny sizes on CPU, in-process")
    parser.add_argument("--export", type=Path, default=None,
                        help="also copy summary.md, summary.json and the tarball here (flat)")  # fmt: skip
    parser.add_argument("--probe", nargs=2, metavar=("JSON", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.probe:
        probe(Path(args.probe[0]), int(args.probe[1]), "cuda")
        return 0
    import torch

    has_cuda = (cuda_available or torch.cuda.is_available)()
    if not has_cuda and not args.dry_run:
        print("gpu-check needs CUDA (torch.cuda.is_available() is False): nothing was run. "
              "On CPU, `--dry-run` rehearses every step at tiny sizes.")  # fmt: skip
        return 0
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = (args.out or Path("runs") / "gpu-check" / stamp).resolve()
    out.mkdir(parents=True, exist_ok=True)
    wheels = args.wheels
    if wheels is None and Path(".whl").is_dir():
        wheels = Path(".whl").resolve()
    steps = plan(out, args.dry_run)
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    unknown = skip - {s.name for s in steps}
    if unknown:
        print(f"gpu-check: unknown step {sorted(unknown)[0]!r}; steps: "
              f"{', '.join(s.name for s in steps)}", file=sys.stderr)  # fmt: skip
        return 2
    start = time.monotonic()
    run_steps(steps, out, dry=args.dry_run, wheels=wheels, budget_s=args.budget_s, skip=skip)
    drop_checkpoints(out)
    device = "CPU (dry run)" if args.dry_run else torch.cuda.get_device_name(0)
    lens = (64, 64, (32, 32)) if args.dry_run else (65536, 16384, (4096, 16384))
    goal_rows = goals(out, lens[0], lens[1], lens[2])
    pretrain = pretrain_rows(out)
    text = markdown(device, versions_line(), steps, goal_rows, pretrain)
    (out / "summary.md").write_text(text)
    summary = {"device": device, "versions": versions_line(), "wall_s": round(time.monotonic() - start, 1),
               "budget_s": args.budget_s, "steps": [vars(s) for s in steps], "goals": goal_rows,
               "pretrain": pretrain}  # fmt: skip
    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
    tarball = bundle(out)
    if args.export is not None:
        args.export.mkdir(parents=True, exist_ok=True)
        for path in (out / "summary.md", out / "summary.json", tarball):
            shutil.copy2(path, args.export / path.name)
    print(text)
    print(f"gpu-check: {summary['wall_s']:.0f} s; results in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
