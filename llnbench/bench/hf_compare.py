"""Training-step time of llnbench's RoBERTa against ``transformers``' RobertaForMaskedLM (sdpa).

    python -m llnbench.bench.hf_compare [--layers 4 --hidden 256 --heads 4 --seq 512 --batch 8]

Same shape, same optimiser (AdamW), same masked batch, softmax attention on both sides; the two
models alternate so a busy machine slows both alike. llnbench projects the 50k-word MLM head only
at the masked positions (fairseq's ``masked_tokens``); transformers projects every token.
Needs the ``bench`` extra (``pip install -e '.[bench]'``).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
from rich.table import Table

from llnbench import files
from llnbench.bench.machine import machine_info
from llnbench.console import console
from llnbench.errors import LlnbenchError
from llnbench.model.roberta import IGNORE_INDEX, ModelConfig, RobertaForMaskedLM
from llnbench.schema import AttentionConfig
from llnbench.train.config import TrainerConfig
from llnbench.train.optim import build_optimizer


def hf_model(cfg: ModelConfig, pad_id: int) -> torch.nn.Module:
    try:
        from transformers import RobertaConfig
        from transformers import RobertaForMaskedLM as HFRoberta
    except ImportError:
        raise LlnbenchError(
            "this benchmark needs transformers: pip install -e '.[bench]'"
        ) from None
    config = RobertaConfig(
        vocab_size=cfg.vocab_size, hidden_size=cfg.hidden, num_hidden_layers=cfg.layers,
        num_attention_heads=cfg.heads, intermediate_size=cfg.ffn,
        max_position_embeddings=cfg.max_len + 2, pad_token_id=pad_id,
        hidden_dropout_prob=cfg.dropout, attention_probs_dropout_prob=cfg.attention_dropout,
    )  # fmt: skip
    return HFRoberta._from_config(config, attn_implementation="sdpa")


def step_fn(model: torch.nn.Module, ids: torch.Tensor, labels: torch.Tensor, ours: bool):
    optimizer = build_optimizer(model, TrainerConfig())
    model.train()

    def step() -> None:
        loss = model(ids, labels)[0] if ours else model(input_ids=ids, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--seq", type=int, default=512)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path("runs/bench/hf_compare.json"))
    args = parser.parse_args(argv)

    cfg = ModelConfig(name="bench", layers=args.layers, hidden=args.hidden, heads=args.heads,
                      ffn=4 * args.hidden, max_len=args.seq)  # fmt: skip
    pad_id = 1
    torch.manual_seed(0)
    ids = torch.randint(5, 50257, (args.batch, args.seq))
    labels = torch.where(torch.rand(ids.shape) < 0.15, ids, IGNORE_INDEX)
    ours = RobertaForMaskedLM(cfg, AttentionConfig("softmax"), pad_id)
    steps = {
        "llnbench": step_fn(ours, ids, labels, ours=True),
        "transformers": step_fn(hf_model(cfg, pad_id), ids, labels, ours=False),
    }
    times: dict[str, list[float]] = {name: [] for name in steps}
    for step in steps.values():  # warm-up: allocator, optimiser state
        step()
    for _ in range(args.repeats):
        for name, step in steps.items():
            start = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - start)
    medians = {name: statistics.median(t) for name, t in times.items()}
    result = {
        "machine": machine_info(torch.device("cpu"), "fp32"),
        "shape": vars(args) | {"out": str(args.out)},
        "seconds_median": medians,
        "seconds_all": times,
        "speedup": medians["transformers"] / medians["llnbench"],
    }
    files.write_json(args.out, result)
    table = Table(title=f"training step, {args.layers}x{args.hidden}, {args.heads} heads, "
                  f"seq {args.seq}, batch {args.batch}, softmax, fp32 CPU")  # fmt: skip
    for column in ("model", "median s", "min s", "max s"):
        table.add_column(column)
    for name, t in times.items():
        table.add_row(name, f"{medians[name]:.3f}", f"{min(t):.3f}", f"{max(t):.3f}")
    console.print(table)
    console.print(f"llnbench is {result['speedup']:.2f}x faster per step; wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
