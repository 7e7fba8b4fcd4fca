"""``llnbench glue``: fine-tune on GLUE tasks, one seed at a time, and report as GLUE does.

    llnbench glue task=sst2 pretrained=runs/pretrain/<run>        # attention + model from the run
    llnbench glue task=all pretrained=... trainer.seeds=[1,2,3]    # the paper's four + the average
    llnbench glue task=sst2_rt pretrained=... trainer.lr=2e-4      # the offline SST-2 stand-in
    llnbench glue task=rte attention=lln model=tiny                # from scratch: a smoke run only
    llnbench glue task=glue9 data.train_file=glue/%task%/train.tsv data.validation_file=...

Run directory: ``config.yaml``; ``metrics.jsonl`` (rows carry task, seed, step, epoch);
``results.json``; ``<task>/seed<k>/`` per seed (checkpoint.pt, best.pt, result.json, validation
predictions, submission TSVs), so each seed resumes on its own; ``submission/`` with GLUE's files
from each task's best seed. The reported score of a seed is its best epoch's by the task's
primary metric (the epoch is recorded); seeds are summarised as mean ± std (ddof 1).
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from rich.markup import escape

from llnbench import files
from llnbench.attention import build_attention
from llnbench.config import Seed, from_dict
from llnbench.console import console
from llnbench.data.glue import SOURCES, GlueDataConfig, TaskSpec, load_task, resolve_tasks
from llnbench.data.tokenizer import EMBEDDED, load_tokenizer
from llnbench.devices import dtype_name
from llnbench.errors import CheckpointError, ConfigError, one_of
from llnbench.jobs.glue_report import glue_average, suite_table, summarize_task, task_table
from llnbench.model.hf_checkpoint import check_pad_id, is_hf, load_hf_pretrained
from llnbench.model.pretrained import Pretrained, load_pretrained
from llnbench.model.roberta import (
    ModelConfig,
    RobertaForSequenceClassification,
    count_parameters,
    human_count,
    shape_signature,
)
from llnbench.runs import as_plain, open_run_dir, save_config
from llnbench.schema import AttentionConfig, WandbConfig
from llnbench.testing.outside import verify_outside_attention
from llnbench.tracking import Tracker
from llnbench.train import checkpoint, distributed
from llnbench.train.config import resolve_precision
from llnbench.train.finetune import (
    RESULT,
    SEED_KEYS,
    FinetuneRun,
    FinetuneTrainerConfig,
    encode_splits,
    read_result,
    run_seed,
)

PLACEHOLDERS = ("%task%", "{task}")  # a task's name in local paths of a suite (Hydra needs
# the second one quoted: 'data.train_file="glue/{task}/train.tsv"')
FILE_KEYS = (
    "train_file", "validation_file", "validation_mismatched_file", "test_file",
    "test_mismatched_file",
)  # fmt: skip


@dataclass
class TaskConfig:
    """``conf/task/<name>.yaml``: a task (or a suite: all, glue9) and its fine-tuning recipe;
    a suite holds one recipe per task in ``recipes``. ``trainer.*`` values, when set, win."""

    name: str = "sst2_rt"
    lr: float | None = None
    batch_size: int | None = None
    epochs: float | None = None
    recipes: dict[str, Any] = field(default_factory=dict)

    def recipe(self, task: str) -> dict[str, Any]:
        if task in self.recipes:
            return dict(self.recipes[task])
        if task == self.name:
            return {"lr": self.lr, "batch_size": self.batch_size, "epochs": self.epochs}
        return {}


@dataclass
class GlueConfig:
    seed: Seed = 0
    run_dir: str | None = None
    task: TaskConfig = field(default_factory=TaskConfig)
    pretrained: str | None = None  # a pretraining run dir or checkpoint file, or hf:PATH_OR_ID
    attention: AttentionConfig | None = None  # from the checkpoint; set only to train from scratch
    model: dict[str, Any] = field(default_factory=dict)  # non-null keys: checked / from scratch
    tokenizer: str | None = None  # from the checkpoint; from scratch: embedded
    data: GlueDataConfig = field(default_factory=GlueDataConfig)
    trainer: FinetuneTrainerConfig = field(default_factory=FinetuneTrainerConfig)
    wandb: WandbConfig = field(default_factory=WandbConfig)
    max_length: int = 128
    max_train_samples: int | None = None
    max_eval_samples: int | None = None
    submission: bool = True

    def validate(self) -> None:
        specs = resolve_tasks(self.task.name)  # an unknown task lists the allowed ones
        if self.max_length < 8:
            raise ConfigError(f"max_length must be at least 8, got {self.max_length}")
        for name in ("max_train_samples", "max_eval_samples"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"{name} must be positive or null, got {value}")
        allowed = [f.name for f in dataclasses.fields(ModelConfig)]
        unknown = sorted(set(self.model) - set(allowed))
        if unknown:
            raise ConfigError(
                f"unknown config key 'model.{unknown[0]}'; allowed: {', '.join(allowed)}"
            )
        if self.data.source not in SOURCES:
            raise one_of("data.source", self.data.source, SOURCES)
        given = [k for k in FILE_KEYS if getattr(self.data, k)]
        if given and self.data.source == "hub":  # files given: they are the data
            self.data = dataclasses.replace(self.data, source="local")
        if self.data.source == "local" and len(specs) > 1:
            plain = [k for k in given if not templated(getattr(self.data, k))]
            if plain or not given:
                key = (plain or ["train_file"])[0]
                raise ConfigError(
                    f"task={self.task.name} runs {len(specs)} tasks but data.{key} names one "
                    "file; put %task% in local paths (data.train_file=glue/%task%/train.tsv)"
                )

    def data_for(self, spec: TaskSpec) -> GlueDataConfig:
        """The data config of one task: ``%task%`` in local paths becomes its name; a templated
        MNLI-only path (the mismatched splits) is dropped for the tasks that lack that split."""
        splits = {
            "validation_mismatched_file": len(spec.validation_splits) > 1,
            "test_mismatched_file": len(spec.test_splits) > 1,
            "test_file": bool(spec.test_splits),
        }
        paths: dict[str, str | None] = {}
        for key in FILE_KEYS:
            value = getattr(self.data, key)
            if value and templated(value):
                for mark in PLACEHOLDERS:
                    value = value.replace(mark, spec.name)
                paths[key] = value if splits.get(key, True) else None
        return dataclasses.replace(self.data, **paths)


def templated(path: str) -> bool:
    return any(mark in path for mark in PLACEHOLDERS)


@dataclass
class Init:
    """Where the encoder comes from: a pretraining run, or nothing (from scratch)."""

    model: ModelConfig
    attention: AttentionConfig
    tokenizer: str
    pretrained: Pretrained | None

    @property
    def encoder_state(self) -> dict[str, torch.Tensor] | None:
        return None if self.pretrained is None else self.pretrained.encoder_state

    def describe(self) -> dict[str, Any]:
        if self.pretrained is None:
            return {"pretrained": None, "note": "from scratch (smoke run, no pretraining)"}
        if self.pretrained.is_hf:
            return {"pretrained": self.pretrained.source, "path": str(self.pretrained.path)}
        return {"pretrained": str(self.pretrained.path), "step": self.pretrained.step}


def resolve_init(cfg: GlueConfig) -> Init:
    """Attention, model shape and tokenizer from ``pretrained=PATH`` (an override that differs is
    refused), or from the config for a from-scratch smoke run."""
    overrides = {k: v for k, v in cfg.model.items() if v is not None}
    if cfg.pretrained is None:
        if cfg.attention is None:
            raise ConfigError(
                "no pretrained=PATH: fine-tune a pretraining run (pretrained=runs/pretrain/<run> "
                "or its checkpoint.pt), or train from scratch for a smoke run with attention=NAME "
                "(and model=tiny|small|base)"
            )
        model = from_dict(ModelConfig, overrides, "model")
        return Init(model, cfg.attention, cfg.tokenizer or EMBEDDED, None)
    if is_hf(cfg.pretrained):  # a transformers checkpoint: any attention may be swapped in
        pre = load_hf_pretrained(cfg.pretrained, cfg.attention)
    else:
        pre = load_pretrained(cfg.pretrained)
    wanted_model = from_dict(ModelConfig, {**dataclasses.asdict(pre.model), **overrides}, "model")
    wanted = {
        **shape_signature(wanted_model, cfg.attention or pre.attention),
        "tokenizer": cfg.tokenizer or pre.tokenizer,
    }
    saved = {**shape_signature(pre.model, pre.attention), "tokenizer": pre.tokenizer}
    try:
        checkpoint.check_signature(pre.path, saved, wanted)
    except CheckpointError as err:
        raise CheckpointError(
            f"pretrained={cfg.pretrained}: {err}; attention, model and tokenizer come from the "
            "checkpoint, drop the conflicting override"
        ) from None
    return Init(pre.model, pre.attention, pre.tokenizer, pre)


def load_data(spec: TaskSpec, data: GlueDataConfig) -> dict:
    """``load_task``; local files without datasets' progress bars (they would bury a one-line
    error about the file), hub downloads with them."""
    import datasets

    if data.source != "local" or datasets.are_progress_bars_disabled():
        return load_task(spec, data)
    datasets.disable_progress_bars()
    try:
        return load_task(spec, data)
    finally:
        datasets.enable_progress_bars()


def seed_signature(init: Init, spec: TaskSpec, cfg: GlueConfig) -> dict[str, Any]:
    """What a seed's checkpoint must match to be continued."""
    return {
        **shape_signature(init.model, init.attention),
        "tokenizer": init.tokenizer,
        "task": spec.name,
        "num_labels": spec.num_labels,
        "max_length": cfg.max_length,
        "init": init.describe(),
    }


def preflight(run_dir: Path, seeds: dict[Path, dict[str, Any]], resume: bool | str) -> None:
    """Check the run directory before anything is written: ``trainer.resume`` against what is
    there, and every existing seed's signature against this config."""
    started = [
        folder
        for folder in seeds
        if (folder / RESULT).exists() or (folder / checkpoint.CHECKPOINT).exists()
    ]
    if resume is False and started:
        raise CheckpointError(
            f"{run_dir} already holds fine-tuning state ({started[0]}) and trainer.resume=false; "
            "choose another run_dir (or trainer.resume=auto to continue it)"
        )
    if resume is True and not started:
        raise CheckpointError(f"trainer.resume=true but {run_dir} holds no fine-tuning state")
    for folder in started:
        done = read_result(folder)
        path = folder / (RESULT if done else checkpoint.CHECKPOINT)
        saved = done["signature"] if done else checkpoint.load(path)["signature"]
        checkpoint.check_signature(path, saved, seeds[folder])


def run(cfg: GlueConfig) -> Path:
    dist, device = distributed.setup(cfg.trainer.device)
    try:
        return _run(cfg, dist, device)
    finally:
        distributed.teardown(dist)


def _run(cfg: GlueConfig, dist: distributed.DistInfo, device: torch.device) -> Path:
    specs = resolve_tasks(cfg.task.name)
    init = resolve_init(cfg)
    verify_outside_attention(
        init.attention, num_heads=init.model.heads, head_dim=init.model.head_dim, device=device
    )
    if cfg.max_length > init.model.max_len:
        raise ConfigError(
            f"max_length={cfg.max_length} exceeds model.max_len={init.model.max_len} (the "
            "model's learned positions); lower max_length"
        )
    trainers = {s.name: cfg.trainer.with_recipe(s.name, cfg.task.recipe(s.name)) for s in specs}
    seeds = cfg.trainer.seeds or [cfg.seed]
    tokenizer = load_tokenizer(init.tokenizer)
    if tokenizer.vocab_size > init.model.vocab_size:
        raise ConfigError(
            f"model.vocab_size={init.model.vocab_size} is smaller than tokenizer "
            f"{init.tokenizer!r}'s {tokenizer.vocab_size} entries"
        )
    if init.pretrained is not None and init.pretrained.is_hf:
        check_pad_id(init.pretrained, tokenizer.pad_id)
    raw = {s.name: load_data(s, cfg.data_for(s)) for s in specs}  # bad data stops us here
    label = f"{cfg.task.name}-{init.attention.name}"
    cfg = resolved_config(cfg, init, trainers, seeds)  # config.yaml states what runs
    run_dir = Path(distributed.broadcast(
        str(open_run_dir("glue", label, cfg.run_dir, cfg, SEED_KEYS)) if dist.is_main else None,
        dist,
    ))  # fmt: skip
    folders = {s.name: {seed: run_dir / s.name / f"seed{seed}" for seed in seeds} for s in specs}
    signatures = {s.name: seed_signature(init, s, cfg) for s in specs}
    preflight(
        run_dir,
        {f: signatures[t] for t, by_seed in folders.items() for f in by_seed.values()},
        cfg.trainer.resume,
    )
    config = as_plain(cfg)
    tracker = Tracker(run_dir, job="glue", name=label, config=config, wandb_cfg=cfg.wandb,
                      enabled=dist.is_main, resume=True)  # fmt: skip
    if dist.is_main:
        save_config(run_dir, cfg)
        describe_run(cfg, init, specs, seeds, device, run_dir)
    summaries: dict[str, dict[str, Any]] = {}
    for spec in specs:
        data = encode_splits(spec, raw[spec.name], tokenizer, cfg.max_length,
                             cfg.max_train_samples, cfg.max_eval_samples)  # fmt: skip
        trainer_cfg = trainers[spec.name]
        new_model = functools.partial(build_model, spec, init.model, init.attention,
                                      tokenizer.pad_id, init.encoder_state)  # fmt: skip
        ft = FinetuneRun(
            data, new_model, tokenizer.pad_id, trainer_cfg,
            signatures[spec.name], config, device, dist, cfg.submission,
        )  # fmt: skip
        if dist.is_main:
            describe_task(spec, data, trainer_cfg)
        per_seed: dict[int, dict[str, Any]] = {}
        for seed in seeds:
            folder = folders[spec.name][seed]
            done = read_result(folder)
            if done is not None and dist.is_main:
                console.print(
                    f"{spec.name} seed {seed}: finished earlier, reusing {folder}", markup=False
                )
            per_seed[seed] = done or run_seed(ft, seed, folder, tracker)  # type: ignore[assignment]
        if dist.is_main:
            summary = summarize_task(spec, data, trainer_cfg, per_seed)
            summary["submission"] = publish_submission(summary, folders[spec.name], run_dir)
            summaries[spec.name] = summary
            console.print(task_table(spec, summary))
    if not dist.is_main:
        return run_dir
    results: dict[str, Any] = {
        "task": cfg.task.name,
        "init": init.describe(),
        "attention": init.attention.to_dict(),
        "model": dataclasses.asdict(init.model),
        "tokenizer": init.tokenizer,
        "seeds": seeds,
        "max_length": cfg.max_length,
        "device": str(device),
        "precision": dtype_name(resolve_precision(cfg.trainer.precision, device)),
        "tasks": summaries,
    }
    if len(specs) > 1:
        results["glue_average"] = glue_average(summaries)
        console.print(suite_table(cfg.task.name, summaries, results["glue_average"]))
    tracker.table("glue/results", [
        {"task": t, "seed": int(s), **r["metrics"]}
        for t, summary in summaries.items() for s, r in summary["seeds"].items()
    ])  # fmt: skip
    tracker.finish(results)
    console.print(f"run directory: [bold]{escape(str(run_dir))}[/bold]")
    return run_dir


def resolved_config(
    cfg: GlueConfig, init: Init, trainers: dict[str, FinetuneTrainerConfig], seeds: list[int]
) -> GlueConfig:
    """``cfg`` with what was derived filled in: the attention, model and tokenizer (from the
    checkpoint), each task's lr, batch size and epochs (trainer values, else its recipe), the
    seeds. Rerunning config.yaml as it is runs the same."""
    recipes = {
        name: {"lr": t.lr, "batch_size": t.batch_size, "epochs": t.epochs}
        for name, t in trainers.items()
    }
    task = dataclasses.replace(cfg.task, recipes=recipes)
    if cfg.task.name in recipes:  # one task: its own keys say the same
        task = dataclasses.replace(task, **recipes[cfg.task.name])
    return dataclasses.replace(
        cfg,
        attention=init.attention,
        model=dataclasses.asdict(init.model),
        tokenizer=init.tokenizer,
        task=task,
        trainer=dataclasses.replace(cfg.trainer, seeds=list(seeds)),
    )


def publish_submission(summary: dict[str, Any], folders: dict[int, Path], run_dir: Path) -> list:
    """Copy the best seed's submission TSVs to ``run_dir/submission`` (GLUE wants one folder)."""
    seed = summary["best_seed"]
    if seed is None:
        return []
    copied = []
    for name in summary["seeds"][str(seed)]["submission"]:
        source = folders[seed] / name
        target = files.write_text(run_dir / "submission" / source.name, source.read_text())
        copied.append(str(target.relative_to(run_dir)))
    return copied


def build_model(
    spec: TaskSpec,
    model: ModelConfig,
    attention: AttentionConfig,
    pad_id: int,
    encoder_state: dict[str, torch.Tensor] | None = None,
) -> RobertaForSequenceClassification:
    """The classifier (head on ``<s>``) with the pretrained encoder loaded when given."""
    classifier = RobertaForSequenceClassification(model, attention, pad_id, spec.num_labels)
    if encoder_state is not None:
        classifier.encoder.load_weights(encoder_state, "pretrained encoder")
    return classifier


def describe_run(cfg, init: Init, specs, seeds, device, run_dir: Path) -> None:
    # one core on the CPU first: what a mechanism computes once at build (LLN's fitted moment
    # constants for a head dim other than 64, cached) cannot be computed on the meta device
    build_attention(init.attention.name, num_heads=init.model.heads,
                    head_dim=init.model.head_dim, **init.attention.options)  # fmt: skip
    with torch.device("meta"):  # parameter count only: no memory, no init time
        model = build_model(specs[0], init.model, init.attention, 1)
    if init.pretrained is None:
        source = "from scratch (a smoke run: no pretraining)"
    elif init.pretrained.is_hf:
        source = f"from the transformers checkpoint {init.pretrained.path}"
    else:
        source = f"from {init.pretrained.path} (pretraining step {init.pretrained.step:,})"
    console.print(
        "[bold]llnbench glue[/bold] "
        + escape(
            f"task={cfg.task.name} ({', '.join(s.name for s in specs)}) "
            f"attention={init.attention.name} model={init.model.name} "
            f"({human_count(count_parameters(model))} parameters) {source}\n"
            f"seeds {seeds}; max_length {cfg.max_length}; device {device}, precision "
            f"{dtype_name(resolve_precision(cfg.trainer.precision, device))}; run directory: {run_dir}"
        )
    )


def describe_task(spec: TaskSpec, data, trainer: FinetuneTrainerConfig) -> None:
    sizes = ", ".join(f"{name} {len(split):,}" for name, split in data.validation.items())
    majority = data.majority_accuracy()
    console.print(
        f"[bold]{spec.name}[/bold]: {spec.description}\n"
        f"train {len(data.train):,}; {sizes}; test {sum(len(t) for t in data.test.values()):,}; "
        f"lr {trainer.lr:g}, batch {trainer.batch_size}, epochs {trainer.epochs:g}"
        + (f"; majority-class accuracy {100 * majority:.1f}" if majority is not None else "")
    )
