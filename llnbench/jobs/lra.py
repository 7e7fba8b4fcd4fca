"""``llnbench lra``: the encoder with a classification head trained from scratch on a generated
Long Range Arena task (the LRA protocol: no pretraining), with any attention.

    llnbench lra task=listops attention=lln            # CPU default: minutes, lengths < 256
    llnbench lra task=pathfinder32 attention=softmax   # 32×32 pixels = 1,024 tokens
    llnbench lra task=text attention=lln               # IMDb bytes (offline: the stand-in)
    llnbench lra task=listops data.export_dir=DIR      # also write the splits as LRA's files
    llnbench lra preset=lra_listops attention=lara     # the LRA sizes (length 2,000), GPU
    llnbench lra --multirun attention=softmax,lln,lln_diag,lara,performer trainer.seeds=[0,1]

Training is GLUE's fine-tuning machinery (``train.finetune.run_seed`` on the shared Trainer): one
folder per seed (``seed<k>/``: checkpoint.pt, best.pt, result.json, predictions), resume, seeds as
mean ± std. The best checkpoint by validation accuracy is scored on the test split. Beside accuracy
the run records training speed (steps/s from the logging intervals' mean train-step times: the
fastest interval's and the median; evaluation excluded) and the working memory of one training step (``bench.memory``), the three
axes of LRA's quality-speed-memory chart (``llnbench report``).
"""

from __future__ import annotations

import dataclasses
import functools
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from rich.markup import escape
from rich.table import Table

from llnbench.bench.machine import machine_info
from llnbench.bench.memory import working_memory_mib
from llnbench.config import Seed
from llnbench.console import console
from llnbench.data.batching import pad_batch
from llnbench.data.listops import PAD
from llnbench.data.lra import (
    LraData,
    LraDataConfig,
    LraTask,
    get_lra_task,
    load_lra,
    resolve_data,
    resolved_config,
)
from llnbench.data.lra_export import export_splits
from llnbench.data.lra_generate import worker_count
from llnbench.devices import dtype_name
from llnbench.jobs.glue import build_model, preflight
from llnbench.jobs.glue_report import mean_std, summarize_task
from llnbench.model.roberta import ModelConfig, count_parameters, human_count, shape_signature
from llnbench.runs import as_plain, open_run_dir, save_config
from llnbench.schema import AttentionConfig, WandbConfig
from llnbench.testing.outside import verify_outside_attention
from llnbench.tracking import Tracker, read_jsonl
from llnbench.train import distributed
from llnbench.train.config import resolve_precision
from llnbench.train.finetune import (
    SEED_KEYS,
    EncodedTask,
    FinetuneRun,
    FinetuneTrainerConfig,
    read_result,
    run_seed,
)

CURVES = "lra_curves.png"


@dataclass
class LraConfig:
    task: str = "listops"  # listops | pathfinder32 | pathfinder64 | text
    seed: Seed = 0  # the training seed when trainer.seeds is null
    run_dir: str | None = None
    attention: AttentionConfig = field(default_factory=AttentionConfig)
    model: ModelConfig = field(default_factory=ModelConfig)  # max_len, vocab_size: from the task
    data: LraDataConfig = field(default_factory=LraDataConfig)
    trainer: FinetuneTrainerConfig = field(default_factory=FinetuneTrainerConfig)
    wandb: WandbConfig = field(default_factory=WandbConfig)

    def validate(self) -> None:
        resolve_data(get_lra_task(self.task), self.data)  # unknown task, bad lengths, sizes
        worker_count(self.data.workers)

    def model_for(self, task: LraTask, sequence_length: int) -> ModelConfig:
        """The encoder shape with the task's vocabulary and positions for [CLS] + sequence."""
        return dataclasses.replace(self.model, max_len=sequence_length, vocab_size=task.vocab_size)

    def resolved(self) -> LraConfig:
        """This config with every value the task derives filled in (the model's positions and
        vocabulary, the trainer's recipe, the data's defaults): what runs, and what config.yaml
        and ``--print-config`` state. Generates nothing."""
        task = get_lra_task(self.task)
        sequence_length = resolve_data(task, self.data).sequence_length
        return dataclasses.replace(
            self,
            task=task.name,  # an alias (pathfinder) as the task it names
            model=self.model_for(task, sequence_length),
            data=resolved_config(task, self.data),
            trainer=self.trainer.with_recipe(task.name, task.recipe),
        )


def run(cfg: LraConfig) -> Path:
    dist, device = distributed.setup(cfg.trainer.device)
    try:
        return _run(cfg, dist, device)
    finally:
        distributed.teardown(dist)


def _run(cfg: LraConfig, dist: distributed.DistInfo, device: torch.device) -> Path:
    task = get_lra_task(cfg.task)
    verify_outside_attention(
        cfg.attention, num_heads=cfg.model.heads, head_dim=cfg.model.head_dim, device=device
    )
    cfg = cfg.resolved()
    trainer_cfg = cfg.trainer
    seeds = cfg.trainer.seeds or [cfg.seed]
    if dist.is_main:  # rank 0 generates and fills the cache; the others then read it
        data = load_data(task.name, cfg.data)
    distributed.barrier(dist)
    if not dist.is_main:
        data = load_lra(task.name, cfg.data)
    model_cfg = cfg.model
    precision = dtype_name(resolve_precision(trainer_cfg.precision, device))
    machine = machine_info(device, precision)  # at the start: the commit that trains
    standin = "-standin" if data.resolved.standin else ""  # the run's folder says it, too
    label = f"{task.name}{standin}-{cfg.attention.name}"
    run_dir = Path(distributed.broadcast(
        str(open_run_dir("lra", label, cfg.run_dir, cfg, SEED_KEYS)) if dist.is_main else None,
        dist,
    ))  # fmt: skip
    folders = {seed: run_dir / f"seed{seed}" for seed in seeds}
    signature = {
        **shape_signature(model_cfg, cfg.attention),
        "task": task.name,
        "data": data.resolved.describe(),
    }
    # a damaged result.json: one line, before preflight reads it
    for folder in folders.values():
        read_result(folder)
    preflight(run_dir, dict.fromkeys(folders.values(), signature), cfg.trainer.resume)
    config = as_plain(cfg)
    tracker = Tracker(run_dir, job="lra", name=label, config=config, wandb_cfg=cfg.wandb,
                      enabled=dist.is_main, resume=True)  # fmt: skip
    encoded = EncodedTask(
        data.spec,
        train=data.splits["train"],
        validation={"validation": data.splits["validation"], "test": data.splits["test"]},
        test={},
    )
    new_model = functools.partial(build_model, data.spec, model_cfg, cfg.attention, PAD)
    ft = FinetuneRun(
        encoded, new_model, PAD, trainer_cfg, signature, config, device,
        dist, submission=False,
    )  # fmt: skip
    if dist.is_main:
        save_config(run_dir, cfg)
        describe_run(cfg, data, model_cfg, trainer_cfg, seeds, device, run_dir)
    per_seed: dict[int, dict[str, Any]] = {}
    for seed in seeds:
        done = read_result(folders[seed])
        if done is not None and dist.is_main:
            console.print(f"{task.name} seed {seed}: finished earlier, reusing {folders[seed]}",
                          markup=False)  # fmt: skip
        per_seed[seed] = done or run_seed(ft, seed, folders[seed], tracker)  # type: ignore[assignment]
    if not dist.is_main:
        return run_dir
    rows = tracker_rows(tracker, task.name)
    speeds = {seed: steps_per_second(rows, seed) for seed in seeds}
    memory, shape = step_memory_mib(ft, trainer_cfg.batch_size or 1)
    results = summarize(
        cfg, data, encoded, model_cfg, trainer_cfg, per_seed, speeds, (memory, shape), machine
    )
    console.print(result_table(results))
    console.print(memory_line(results))
    write_curves(results, run_dir / CURVES)
    tracker.image("lra/curves", run_dir / CURVES)
    tracker.table("lra/results", [
        {"seed": int(s), "steps_per_s": r["steps_per_s"], **r["metrics"]}
        for s, r in results["seeds"].items()
    ])  # fmt: skip
    tracker.finish(results)
    console.print(f"run directory: [bold]{escape(str(run_dir))}[/bold]")
    return run_dir


def load_data(task: str, cfg: LraDataConfig) -> LraData:
    """``load_lra`` with progress while generating (a bar on a terminal, lines in a log) and one
    line on what was loaded."""
    from llnbench.console import err_console
    from llnbench.progress import ProgressBar

    sizes = resolve_data(get_lra_task(task), cfg).sizes
    total = sum(sizes.values())
    bar = ProgressBar(f"generating {task}", total, unit="example", console=err_console,
                      every=max(1, total // 10), transient=True)  # fmt: skip
    done: dict[str, int] = {}

    def report(split: str, count: int, _: int) -> None:
        done[split] = count
        bar.update(completed=sum(done.values()))

    with bar:
        data = load_lra(task, cfg, report)
    counts = ", ".join(f"{s} {len(data.splits[s]):,}" for s in ("train", "validation", "test"))
    how = "from cache" if data.from_cache else "built"
    console.print(
        f"data {task} ({data.resolved.label}): {counts}; {how} in {data.seconds:.1f} s "
        f"({data.cache_path})", markup=False,
    )  # fmt: skip
    if data.resolved.standin:
        console.print(
            "note: this is the offline STAND-IN for LRA's Text task (Rotten Tomatoes snippets, "
            "NOT IMDb); its accuracy is not an LRA Text result", markup=False,
        )  # fmt: skip
    if cfg.export_dir:
        written = export_splits(data.task.kind, data.resolved.describe(), data.arrays,
                                cfg.export_dir)  # fmt: skip
        names = ", ".join(p.name for p in written)
        console.print(f"exported {task} in LRA's formats to {cfg.export_dir}: {names}",
                      markup=False)  # fmt: skip
    data.arrays = {}  # the raw arrays served the export; training holds the encoded splits
    return data


def tracker_rows(tracker: Tracker, task: str) -> list[dict[str, Any]]:
    """This task's rows of the run's metrics.jsonl (a torn line is skipped, as on resume)."""
    rows, _ = read_jsonl(tracker.metrics_path)
    return [row for row in rows if row.get("task") == task]


def steps_per_second(rows: list[dict[str, Any]], seed: int) -> dict[str, float | None]:
    """Training speed of one seed from its logging intervals' mean train-step times: ``best``
    = 1 / the fastest interval's (other jobs on a shared machine only ever slow an interval
    down, so the fastest is the least disturbed) and ``median`` = 1 / their median."""
    times = [
        row["train/step_time_s"]
        for row in rows
        if row.get("seed") == seed and row.get("train/step_time_s")
    ]
    if not times:
        return {"best": None, "median": None}
    return {"best": 1.0 / min(times), "median": 1.0 / statistics.median(times)}


def step_memory_mib(ft: FinetuneRun, batch_size: int) -> tuple[float | None, list[int]]:
    """Working memory of one training step (forward, loss, backward) on the batch of the
    ``batch_size`` longest training sequences, with fresh weights (``bench.memory``); and that
    batch's shape."""
    split = ft.data.train
    longest = sorted(range(len(split)), key=lambda i: len(split.input_ids[i]))[-batch_size:]
    batch = pad_batch([split[i] for i in longest], PAD)
    ids, mask, labels = (batch[k].to(ft.device) for k in ("input_ids", "attention_mask", "labels"))
    torch.manual_seed(0)
    model = ft.new_model().to(ft.device).train()
    dtype = resolve_precision(ft.trainer.precision, ft.device)

    def step() -> None:
        with torch.autocast(ft.device.type, dtype=dtype, enabled=dtype != torch.float32):
            loss, _ = model(ids, labels, mask)
        loss.backward()
        model.zero_grad(set_to_none=True)

    return working_memory_mib(step, ft.device), list(ids.shape)


def summarize(
    cfg: LraConfig, data: LraData, encoded: EncodedTask, model_cfg: ModelConfig,
    trainer: FinetuneTrainerConfig,
    per_seed: dict[int, dict[str, Any]], speeds: dict[int, dict[str, float | None]],
    memory: tuple[float | None, list[int]], machine: dict[str, Any],
) -> dict[str, Any]:  # fmt: skip
    """results.json: accuracy (test of the best-validation checkpoint, and validation), speed
    and memory, each with the seeds behind it."""
    encoded_summary = summarize_task(data.spec, encoded, trainer, per_seed)
    for seed, entry in encoded_summary["seeds"].items():
        entry["steps_per_s"] = speeds[int(seed)]["best"]
        entry["steps_per_s_median"] = speeds[int(seed)]["median"]
    test, test_std = (
        encoded_summary["mean"]["accuracy_test"],
        encoded_summary["std"]["accuracy_test"],
    )
    speed, speed_std = mean_std([v["best"] for v in speeds.values()])
    median_speed, median_std = mean_std([v["median"] for v in speeds.values()])
    return {
        "task": data.task.name,
        "description": data.task.description,
        "attention": cfg.attention.to_dict(),
        "model": dataclasses.asdict(model_cfg),
        "parameters": parameter_count(data, model_cfg, cfg.attention),
        "seq_len": data.resolved.sequence_length,
        "data": data.summary(),
        "data_label": data.resolved.label,
        "standin": data.resolved.standin,
        "difficulty": data.resolved.generator.get("difficulty"),
        "pooling": model_cfg.pooling,
        "seeds": encoded_summary["seeds"],
        "seed_list": list(per_seed),
        "recipe": {**encoded_summary["recipe"], **optimiser(trainer)},
        "steps": next(iter(per_seed.values()))["steps"],
        "batch_size": trainer.batch_size,
        "device": machine["device"],
        "precision": machine["dtype"],
        "threads": machine["threads"],
        "machine": machine,
        "test_accuracy": test,
        "test_accuracy_std": test_std,
        "validation_accuracy": encoded_summary["mean"]["accuracy"],
        "validation_accuracy_std": encoded_summary["std"]["accuracy"],
        "majority_accuracy": data.majority("validation"),
        "majority_accuracy_test": data.majority("test"),
        "steps_per_s": speed,
        "steps_per_s_std": speed_std,
        "steps_per_s_median": median_speed,
        "steps_per_s_median_std": median_std,
        "memory_mib": memory[0],
        "memory_batch_shape": memory[1],
        "memory_note": (
            f"peak PyTorch {'CUDA' if 'cuda' in machine['device'] else 'CPU'} allocator bytes during "
            f"one training step (forward, loss, backward) on the {memory[1][0]} longest training "
            f"sequences ({memory[1][0]} x {memory[1][1]} tokens), above the step's start "
            "(weights, optimiser state and the batch excluded)"
        ),
        "summary": {k: encoded_summary[k] for k in ("mean", "std", "best_seed")},
    }


def optimiser(trainer: FinetuneTrainerConfig) -> dict[str, Any]:
    """The recipe beyond lr, batch and epochs: what the README's recipe table compares."""
    keys = ("max_steps", "betas", "adam_eps", "weight_decay", "clip_norm", "warmup_ratio")
    return {key: getattr(trainer, key) for key in keys}


def parameter_count(data: LraData, model_cfg: ModelConfig, attention: AttentionConfig) -> int:
    # on CPU, not "meta": LLN fits its moment constants for d != 64 when built
    return count_parameters(build_model(data.spec, model_cfg, attention, PAD))


def pct(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.1f}"


def _speed(value: float | None, std: float | None = None) -> str:
    if value is None:
        return "—"
    return f"{value:.2f}" if std is None else f"{value:.2f} ± {std:.2f}"


def result_table(results: dict[str, Any]) -> Table:
    table = Table(
        title=f"lra {results['task']} · {results.get('data_label')} · N={results['seq_len']} · "
        f"attention={results['attention']['name']} · majority class "
        f"{pct(results['majority_accuracy'])} (validation)",
        caption="test = the best-validation checkpoint scored on the test split; steps/s from "
        "the fastest (best) and the median logging interval",
    )
    columns = ("seed", "test acc", "val acc ★", "best step", "steps", "steps/s best",
               "steps/s median", "s / epoch")  # fmt: skip
    for column in columns:
        table.add_column(column, justify="right")
    for seed, r in results["seeds"].items():
        m, per_epoch = r["metrics"], r["seconds_per_epoch"]
        table.add_row(
            seed, pct(m.get("accuracy_test")), pct(m.get("accuracy")), str(r["best_step"]),
            str(r["steps"]), _speed(r["steps_per_s"]), _speed(r.get("steps_per_s_median")),
            "—" if per_epoch is None else f"{per_epoch:.1f}",
        )  # fmt: skip
    table.add_row(
        "mean ± std", pm(results["test_accuracy"], results["test_accuracy_std"]),
        pm(results["validation_accuracy"], results["validation_accuracy_std"]), "", "",
        _speed(results["steps_per_s"], results["steps_per_s_std"]),
        _speed(results["steps_per_s_median"], results["steps_per_s_median_std"]), "",
        style="bold",
    )  # fmt: skip
    return table


def pm(mean: float | None, std: float | None) -> str:
    return "—" if mean is None else f"{100 * mean:.1f} ± {100 * (std or 0.0):.1f}"


def memory_line(results: dict[str, Any]) -> str:
    memory = results["memory_mib"]
    if memory is None:
        return "working memory: not measured on this device"
    return f"working memory {memory:.1f} MiB: {results['memory_note']}"


def write_curves(results: dict[str, Any], path: Path) -> Path:
    """Validation and test accuracy over training, one colour per seed; majority dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for i, (seed, r) in enumerate(results["seeds"].items()):
        history = [row for row in r["history"] if row.get("accuracy") is not None]
        steps = [row["step"] for row in history]
        colour = plt.cm.tab10(i % 10)
        ax.plot(steps, [100 * row["accuracy"] for row in history], marker="o", ms=3,
                color=colour, label=f"seed {seed} validation")  # fmt: skip
        ax.plot(steps, [100 * (row.get("accuracy_test") or 0) for row in history], ls=":",
                color=colour, label=f"seed {seed} test")  # fmt: skip
    ax.axhline(100 * results["majority_accuracy"], ls="--", color="grey", lw=1,
               label="majority class (validation)")  # fmt: skip
    ax.set_xlabel("training step")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(
        f"lra {results['task']}, N={results['seq_len']}, {results['attention']['name']}",
        fontsize=10,
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def describe_run(cfg: LraConfig, data: LraData, model_cfg: ModelConfig,
                 trainer: FinetuneTrainerConfig, seeds, device, run_dir: Path) -> None:  # fmt: skip
    g = data.resolved.generator
    if data.task.kind == "listops":
        shape = (f"expressions of {g['min_length'] + 1}–{g['max_length'] - 1} tokens, depth <= "
                 f"{g['max_depth']}, <= {g['max_args']} arguments")  # fmt: skip
    elif data.task.kind == "text":
        shape = f"{data.resolved.label}, the first {g['max_length'] - 1} bytes of each review"
    else:
        shape = f"{g['size']}×{g['size']} pixels, {data.resolved.label}"
    console.print(
        f"[bold]llnbench lra[/bold] task={data.task.name} ({data.task.description}; {shape})\n"
        f"attention={escape(cfg.attention.name)} model={model_cfg.name} ({model_cfg.layers} layers × "
        f"{model_cfg.hidden}, {model_cfg.heads} heads, {human_count(parameter_count(data, model_cfg, cfg.attention))} "
        f"parameters), N={data.resolved.sequence_length} incl. [CLS], {model_cfg.pooling} "
        f"pooling; from scratch\n"
        f"lr {trainer.lr:g}, batch {trainer.batch_size}, betas {tuple(trainer.betas)}, weight "
        f"decay {trainer.weight_decay:g}, "
        + (f"clip {trainer.clip_norm:g}, " if trainer.clip_norm else "no clipping, ")
        + f"warm-up {trainer.warmup_ratio:g}, "
        + (f"{trainer.max_steps} steps" if trainer.max_steps else f"{trainer.epochs:g} epochs")
        + f"; seeds {seeds}; majority class {pct(data.majority('validation'))} (validation), "
        f"{pct(data.majority('test'))} (test); device {device}, precision "
        f"{dtype_name(resolve_precision(trainer.precision, device))}; run directory: "
        f"{escape(str(run_dir))}"
    )
