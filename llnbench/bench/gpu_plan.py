"""The steps of ``make gpu-check``: what each runs, at GPU sizes or (dry run) tiny CPU sizes.

Pure data: :func:`plan` lists :class:`Step` s; ``gpu_check`` runs them, ``gpu_summary`` reads what
they wrote. Every step is a subprocess (``python -m llnbench ...`` or ``python -m
llnbench.bench.gpu_probes ...``), on the GPU and in the dry run alike, so the rehearsal runs the
very commands the GPU will.

Budgets (seconds) add up to at most ``BUDGET_S - 10``; the measurements come first and
``tests/test_gpu.py`` last, with whatever time is left (at least ``TESTS_MIN_S``). The dry run
gives every step ``DRY_RUN_SLACK`` times its budget and has no overall deadline: on a shared
CPU a tiny step still pays an interpreter start, imports and compilation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BUDGET_S = 480.0
TESTS_MIN_S = 20.0
DRY_RUN_SLACK = 10.0
LENGTHS = {"bidir": 65536, "mid": 16384, "model": (4096, 16384, 65536), "longest": (131072, 262144)}
TINY = {"bidir": 64, "mid": 64, "model": (32, 64), "longest": (128, 256)}


@dataclass
class Step:
    name: str
    budget_s: float
    argv: list[str]  # llnbench CLI arguments, or a module + arguments for kind "module"
    kind: str = "llnbench"  # llnbench | module | install
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


def lengths(dry: bool) -> dict[str, Any]:
    """The N of each goal: 64k / 16k layer cells, compiled model rows, the longest model step."""
    return TINY if dry else LENGTHS


def plan(out: Path, dry: bool) -> list[Step]:
    """The steps with their arguments: GPU sizes, or the same keys at tiny CPU sizes (dry run)."""
    timing = {"warmup": 3, "min_time_s": 0.2, "max_repeats": 10, "budget_s": 15.0,
              "wandb.mode": "disabled"}  # fmt: skip
    gpu = {"device": "cuda", "dtype": "bf16", "min_len": 1024, "max_len": 65536}
    tiny = {"device": "cpu", "dtype": "fp32", "min_len": 64, "max_len": 64, "heads": 2,
            "warmup": 1, "min_time_s": 0, "max_repeats": 2}  # fmt: skip
    # softmax on every SDPA backend (sdpa_backend=auto): the fastest per cell is the baseline
    layer = {**timing, "mode": "fwdbwd", "sdpa_backend": "auto", **(tiny if dry else gpu)}
    bidir = {**layer, "attentions": ["softmax", "lln", "lln_diag"], "backends": ["torch", "triton"],
             "run_dir": out / "scale-bidir"}  # fmt: skip
    causal = {**layer, "causal": True, "attentions": ["softmax", "lln"],
              "backends": ["torch", "triton", "fla"], "run_dir": out / "scale-causal"}  # fmt: skip
    n = lengths(dry)
    # compiled model=base train steps, LLN against softmax on PyTorch's own SDPA choice (cuDNN on
    # Hopper; one compile per mechanism: dynamic shapes serve every length)
    model = {**timing, "mode": "fwdbwd", "scope": "model", "attentions": ["lln", "softmax"],
             "compile": True, "sdpa_backend": "default", "seq_lens": list(n["model"]),
             "warmup": 2, "max_repeats": 5, "budget_s": 60.0, "run_dir": out / "scale-model",
             **({"device": "cuda", "dtype": "bf16"} if not dry else {})}  # fmt: skip
    if dry:
        model.update({"device": "cpu", "dtype": "fp32", "compile": "eager", "warmup": 1,
                      "min_time_s": 0, "max_repeats": 2, "model.layers": 1, "model.hidden": 64,
                      "model.heads": 1, "model.ffn": 128})  # fmt: skip
    device = ["--device", "cpu"] if dry else ["--device", "cuda"]

    def probe(kind: str, *ns: int, extra: tuple[str, ...] = ()) -> list[str]:
        path = str(out / ("probe-64k.json" if kind == "nan" else f"{kind}.json"))
        return ["llnbench.bench.gpu_probes", kind, path, "--n", *map(str, ns), *device, *extra]

    tiny_model = ("--tiny",) if dry else ()
    steps = [
        Step("install", 15, [], kind="install"),
        Step("scale-bidir", 60, ["scale", *overrides(bidir)]),
        Step("scale-causal", 50, ["scale", *overrides(causal)]),
        Step("probe-64k", 15, probe("nan", n["bidir"]), kind="module"),
        Step("profile", 35, probe("profile", n["mid"], n["bidir"]), kind="module"),
        Step("scale-model", 120, ["scale", *overrides(model)]),
        Step("longest", 45, probe("longest", *n["longest"], extra=tiny_model), kind="module"),
    ]
    for compiled in (False, True):
        block, batch = (64, 2) if dry else (4096, 4)
        train = {"attention": "lln", "model": "base", "model.max_len": block, "block_size": block,
                 "trainer.batch_size": batch, "trainer.max_steps": 60, "trainer.lr": 1e-4,
                 "trainer.log_every": 20, "trainer.eval_every": 60,
                 "trainer.checkpoint_every": 60, "trainer.precision": "bf16",
                 "trainer.device": "cuda", "trainer.compile": compiled, "eval_blocks": 64,
                 "wandb.mode": "disabled",
                 "run_dir": out / f"pretrain-lln-{block}{'-compiled' if compiled else ''}"}  # fmt: skip
        if dry:
            train.update({"model": "tiny", "trainer.max_steps": 2, "eval_blocks": 2,
                          "trainer.log_every": 1, "trainer.precision": "fp32",
                          "trainer.device": "cpu",
                          "trainer.compile": "eager" if compiled else False})  # fmt: skip
        name = "pretrain-compiled" if compiled else "pretrain"
        steps.append(Step(name, 75 if compiled else 35, ["pretrain", *overrides(train)]))
    tests = ["pytest", "-q", "-p", "no:cacheprovider", "tests/test_gpu.py"]
    steps.append(Step("tests", TESTS_MIN_S, [*tests, *(["--collect-only"] if dry else [])],
                      kind="module"))  # fmt: skip
    for step in steps:  # the fla autotuner's short list (see attention/kernels/fla_causal.py)
        step.env = {"LLNBENCH_FLA_AUTOTUNE": "short", "PYTHONUNBUFFERED": "1"}
        step.budget_s *= DRY_RUN_SLACK if dry else 1.0
    return steps
