"""Random kills, then reruns: every rerun must resume, and the finished curve must equal a clean run's.

    python tests/stress/kill_resume.py --kills 20                 # kill -9 at random moments
    python tests/stress/kill_resume.py --kills 5 --signal term    # SIGTERM: exit 143 each time
    python tests/stress/kill_resume.py --kills 20 --job glue      # fine-tuning (one seed)
    make kill-test                                                # pretrain and glue, 20 each

One clean run first (the reference, and its duration T). Then the same command on a second run
directory, killed at random moments: every other kill at a time drawn uniformly from (0, T)
(start-up, tokenising, training, a checkpoint or metrics write, an evaluation, the final files),
the others once a randomly drawn later step is logged, plus up to 0.3 s (inside training, where a
checkpoint or an append may be in flight). The same command is started again after every kill; a rerun that fails on its own (a checkpoint it cannot read, a metrics
line it cannot parse, a lock it cannot take) stops the script with its stderr. When a rerun
finishes before its kill, its logged curve is compared with the reference and a fresh run
directory takes over, until the number of kills is reached; the last one is then run to the end.
A run compares equal when its metrics.jsonl equals the clean run's row by row: the same rows in
the same order (every step once), the same keys, every number within 1e-6 (timings aside), and
no temporary file of an interrupted write is left in the run directory. Exit status 0 when all
did.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/helpers.py

from helpers import tiny_pretrain_args

TIMING = ("train/tokens_per_s", "train/step_time_s", "train/peak_mem_mib")  # differ run to run
TOLERANCE = 1e-6


def job_args(job: str, work: Path, run_dir: Path) -> list[str]:
    """A command of a few seconds that checkpoints often, so kills land between checkpoints."""
    if job == "pretrain":
        return ["pretrain", *tiny_pretrain_args(
            work, run_dir, "attention=lln", "trainer.max_steps=40", "trainer.log_every=2",
            "trainer.eval_every=10", "trainer.checkpoint_every=5",
        )]  # fmt: skip
    return ["glue", "task=sst2_rt", "attention=lln", "model=tiny", "model.layers=1",
            "model.hidden=64", "model.heads=1", "model.ffn=128", "model.max_len=32",
            "max_length=32", "max_train_samples=160", "max_eval_samples=64",
            "trainer.batch_size=4", "trainer.epochs=1", "trainer.log_every=2",
            "trainer.checkpoint_every=5", "trainer.eval_every=20", "submission=false",
            "wandb.mode=disabled", f"run_dir={run_dir}"]  # fmt: skip


def metric_rows(run_dir: Path) -> list[dict]:
    """metrics.jsonl's rows in order, timings aside; a finished run's file must parse line by
    line."""
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k not in TIMING} for line in lines]


def differences(run_dir: Path, clean: list[dict]) -> list[str]:
    """How ``run_dir``'s finished files differ from the clean run's rows; [] when they do not."""
    mine = metric_rows(run_dir)
    out = [f"left behind: {p.relative_to(run_dir)}" for p in sorted(run_dir.rglob(".*.tmp"))]
    if len(mine) != len(clean):
        steps = [r.get("step") for r in mine]
        doubled = sorted(
            {s for s in steps if steps.count(s) > [r.get("step") for r in clean].count(s)}
        )
        return [*out, f"{len(mine)} rows vs clean {len(clean)}"
                + (f" (steps logged too often: {doubled})" if doubled else "")]  # fmt: skip
    for number, (a, b) in enumerate(zip(mine, clean), start=1):
        if a.keys() != b.keys():
            out.append(f"row {number} (step {a.get('step')}): keys {sorted(a.keys() ^ b.keys())}")
            continue
        for key, x in a.items():
            y = b[key]
            numbers = isinstance(x, (int, float)) and isinstance(y, (int, float))
            if (abs(x - y) > TOLERANCE) if numbers else x != y:
                out.append(f"row {number} (step {a.get('step')}) {key}: {x} vs clean {y}")
    return out


def last_step(run_dir: Path) -> int | None:
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return None
    steps = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            steps.append(json.loads(line).get("step"))
        except ValueError:
            steps.append("torn")
    return steps[-1] if steps else None


def phase(out: str) -> str:
    """How far the killed process got, from what it printed."""
    if "resuming" in out:
        return (
            "had resumed (" + out.split("resuming ", 1)[1].split("\n", 1)[0].split(" at ")[-1] + ")"
        )
    if "run directory:" in out:
        return "had started a fresh run"
    return "was starting up"


def wait_and_kill(proc, run_dir: Path, sig, deadline, target, rng) -> bool:
    """Signal ``proc`` at ``deadline`` (perf_counter) or once ``target`` is logged; False when
    it ended first."""
    while proc.poll() is None:
        if deadline is not None and time.perf_counter() >= deadline:
            break
        if target is not None:
            step = last_step(run_dir)
            if isinstance(step, int) and step >= target:
                time.sleep(rng.uniform(0.0, 0.3))
                break
        time.sleep(0.01)
    if proc.poll() is not None:
        return False
    proc.send_signal(sig)
    return True


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--job", choices=["pretrain", "glue"], default="pretrain")
    parser.add_argument("--signal", choices=["kill", "term"], default="kill")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", type=Path, default=None, help="kept afterwards if given")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    sig = signal.SIGKILL if args.signal == "kill" else signal.SIGTERM
    work = args.workdir or Path(tempfile.mkdtemp(prefix="llnbench-kills-"))
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1",
           "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}  # fmt: skip

    def start(run_dir: Path) -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, "-m", "llnbench", *job_args(args.job, work, run_dir)],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip

    began = time.perf_counter()
    proc = start(work / "clean")
    out, err = proc.communicate()
    if proc.returncode != 0:
        print(f"the clean run failed:\n{err}")
        return 1
    duration = time.perf_counter() - began
    clean = metric_rows(work / "clean")
    print(f"{args.job}: clean run {duration:.1f} s, {len(clean)} metrics rows; "
          f"{args.kills} x SIG{sig.name[3:]} at uniform(0, {duration:.1f}) s")  # fmt: skip

    failures, kills, finished, runs = [], 0, 0, 1
    run_dir = work / f"killed{runs}"
    steps = sorted({r["step"] for r in clean if isinstance(r.get("step"), int)})
    while kills < args.kills:
        before = last_step(run_dir)
        later = [step for step in steps if not isinstance(before, int) or step > before]
        proc = start(run_dir)
        if kills % 2 == 0:  # any moment of the run, start-up included
            delay = rng.uniform(0.0, duration)
            deadline, target, when = time.perf_counter() + delay, None, f"after {delay:5.2f} s"
        elif later:  # inside training: once a random later step is logged, plus up to 0.3 s
            target = rng.choice(later)
            deadline, when = None, f"at step ~{target}"
        else:  # training is over in this run directory: let it finish, then start another
            deadline = target = None
        killed = (deadline or target) is not None and wait_and_kill(
            proc, run_dir, sig, deadline, target, rng
        )
        out, err = proc.communicate()
        if killed:
            kills += 1
            # SIGTERM: 143 from llnbench's handler; -15 (a shell's 143 too) when it lands in the
            # interpreter's start-up or shut-down, outside the command, where Python's default
            # action applies and nothing is being written
            expected = (-signal.SIGKILL,) if sig == signal.SIGKILL else (143, -signal.SIGTERM)
            print(f"kill {kills:2d} {when:>15}: logged step {before} -> {last_step(run_dir)}, "
                  f"{phase(out)}, exit {proc.returncode}"
                  + (f": {err.strip().splitlines()[-1]}" if sig == signal.SIGTERM and err.strip()
                     else ""))  # fmt: skip
            if proc.returncode not in (*expected, 0):
                failures.append(f"kill {kills}: exit {proc.returncode}: {err.strip()[-500:]}")
            continue
        if proc.returncode != 0:  # the rerun failed on its own: the kill left a state it refuses
            failures.append(f"{run_dir.name}: rerun failed (exit {proc.returncode}): "
                            f"{err.strip()[-800:]}")  # fmt: skip
            break
        finished += 1
        problems = differences(run_dir, clean)
        print(f"  {run_dir.name} finished: "
              f"{'equal to the clean run' if not problems else problems[:3]}")  # fmt: skip
        failures += [f"{run_dir.name}: {p}" for p in problems]
        runs += 1
        run_dir = work / f"killed{runs}"
    if not failures:  # the last run, to its end
        proc = start(run_dir)
        out, err = proc.communicate()
        if proc.returncode != 0:
            failures.append(f"{run_dir.name}: final rerun failed: {err.strip()[-800:]}")
        else:
            finished += 1
            problems = differences(run_dir, clean)
            failures += [f"{run_dir.name}: {p}" for p in problems]
            print(f"  {run_dir.name} finished: "
                  f"{'equal to the clean run' if not problems else problems[:3]}")  # fmt: skip
    print(
        f"{kills} kills over {runs} run directories, {finished} finished runs compared: "
        + ("all equal to the clean run" if not failures else f"{len(failures)} FAILURES")
    )
    for failure in failures:
        print(f"  FAIL {failure}")
    if args.workdir is None:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
