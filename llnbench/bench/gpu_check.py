"""``make gpu-check``: the whole GPU validation in one run of at most 8 minutes, one summary table.

    python -m llnbench.bench.gpu_check [--out DIR] [--wheels DIR] [--budget-s 480] [--skip a,b]
    python -m llnbench.bench.gpu_check --dry-run --out DIR     # the same steps, tiny, on CPU

Steps (``bench/gpu_plan.py``), in order, each with its own time budget and a hard overall
deadline (a step that does not fit in what is left is skipped and says so): install what is
missing without touching torch; ``llnbench scale`` bidirectional and causal, bf16, N = 1k..64k,
softmax on every SDPA backend (the fastest per cell is the baseline), LLN on every backend (the
own causal Triton kernel included), LLN+Diag; a bf16 NaN probe at 64k; a profile per LLN layer
(kernel vs wall time, launches, CUDA-graph replay); compiled ``model=base`` train steps at 4k,
16k and 64k, LLN against compiled softmax; the longest bidirectional ``model=base`` step (128k,
256k); 60 steps of ``model=base`` bf16 pretraining at blocks of 4096 with and without
``trainer.compile``; ``tests/test_gpu.py`` with the time left. Everything goes under one folder
(default ``runs/gpu-check/<stamp>/``): each step's run directory and log, ``summary.json``,
``summary.md`` (the tables printed at the end, ready for the README's GPU section) and
``gpu-check.tar.gz`` (all of it but checkpoints, for machines that return few files).

Every step runs as a subprocess, the same commands on the GPU and in the dry run (which only
shrinks the sizes and runs on CPU), so a typo fails here and not on the GPU. Without CUDA and
without ``--dry-run`` it says so and exits 0 having run nothing.

On a lent machine that reaches no registry: ``make gpu-wheels`` here (fills ``.whl/``), carry
``.whl``, and run ``make gpu-check GPU_CHECK_ARGS="--export $OUT"``: the wheels are installed with
``pip install --no-index --no-deps --target .gpu-site .whl/*.whl`` and every step runs with
``PYTHONPATH=.gpu-site:.`` (where there is no make: ``PYTHONPATH=$PWD/.gpu-site:$PWD python3 -m
llnbench.bench.gpu_check --export $OUT``); ``--export`` copies the three result files flat, for
tools that bring back only a few files.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import importlib.util
import json
import math
import os
import shutil
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from llnbench.bench.gpu_plan import BUDGET_S, TESTS_MIN_S, Step, lengths, plan
from llnbench.bench.gpu_summary import goals, markdown, pretrain_rows, versions_line

# import name -> requirement; what the GPU steps import beyond torch (wandb and datasets are
# not needed: W&B is disabled and the embedded corpus is read without datasets)
NEEDED = {
    "hydra": "hydra-core>=1.3.2",
    "omegaconf": "omegaconf>=2.3",
    "antlr4": "antlr4-python3-runtime==4.9.3",
    "yaml": "pyyaml",
    "einops": "einops",
    "triton": "triton>=3.0",
    "fla": "fla-core>=0.6.0",
    "typer": "typer>=0.12",
    "rich": "rich>=13",
    "tokenizers": "tokenizers>=0.19",
    "matplotlib": "matplotlib>=3.8",
    "pytest": "pytest>=8",
}
SITE = ".gpu-site"  # where offline wheels go (--target), first on every step's PYTHONPATH


# -- running ------------------------------------------------------------------------------------


def missing_modules() -> list[str]:
    importlib.invalidate_caches()
    return [name for name in NEEDED if importlib.util.find_spec(name) is None]


def install(step: Step, out: Path, wheels: Path | None, dry: bool, site: Path) -> None:
    """What is missing, never touching the torch that is there: from a folder of wheels into
    ``site`` (no index, no dependencies: the folder holds them), else pip with torch pinned."""
    import torch

    missing = missing_modules()
    if not missing:
        step.status, step.detail = "ok", "nothing missing"
        return
    if wheels is not None:
        files = sorted(str(p) for p in Path(wheels).glob("*.whl"))
        cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--no-index", "--no-deps", "--upgrade",
               "--target", str(site), *files]  # fmt: skip
    else:
        constraints = out / "constraints.txt"
        constraints.write_text(f"torch=={torch.__version__}\n")
        reqs = [NEEDED[m] for m in missing]
        cmd = [sys.executable, "-m", "pip", "install", "--quiet", "-c", str(constraints), *reqs]
    if dry:
        step.status, step.detail = "skipped", "dry run; would run: " + " ".join(cmd)
        return
    run_subprocess(step, cmd, out, site=site)
    if str(site) not in sys.path:
        sys.path.insert(0, str(site))
    still = missing_modules()
    if step.status == "ok" and still:
        step.status, step.detail = "error", f"still missing after pip: {', '.join(still)}"
    elif step.status == "ok":
        step.detail = f"installed {', '.join(missing)}"


def child_env(step: Step, site: Path) -> dict[str, str]:
    """The step's environment: the offline site and the source tree first on PYTHONPATH."""
    path = [str(site), str(Path.cwd()), *filter(None, [os.environ.get("PYTHONPATH")])]
    return {**os.environ, **step.env, "PYTHONPATH": os.pathsep.join(path)}


def run_subprocess(
    step: Step, cmd: list[str], out: Path, timeout: float | None = None, *, site: Path
) -> None:
    log = out / "logs" / f"{step.name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    env = child_env(step, site)
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


def run_steps(steps: list[Step], out: Path, *, dry: bool, wheels: Path | None,
              budget_s: float, skip: set[str], site: Path) -> None:  # fmt: skip
    """In order against the deadline; the dry run (no deadline, independent tiny steps) runs
    its subprocesses side by side, one per core (up to 4)."""
    deadline = time.monotonic() + budget_s

    def run(step: Step) -> None:
        left = deadline - time.monotonic()
        if step.name == "tests" and math.isfinite(left):  # last: what the measurements left
            step.budget_s = max(left - 5, TESTS_MIN_S)
        start = time.monotonic()
        if step.name in skip:
            step.status, step.detail = "skipped", "--skip"
        elif left < min(step.budget_s, TESTS_MIN_S):
            step.status, step.detail = "skipped", f"deadline: {left:.0f} s left of {budget_s:.0f}"
        elif step.kind == "install":
            install(step, out, wheels, dry, site)
        else:
            head = ["-m"] if step.kind == "module" else ["-m", "llnbench"]
            cmd = [sys.executable, *head, *step.argv]
            run_subprocess(step, cmd, out, timeout=min(step.budget_s, left), site=site)
        step.seconds = round(time.monotonic() - start, 1)
        print(f"[gpu-check] {step.name}: {step.status} ({step.seconds:.0f} s) {step.detail}",
              flush=True)  # fmt: skip

    if not dry:
        for step in steps:
            run(step)
        return
    first, *middle, last = steps  # install before, tests after everything
    run(first)
    with ThreadPoolExecutor(max_workers=max(1, min(4, os.cpu_count() or 1))) as pool:
        list(pool.map(run, middle))
    run(last)


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
    parser.add_argument("--budget-s", type=float, default=None,
                        help=f"hard overall deadline (default {BUDGET_S:.0f}; dry run: none)")  # fmt: skip
    parser.add_argument("--skip", default="", help="comma list of step names to skip")
    parser.add_argument("--dry-run", action="store_true", help="every step at tiny sizes, on CPU")
    parser.add_argument("--export", type=Path, default=None,
                        help="also copy summary.md, summary.json and the tarball here (flat)")  # fmt: skip
    args = parser.parse_args(argv)
    if args.budget_s is None:
        args.budget_s = float("inf") if args.dry_run else BUDGET_S
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
    site = Path(SITE).resolve()
    steps = plan(out, args.dry_run)
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    unknown = skip - {s.name for s in steps}
    if unknown:
        print(f"gpu-check: unknown step {sorted(unknown)[0]!r}; steps: "
              f"{', '.join(s.name for s in steps)}", file=sys.stderr)  # fmt: skip
        return 2
    start = time.monotonic()
    run_steps(steps, out, dry=args.dry_run, wheels=wheels, budget_s=args.budget_s, skip=skip,
              site=site)  # fmt: skip
    drop_checkpoints(out)
    device = "CPU (dry run)" if args.dry_run else torch.cuda.get_device_name(0)
    goal_rows = goals(out, lengths(args.dry_run))
    pretrain = pretrain_rows(out)
    text = markdown(device, versions_line(), steps, goal_rows, pretrain, out, lengths(args.dry_run))
    (out / "summary.md").write_text(text)
    summary = {"device": device, "versions": versions_line(), "wall_s": round(time.monotonic() - start, 1),
               "budget_s": args.budget_s if math.isfinite(args.budget_s) else None, "steps": [vars(s) for s in steps], "goals": goal_rows,
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
