"""``llnbench export RUN_DIR --format hf OUT``: a pretraining run as a transformers folder.

OUT is a ``save_pretrained`` folder: ``config.json``, ``model.safetensors`` and the run's
tokenizer (``tokenizer.json``, ``tokenizer_config.json``). With softmax attention (bidirectional)
it is a plain ``RobertaForMaskedLM`` whose logits equal llnbench's; the export checks that on a
probe batch before it finishes. With any other mechanism, ``config.json`` has
``model_type: llnbench_roberta`` (so ``AutoModel`` refuses it rather than run softmax on these
weights) and an ``llnbench`` entry recording the attention; the mechanism's own parameters and
buffers are in ``llnbench_attention.safetensors``; ``README.md`` says so. ``pretrained=hf:OUT``
loads any of them back into llnbench exactly. The folder is written next to OUT and renamed into
place, so a crash leaves no half-written OUT.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from rich.markup import escape

from llnbench import files
from llnbench.console import console
from llnbench.data.tokenizer import RobertaTokenizer, load_tokenizer
from llnbench.errors import CheckpointError, ConfigError, one_of
from llnbench.model.hf_checkpoint import CORE_WEIGHTS
from llnbench.model.hf_layout import LLNBENCH_MODEL_TYPE, core_state, hf_config, to_hf_state
from llnbench.model.pretrained import Pretrained, load_pretrained
from llnbench.model.roberta import RobertaForMaskedLM

FORMATS = ("hf",)
LOGITS_ATOL = 1e-5  # fp32, CPU: the exported model must agree this well with llnbench's


@dataclass
class ExportConfig:
    run_dir: str
    out: str
    format: str = "hf"

    def validate(self) -> None:
        if self.format not in FORMATS:
            raise one_of("format", self.format, FORMATS)
        out = Path(self.out)
        if out.exists() and (not out.is_dir() or any(out.iterdir())):
            raise ConfigError(f"{out} exists and is not an empty folder; choose another OUT")


def run(cfg: ExportConfig) -> Path:
    cfg.validate()
    out = Path(cfg.out)
    files.make_dir(out.parent)  # a file in the way, /proc, a read-only disk: one line, first
    transformers = _transformers()
    pre = load_pretrained(cfg.run_dir)
    if pre.head_state is None:
        raise CheckpointError(f"{pre.path} has no MLM head (export a pretraining run)")
    tokenizer = load_tokenizer(pre.tokenizer)
    state = {**{f"encoder.{k}": v for k, v in pre.encoder_state.items()}, **pre.head_state}
    config = hf_config(
        pre.model, pre.attention, pad_id=tokenizer.pad_id, bos_id=tokenizer.bos_id,
        eos_id=tokenizer.eos_id,
    )  # fmt: skip
    plain = config["llnbench"]["runs_in_transformers"]
    tmp = files.temp_dir_beside(out)
    try:
        with files.writing(out):  # a full disk mid-way: one line, no OUT
            hf_model = write_model(
                transformers, tmp, config, to_hf_state(pre.model, state, tokenizer.pad_id)
            )
            write_tokenizer(transformers, tmp, tokenizer, pre.model.max_len)
            if not plain:
                mark_llnbench_only(tmp, config, core_state(state))
            difference = logits_difference(pre, state, tokenizer, hf_model) if plain else None
            files.share_modes(tmp)  # one file mode, the umask's, like every file llnbench writes
            if out.exists():
                out.rmdir()  # empty (validated)
            tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    describe(pre, out, plain, difference)
    return out


def _transformers() -> Any:
    try:
        import transformers
    except ImportError:
        raise ConfigError(
            "llnbench export --format hf needs transformers: pip install 'llnbench[hf]'"
        ) from None
    transformers.utils.logging.disable_progress_bar()  # one shard of a small model: noise
    return transformers


def write_model(transformers: Any, folder: Path, config: dict[str, Any], state: dict) -> Any:
    """HF's own RobertaForMaskedLM, loaded strictly with the converted weights, saved by
    ``save_pretrained`` (safetensors; the tied decoder stored once)."""
    hf_model = transformers.RobertaForMaskedLM(transformers.RobertaConfig(**config))
    hf_model.load_state_dict(state, strict=True)
    hf_model.eval()
    hf_model.save_pretrained(folder, safe_serialization=True)
    return hf_model


def write_tokenizer(
    transformers: Any, folder: Path, tokenizer: RobertaTokenizer, max_len: int
) -> None:
    wrapped = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tokenizer.tokenizer, bos_token="<s>", eos_token="</s>",
        unk_token="<unk>", sep_token="</s>", cls_token="<s>", pad_token="<pad>",
        mask_token="<mask>", model_max_length=max_len,
    )  # fmt: skip
    wrapped.save_pretrained(folder)
    settings = folder / "tokenizer_config.json"
    data = json.loads(settings.read_text())
    data["tokenizer_class"] = "RobertaTokenizer"  # byte-level BPE with RoBERTa's specials
    files.write_json(settings, data)


def mark_llnbench_only(folder: Path, config: dict[str, Any], cores: dict) -> None:
    """Another attention than softmax: a model_type AutoModel refuses, the cores' weights, and a
    README that says what this folder is."""
    settings = folder / "config.json"
    data = json.loads(settings.read_text())
    data["model_type"] = LLNBENCH_MODEL_TYPE
    files.write_json(settings, data)
    if cores:
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in cores.items()}, str(folder / CORE_WEIGHTS))
    info = config["llnbench"]
    files.write_text(
        folder / "README.md",
        "# An llnbench RoBERTa with attention "
        f"`{info['attention']['name']}`{' (causal)' if info['causal'] else ''}\n\n"
        f"{info['note']}\n\nAttention config: `{json.dumps(info['attention'])}`\n",
    )


@torch.no_grad()
def logits_difference(
    pre: Pretrained, state: dict, tokenizer: RobertaTokenizer, hf_model: Any
) -> float:
    """Max |logit difference| between llnbench and the exported model on a padded probe batch
    (fp32, eval); the export fails above LOGITS_ATOL."""
    model = RobertaForMaskedLM(pre.model, pre.attention, tokenizer.pad_id)
    model.load_state_dict(state)
    model.eval()
    texts = ["The quick brown fox jumps over the lazy dog.", "A <mask> test."]
    rows = tokenizer.encode_batch(texts, max_length=pre.model.max_len)
    n = max(len(r) for r in rows)
    ids = torch.full((len(rows), n), tokenizer.pad_id)
    mask = torch.zeros(len(rows), n, dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)], mask[i, : len(row)] = torch.tensor(row), 1
    ours = model.logits(ids, mask)
    theirs = hf_model(input_ids=ids, attention_mask=mask).logits
    real = mask.bool()
    difference = float((ours[real] - theirs[real]).abs().max())
    if difference > LOGITS_ATOL:
        raise CheckpointError(
            f"exported model disagrees with llnbench's by {difference:.2e} in the logits "
            f"(allowed {LOGITS_ATOL:g}); nothing was written"
        )
    return difference


def describe(pre: Pretrained, out: Path, plain: bool, difference: float | None) -> None:
    # paths are the user's text: escaped, so OUT=/tmp/[x] prints as typed (no rich markup)
    if plain:
        console.print(
            f"exported {escape(str(pre.path))} as a plain RobertaForMaskedLM (logits equal "
            f"llnbench's: max |difference| {difference:.1e} on a probe batch) to "
            f"[bold]{escape(str(out))}[/bold]"
        )
    else:
        console.print(
            f"exported {escape(str(pre.path))} (attention {escape(pre.attention.name)}, not "
            f"transformers' softmax: model_type {LLNBENCH_MODEL_TYPE}, load it with "
            f"pretrained=hf:{escape(str(out))}) to [bold]{escape(str(out))}[/bold]"
        )
