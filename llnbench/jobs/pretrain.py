"""``llnbench pretrain``: RoBERTa masked-language-model pretraining with any registered attention.

    llnbench pretrain attention=lln                      # offline: tiny model, embedded corpus
    llnbench pretrain +experiment=wikitext103_base       # the paper's recipe on a GPU
    torchrun --standalone --nproc-per-node 4 -m llnbench pretrain ...

Validation reports loss, perplexity and masked-token accuracy next to the unigram baseline: the
cross-entropy of the same masked targets under the training set's token frequencies, i.e. the
loss of a model that ignores context. A model below it has learned from context.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from rich.markup import escape
from rich.table import Table

from llnbench.compiling import compile_backend
from llnbench.config import Seed, config_dir, from_dict
from llnbench.console import console
from llnbench.data.corpus import CorpusConfig, PretrainingData, load_pretraining_blocks
from llnbench.data.masking import MLMMasker
from llnbench.data.tokenizer import load_tokenizer
from llnbench.devices import dtype_name
from llnbench.errors import ConfigError
from llnbench.model.hf_checkpoint import check_pad_id, is_hf, load_hf_pretrained
from llnbench.model.hf_layout import HF_FIELDS
from llnbench.model.pretrained import Pretrained
from llnbench.model.roberta import (
    IGNORE_INDEX,
    ModelConfig,
    RobertaForMaskedLM,
    count_parameters,
    human_count,
    shape_signature,
)
from llnbench.runs import as_plain, open_run_dir, save_config
from llnbench.schema import AttentionConfig, WandbConfig
from llnbench.testing.outside import verify_outside_attention
from llnbench.tracking import Tracker
from llnbench.train import distributed
from llnbench.train.config import TrainerConfig, resolve_precision
from llnbench.train.loop import Task, Trainer
from llnbench.train.sampler import EpochSampler


@dataclass
class PretrainConfig:
    seed: Seed = 0
    run_dir: str | None = None
    attention: AttentionConfig = field(default_factory=AttentionConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    data: CorpusConfig = field(default_factory=CorpusConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    wandb: WandbConfig = field(default_factory=WandbConfig)
    mlm_probability: float = 0.15
    block_size: int | None = None  # tokens per block incl. <s> and </s>; default model.max_len
    eval_blocks: int | None = 512  # validation blocks per evaluation (null = all)
    analysis_every: int = 0  # steps between concentration instruments (analysis/*); 0 = off
    pretrained: str | None = None  # hf:PATH_OR_ID: continue from a transformers checkpoint

    def validate(self) -> None:
        if self.pretrained is not None and not is_hf(self.pretrained):
            raise ConfigError(
                f"pretrained={self.pretrained!r}: pretraining starts from a transformers "
                "checkpoint, pretrained=hf:PATH_OR_ID; to continue an llnbench run, rerun it with "
                "its run_dir"
            )
        block = self.block_size or self.model.max_len
        if block > self.model.max_len and self.pretrained is None:  # else: checked once loaded
            raise ConfigError(
                f"block_size={block} exceeds model.max_len={self.model.max_len} (the learned "
                "position table); raise model.max_len or lower block_size"
            )
        if block < 8:
            raise ConfigError(f"block_size must be at least 8, got {block}")
        if self.eval_blocks is not None and self.eval_blocks < 1:
            raise ConfigError(f"eval_blocks must be positive or null (all), got {self.eval_blocks}")
        if self.analysis_every < 0:
            raise ConfigError(f"analysis_every must be >= 0 (0 = off), got {self.analysis_every}")
        if not 0.0 < self.mlm_probability < 1.0:
            raise ConfigError(f"mlm_probability must be in (0, 1), got {self.mlm_probability}")

    @property
    def blocks(self) -> int:
        return self.block_size or self.model.max_len


def run(cfg: PretrainConfig) -> Path:
    dist, device = distributed.setup(cfg.trainer.device)
    try:
        return _run(cfg, dist, device)
    finally:
        distributed.teardown(dist)


def _run(cfg: PretrainConfig, dist: distributed.DistInfo, device: torch.device) -> Path:
    verify_outside_attention(
        cfg.attention, causal=cfg.model.causal, num_heads=cfg.model.heads,
        head_dim=cfg.model.head_dim, device=device,
    )  # fmt: skip
    torch.manual_seed(cfg.seed)
    hf = None
    if cfg.pretrained is not None:  # shape and tokenizer come from the checkpoint
        hf = load_hf_pretrained(cfg.pretrained, cfg.attention)
        check_model_override(cfg, hf)
        model_cfg = dataclasses.replace(hf.model, causal=cfg.model.causal)
        data_cfg = dataclasses.replace(cfg.data, tokenizer=hf.tokenizer)
        cfg = dataclasses.replace(cfg, model=model_cfg, data=data_cfg)
        cfg.validate()
    cfg = dataclasses.replace(cfg, block_size=cfg.blocks)  # config.yaml states what ran
    label = f"{cfg.attention.name}-{cfg.model.name}"
    run_dir = Path(distributed.broadcast(
        str(open_run_dir("pretrain", label, cfg.run_dir, cfg)) if dist.is_main else None, dist
    ))  # fmt: skip
    tokenizer = load_tokenizer(cfg.data.tokenizer)
    if tokenizer.vocab_size > cfg.model.vocab_size:
        raise ConfigError(
            f"model.vocab_size={cfg.model.vocab_size} is smaller than the tokenizer's "
            f"{tokenizer.vocab_size} entries"
        )
    if dist.is_main:  # rank 0 tokenises and fills the cache; the others then read it
        data = load_pretraining_blocks(cfg.data, tokenizer, cfg.blocks)
    distributed.barrier(dist)
    if not dist.is_main:
        data = load_pretraining_blocks(cfg.data, tokenizer, cfg.blocks)

    model = RobertaForMaskedLM(cfg.model, cfg.attention, tokenizer.pad_id)
    if hf is not None:
        load_hf_weights(model, hf, tokenizer.pad_id)
    masker = MLMMasker(tokenizer, mlm_probability=cfg.mlm_probability, seed=cfg.seed)
    validation = masked_validation(data, tokenizer, cfg)
    unigram = unigram_loss(data, validation)
    batch = cfg.trainer.batch_size
    sampler = EpochSampler(len(data.train), batch, seed=cfg.seed, dist=dist)
    probe = None
    if cfg.analysis_every and dist.is_main:  # instruments of the weights after `step` updates
        from llnbench.analysis.probe import TrainingProbe

        probe = TrainingProbe.for_pretraining(
            cfg.analysis_every, data.validation, device, run_dir, cfg.trainer.max_steps
        )

    def make_batch(indices: torch.Tensor) -> dict[str, torch.Tensor]:
        input_ids, labels = masker(data.train[indices])
        return {"input_ids": input_ids.to(device), "labels": labels.to(device)}

    def loss(model: torch.nn.Module, b: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
        return model(b["input_ids"], b["labels"])[0], b["input_ids"].numel()

    def evaluate(model: torch.nn.Module) -> dict[str, float]:
        return evaluate_mlm(model, validation, batch, device) | {"unigram_loss": unigram}

    def instruments(model: torch.nn.Module, step: int) -> None:
        probe(model, step, tracker)

    task = Task(
        make_batch, loss, evaluate, extras={"masker": masker},
        on_step=instruments if probe is not None else None,
    )  # fmt: skip
    trainer = Trainer(
        model, cfg.trainer, task, sampler, device=device, dist=dist, run_dir=run_dir,
        signature=signature(cfg, tokenizer.name), config=as_plain(cfg),
    )  # fmt: skip
    trainer.restore()  # before anything is written: a bad checkpoint leaves the run intact
    tracker = Tracker(
        run_dir, job="pretrain", name=label, config=as_plain(cfg), wandb_cfg=cfg.wandb,
        enabled=dist.is_main, resume=True,
    )  # fmt: skip
    if dist.is_main:
        save_config(run_dir, cfg)
        describe_run(cfg, data, model, device, dist, unigram, run_dir)
    start = time.perf_counter()
    final = trainer.fit(tracker, describe=f"pretrain {label}")
    seconds = time.perf_counter() - start
    if not dist.is_main:
        return run_dir
    results = {
        "attention": cfg.attention.to_dict(),
        "model": cfg.model.name,
        "steps": trainer.step,
        "tokens": trainer.step * batch * cfg.trainer.grad_accum * dist.world * cfg.blocks,
        "train_seconds_this_session": round(seconds, 1),
        **throughput(trainer.throughput, cfg.trainer.compile),
        "final": final,
        "device": str(device),
        "precision": dtype_name(resolve_precision(cfg.trainer.precision, device)),
        "global_batch": batch * cfg.trainer.grad_accum * dist.world,
        "data": data.summary(),
    }
    tracker.finish(results)
    console.print(final_table(label, results))
    console.print(f"run directory: [bold]{escape(str(run_dir))}[/bold]")
    return run_dir


DEFAULT_MODEL = "tiny"  # conf/pretrain.yaml's model preset


def check_model_override(cfg: PretrainConfig, hf: Pretrained) -> None:
    """The shape of ``pretrained=hf:`` comes from its config.json: a model other than the
    default preset (``model=small``, ``model.layers=4``) that differs from it is refused rather
    than ignored. (``model=tiny`` itself cannot be told apart from the default.)"""
    default = from_dict(ModelConfig, yaml.safe_load(
        (config_dir() / "model" / f"{DEFAULT_MODEL}.yaml").read_text()
    ), "model")  # fmt: skip
    asked = dataclasses.replace(cfg.model, causal=default.causal)
    if asked == default:
        return
    ours, theirs = dataclasses.asdict(asked), dataclasses.asdict(hf.model)
    diffs = [k for k in ours if k not in ("name", "causal") and ours[k] != theirs[k]]
    if diffs:
        shown = ", ".join(
            f"model.{k}={ours[k]!r} vs {HF_FIELDS.get(k, k)}={theirs[k]!r}" for k in diffs[:4]
        )
        raise ConfigError(
            f"pretrained={cfg.pretrained}: model={cfg.model.name} differs from the checkpoint's "
            f"config.json ({shown}); the shape comes from the checkpoint: drop model= and "
            "model.* overrides"
        )


def throughput(timed: dict[str, float], compile: bool | str) -> dict[str, Any]:
    """Training tokens/s of this session: over every step, and past the first (which holds
    torch.compile's tracing and code generation), to compare trainer.compile settings."""
    steps, tokens, seconds = timed["steps"], timed["tokens"], timed["seconds"]
    steady = None
    if steps > 1 and seconds > timed["first_step_s"]:
        steady = tokens * (steps - 1) / steps / (seconds - timed["first_step_s"])
    return {
        "compile": compile_backend(compile) or "off",
        "tokens_per_s": round(tokens / seconds, 1) if seconds > 0 else None,
        "tokens_per_s_after_first_step": None if steady is None else round(steady, 1),
        "first_step_s": round(timed["first_step_s"], 3),
    }


def signature(cfg: PretrainConfig, tokenizer_name: str) -> dict[str, Any]:
    init = {"pretrained": cfg.pretrained} if cfg.pretrained else {}  # older runs: no key
    return {**shape_signature(cfg.model, cfg.attention), "tokenizer": tokenizer_name, **init}


def load_hf_weights(model: RobertaForMaskedLM, hf: Pretrained, pad_id: int) -> None:
    """The checkpoint's encoder (and MLM head, when it has one) into ``model``."""
    check_pad_id(hf, pad_id)
    model.encoder.load_weights(hf.encoder_state, f"pretrained={hf.source}")
    if hf.head_state is not None:
        model.load_state_dict({**model.state_dict(), **hf.head_state})


def masked_validation(data: PretrainingData, tokenizer, cfg: PretrainConfig):
    """The validation blocks masked once, with a fixed generator: every evaluation (and every
    mechanism with the same seed) scores the same masked positions."""
    blocks = data.validation if cfg.eval_blocks is None else data.validation[: cfg.eval_blocks]
    if len(blocks) == 0:
        raise ConfigError("the validation split has no complete block; lower block_size")
    masker = MLMMasker(tokenizer, mlm_probability=cfg.mlm_probability, seed=cfg.seed + 1)
    return masker(blocks)


def unigram_loss(data: PretrainingData, validation: tuple[torch.Tensor, torch.Tensor]) -> float:
    """Cross-entropy of the masked validation targets under training unigram frequencies."""
    _, labels = validation
    targets = labels[labels != IGNORE_INDEX]
    log_probs = data.unigram_log_probs()
    return float(-log_probs[targets].mean())


@torch.no_grad()
def evaluate_mlm(
    model: torch.nn.Module,
    validation: tuple[torch.Tensor, torch.Tensor],
    batch_size: int,
    device: torch.device,
) -> dict[str, float]:
    inputs, labels = validation
    total_loss, total_correct, total = 0.0, 0, 0
    for start in range(0, len(inputs), batch_size):
        x = inputs[start : start + batch_size].to(device)
        y = labels[start : start + batch_size].to(device)
        _, logits, targets = model(x, y)
        total_loss += float(
            torch.nn.functional.cross_entropy(logits.float(), targets, reduction="sum")
        )
        total_correct += int((logits.argmax(-1) == targets).sum())
        total += targets.numel()
    loss = total_loss / total
    return {"loss": loss, "ppl": math.exp(min(loss, 50.0)), "accuracy": total_correct / total}


def describe_run(cfg, data, model, device, dist, unigram: float, run_dir: Path) -> None:
    global_batch = cfg.trainer.batch_size * cfg.trainer.grad_accum * dist.world
    console.print(
        "[bold]llnbench pretrain[/bold] "
        + escape(
            f"attention={cfg.attention.name} model={cfg.model.name} "
            f"({human_count(count_parameters(model))} parameters) on {device}, "
            f"precision {dtype_name(resolve_precision(cfg.trainer.precision, device))}\n"
            f"data {cfg.data.source}: {len(data.train):,} train / {len(data.validation):,} validation "
            f"blocks of {cfg.blocks} tokens; global batch {global_batch} = {cfg.trainer.batch_size} "
            f"x {cfg.trainer.grad_accum} accumulation x {dist.world} devices; "
            f"{cfg.trainer.max_steps:,} steps\n"
            f"unigram baseline (validation masked tokens): {unigram:.3f} nats\n"
            f"run directory: {run_dir}"
        )
    )


def final_table(label: str, results: dict[str, Any]) -> Table:
    final = results["final"]
    table = Table(title=escape(f"pretrain {label}"))
    for column in ("steps", "tokens", "time (s)", "val loss", "val ppl", "masked acc",
                   "unigram loss"):  # fmt: skip
        table.add_column(column, justify="right")
    table.add_row(
        f"{results['steps']:,}", f"{results['tokens']:,}",
        f"{results['train_seconds_this_session']:.0f}", f"{final['loss']:.3f}",
        f"{final['ppl']:.1f}", f"{final['accuracy']:.3f}", f"{final['unigram_loss']:.3f}",
    )  # fmt: skip
    return table
