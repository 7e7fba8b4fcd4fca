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
from llnbench.model.hf_layout import from_hf_state, hf_pad_id, llnbench_entry, model_config_from_hf
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
    recorded = llnbench_entry(config, where).get("attention")
    try:
        if attention is None:
            attention = AttentionConfig.from_config(recorded or {"name": "softmax"})
        wanted = AttentionConfig.from_config(attention.to_dict())
    except LlnbenchError as err:
        raise CheckpointError(f"{where}: {err}") from None
    pad_id = hf_pad_id(config, where)
    state, origin = read_weights(folder, where)
    if recorded is None or wanted.to_dict() != recorded:
        state = {k: v for k, v in state.items() if CORE not in k}  # another mechanism: fresh
    encoder, head = from_hf_state(state, model, pad_id, where, origin)
    return Pretrained(
        path=folder, model=model, attention=wanted, tokenizer=str(folder), encoder_state=encoder,
        step=0, config=config, source=ref, head_state=head,
    )  # fmt: skip


def check_pad_id(pre: Pretrained, pad_id: int) -> None:
    """The checkpoint's pad_token_id (its position offset) must be its tokenizer's <pad>."""
    configured = hf_pad_id(pre.config, f"pretrained={pre.source}")
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
    return _read_json(file, where)


def _read_json(file: Path, where: str) -> Any:
    try:
        return json.loads(file.read_text())
    except (ValueError, OSError) as err:  # JSONDecodeError, UnicodeDecodeError, unreadable
        reason = str(err).splitlines()[0][:160] if str(err) else type(err).__name__
        raise CheckpointError(f"{where}: {file} is not valid JSON ({reason})") from None


def read_weights(folder: Path, where: str) -> tuple[dict[str, Tensor], dict[str, str]]:
    """All tensors of the folder: one safetensors file, sharded safetensors, or a torch .bin
    (loaded with weights_only=True); plus the attention cores of an llnbench export. Also which
    file each tensor came from, for errors."""
    if (folder / SAFETENSORS).is_file():
        files = [folder / SAFETENSORS]
    elif (folder / SAFETENSORS_INDEX).is_file():
        files = [folder / shard for shard in _shards(folder / SAFETENSORS_INDEX, where)]
    elif (folder / TORCH_BIN).is_file():
        files = [folder / TORCH_BIN]
    else:
        raise CheckpointError(
            f"{where}: {folder} holds no weights ({SAFETENSORS}, {SAFETENSORS_INDEX} or {TORCH_BIN})"
        )
    if (folder / CORE_WEIGHTS).is_file():
        files.append(folder / CORE_WEIGHTS)
    state: dict[str, Tensor] = {}
    origin: dict[str, str] = {}
    for file in files:
        part = _torch_bin(file, where) if file.name == TORCH_BIN else _safetensors(file, where)
        state.update(part)
        origin.update(dict.fromkeys(part, file.name))
    return state, origin


def _shards(index_file: Path, where: str) -> list[str]:
    """The shard files a ``model.safetensors.index.json`` names, checked."""
    index = _read_json(index_file, where)
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
        raise CheckpointError(
            f"{where}: {index_file} has no weight_map of tensor names to shard files; expected "
            '{"weight_map": {"<tensor>": "model-00001-of-0000N.safetensors", ...}}'
        )
    return sorted(set(weight_map.values()))


def _torch_bin(file: Path, where: str) -> dict[str, Tensor]:
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as err:  # corrupt or unsafe pickles land here
        reason = str(err).strip().splitlines()[0][:160] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"{where}: cannot load {file}: {reason}") from None
    if not isinstance(state, dict):
        raise CheckpointError(
            f"{where}: {file} holds a {type(state).__name__}; expected a state dict of tensors"
        )
    return state


def _safetensors(file: Path, where: str) -> dict[str, Tensor]:
    from safetensors.torch import load_file

    try:
        return load_file(file, device="cpu")
    except Exception as err:  # truncated, missing or foreign files
        reason = str(err).strip().splitlines()[0][:160] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"{where}: cannot read {file}: {reason}") from None
