"""``pretrained=hf:PATH_OR_ID``: a transformers RoBERTa checkpoint as llnbench's starting point.

A local folder (``save_pretrained`` output: ``config.json``, ``model.safetensors`` or shards or
``pytorch_model.bin``, and the tokenizer files) or, online, a hub id (downloaded once into the
Hugging Face cache). Weights are read safely: safetensors, or ``torch.load(weights_only=True)``.
The tokenizer is the folder's own. Any attention can be swapped in: the Q/K/V/O projections,
FFNs, norms and embeddings carry over; a swapped-in mechanism's own parameters start fresh.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from llnbench.errors import CheckpointError, DataError, LlnbenchError
from llnbench.model.hf_layout import from_hf_state, model_config_from_hf
from llnbench.model.pretrained import Pretrained
from llnbench.model.roberta import CORE
from llnbench.schema import AttentionConfig

HF_PREFIX = "hf:"
SAFETENSORS = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
TORCH_BIN = "pytorch_model.bin"
# the attention cores of an llnbench export whose mechanism has parameters (LARA, Nystrom, ...)
CORE_WEIGHTS = "llnbench_attention.safetensors"
HUB_FILES = [
    "config.json", "*.safetensors", SAFETENSORS_INDEX, "tokenizer.json", "tokenizer_config.json",
    "vocab.json", "merges.txt", "special_tokens_map.json",
]  # fmt: skip


def is_hf(ref: str | None) -> bool:
    return ref is not None and ref.startswith(HF_PREFIX)


def load_hf_pretrained(ref: str, attention: AttentionConfig | None = None) -> Pretrained:
    """``hf:PATH_OR_ID`` -> encoder (and MLM head) weights, model shape, attention, tokenizer.

    ``attention`` None: the attention an llnbench export records, else softmax (the checkpoint's
    own). The attention cores' weights an llnbench export carries are used when the attention is
    the recorded one, else the new mechanism starts from its initialisation.
    """
    folder = hf_folder(ref.removeprefix(HF_PREFIX))
    where = f"pretrained={ref}"
    config = read_config(folder, where)
    model = model_config_from_hf(config, where)
    recorded = (config.get("llnbench") or {}).get("attention")
    try:
        if attention is None:
            attention = AttentionConfig.from_config(recorded or {"name": "softmax"})
        wanted = AttentionConfig.from_config(attention.to_dict())
    except LlnbenchError as err:
        raise CheckpointError(f"{where}: {err}") from None
    pad_id = int(config.get("pad_token_id", 1))
    state = read_weights(folder, where)
    if recorded is None or wanted.to_dict() != recorded:
        state = {k: v for k, v in state.items() if CORE not in k}  # another mechanism: fresh
    encoder, head = from_hf_state(state, model, pad_id, where)
    return Pretrained(
        path=folder, model=model, attention=wanted, tokenizer=str(folder), encoder_state=encoder,
        step=0, config=config, source=ref, head_state=head,
    )  # fmt: skip


def check_pad_id(pre: Pretrained, pad_id: int) -> None:
    """The checkpoint's pad_token_id (its position offset) must be its tokenizer's <pad>."""
    configured = int(pre.config.get("pad_token_id", pad_id))
    if configured != pad_id:
        raise CheckpointError(
            f"pretrained={pre.source}: config.json's pad_token_id {configured} is not the "
            f"folder's tokenizer's <pad> id {pad_id}"
        )


def hf_folder(path_or_id: str) -> Path:
    """A local checkpoint folder as given, else a hub repository downloaded into the HF cache."""
    path = Path(path_or_id).expanduser()
    if path.is_dir():
        return path.resolve()
    if path.exists() or path_or_id.startswith((".", "/", "~")) or path_or_id.count("/") > 1:
        raise DataError(f"pretrained=hf:{path_or_id}: no such checkpoint folder")
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(path_or_id, allow_patterns=HUB_FILES))
    except Exception as err:  # offline, unknown repo, HTTP errors: several types
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise DataError(
            f"pretrained=hf:{path_or_id} is neither a folder nor a reachable hub model "
            f"({type(err).__name__}: {reason[:160]})"
        ) from None


def read_config(folder: Path, where: str) -> dict[str, Any]:
    file = folder / "config.json"
    if not file.is_file():
        raise CheckpointError(
            f"{where}: {folder} has no config.json (not a save_pretrained folder)"
        )
    try:
        return json.loads(file.read_text())
    except ValueError as err:
        raise CheckpointError(f"{where}: {file} is not valid JSON ({err})") from None


def read_weights(folder: Path, where: str) -> dict[str, Tensor]:
    """All tensors of the folder: one safetensors file, sharded safetensors, or a torch .bin
    (loaded with weights_only=True); plus the attention cores of an llnbench export."""
    if (folder / SAFETENSORS).is_file():
        state = _safetensors(folder / SAFETENSORS, where)
    elif (folder / SAFETENSORS_INDEX).is_file():
        index = json.loads((folder / SAFETENSORS_INDEX).read_text())
        state = {}
        for shard in sorted(set(index.get("weight_map", {}).values())):
            state.update(_safetensors(folder / shard, where))
    elif (folder / TORCH_BIN).is_file():
        try:
            state = torch.load(folder / TORCH_BIN, map_location="cpu", weights_only=True)
        except Exception as err:  # corrupt or unsafe pickles land here
            raise CheckpointError(f"{where}: cannot load {folder / TORCH_BIN}: {err}") from None
    else:
        raise CheckpointError(
            f"{where}: {folder} holds no weights ({SAFETENSORS}, {SAFETENSORS_INDEX} or {TORCH_BIN})"
        )
    if (folder / CORE_WEIGHTS).is_file():
        state = {**state, **_safetensors(folder / CORE_WEIGHTS, where)}
    return state


def _safetensors(file: Path, where: str) -> dict[str, Tensor]:
    from safetensors.torch import load_file

    try:
        return load_file(file, device="cpu")
    except Exception as err:  # truncated or foreign files
        raise CheckpointError(f"{where}: cannot read {file}: {err}") from None
