"""llnbench's RoBERTa <-> ``transformers``' ``RobertaForMaskedLM``: config and state-dict layouts.

Pure torch: nothing here imports ``transformers``. The two models compute the same function:

- Q, K, V: one fused ``qkv`` Linear here (rows q | k | v, each split into heads the same way),
  three Linears there (``attention.self.query/key/value``).
- Positions: here a table of ``max_len + 2`` rows, row 1 the padding position and real tokens
  counting from row 2 (the attention mask says which are real); there the same offset is tied to
  the pad token id p: rows p + 1 ... are positions, row p is padding (``input_ids != p`` says
  which are real). Export writes a table of p + 1 + max_len rows; with RoBERTa's p = 1 it is the
  same table.
- Token types: HF adds ``token_type_embeddings[0]`` to every token; llnbench has none. Import
  adds that row to every position row (each token gets exactly one position row), export writes
  a zero row. Exact in the forward pass.
- MLM head: dense -> exact GELU -> LayerNorm -> tied word embeddings + bias on both sides.
- Classification heads (fine-tuned models) are not converted: GLUE trains a fresh head.
"""

from __future__ import annotations

import re
from dataclasses import asdict
from typing import Any

import torch
from torch import Tensor

from llnbench.errors import CheckpointError
from llnbench.model.roberta import CORE, POSITION_OFFSET, POSITION_PAD, ModelConfig
from llnbench.schema import AttentionConfig

HF_MODEL_TYPE = "roberta"
# model_type of an export whose attention transformers does not have: AutoModel refuses it
# instead of silently running softmax; RobertaForMaskedLM.from_pretrained loads it with a warning.
LLNBENCH_MODEL_TYPE = "llnbench_roberta"
MODEL_TYPES = (HF_MODEL_TYPE, LLNBENCH_MODEL_TYPE)

_LAYER = {  # llnbench encoder layer key -> HF layer key (qkv handled apart)
    "attention.out.weight": "attention.output.dense.weight",
    "attention.out.bias": "attention.output.dense.bias",
    "norm1.weight": "attention.output.LayerNorm.weight",
    "norm1.bias": "attention.output.LayerNorm.bias",
    "ffn.0.weight": "intermediate.dense.weight",
    "ffn.0.bias": "intermediate.dense.bias",
    "ffn.2.weight": "output.dense.weight",
    "ffn.2.bias": "output.dense.bias",
    "norm2.weight": "output.LayerNorm.weight",
    "norm2.bias": "output.LayerNorm.bias",
}
_HEAD = {  # llnbench MLM head -> HF lm_head
    "lm_dense.weight": "lm_head.dense.weight",
    "lm_dense.bias": "lm_head.dense.bias",
    "lm_norm.weight": "lm_head.layer_norm.weight",
    "lm_norm.bias": "lm_head.layer_norm.bias",
    "lm_bias": "lm_head.bias",
}
_QKV = ("query", "key", "value")
HF_FIELDS = {  # ModelConfig field -> the config.json field it is read from
    "layers": "num_hidden_layers", "hidden": "hidden_size", "heads": "num_attention_heads",
    "ffn": "intermediate_size", "max_len": "max_position_embeddings", "vocab_size": "vocab_size",
    "dropout": "hidden_dropout_prob", "attention_dropout": "attention_probs_dropout_prob",
    "layer_norm_eps": "layer_norm_eps",
}  # fmt: skip
_LAYER_KEY = re.compile(r"roberta\.encoder\.layer\.(\d+)\.")


def hf_config(
    model: ModelConfig,
    attention: AttentionConfig,
    *,
    pad_id: int,
    bos_id: int,
    eos_id: int,
) -> dict[str, Any]:
    """``RobertaConfig`` keyword arguments for ``model``; an ``llnbench`` entry records what
    transformers cannot express (the attention, causality), with ``model_type`` set apart."""
    plain = is_plain(model, attention)
    config: dict[str, Any] = {
        "vocab_size": model.vocab_size,
        "hidden_size": model.hidden,
        "num_hidden_layers": model.layers,
        "num_attention_heads": model.heads,
        "intermediate_size": model.ffn,
        "hidden_act": "gelu",  # exact (erf) GELU, as nn.GELU()
        "hidden_dropout_prob": model.dropout,
        "attention_probs_dropout_prob": model.attention_dropout,
        "max_position_embeddings": pad_id + 1 + model.max_len,
        "type_vocab_size": 1,
        "layer_norm_eps": model.layer_norm_eps,
        "pad_token_id": pad_id,
        "bos_token_id": bos_id,
        "eos_token_id": eos_id,
        "tie_word_embeddings": True,
    }
    config["llnbench"] = {
        "attention": attention.to_dict(),
        "causal": model.causal,
        "model": {k: v for k, v in asdict(model).items() if k != "name"},
        "runs_in_transformers": plain,
        "note": "a plain RobertaForMaskedLM: logits equal llnbench's"
        if plain
        else (
            f"attention {attention.name!r}{' (causal)' if model.causal else ''} is not "
            "transformers' softmax: RobertaForMaskedLM would run these weights with softmax "
            "attention (different outputs). Load it in llnbench: pretrained=hf:<this folder>."
        ),
    }
    return config


def is_plain(model: ModelConfig, attention: AttentionConfig) -> bool:
    """Does ``transformers``' RobertaForMaskedLM compute exactly this model?"""
    return attention.name == "softmax" and not model.causal


def to_hf_state(model: ModelConfig, state: dict[str, Tensor], pad_id: int) -> dict[str, Tensor]:
    """An llnbench ``RobertaForMaskedLM`` state dict as HF ``RobertaForMaskedLM``'s (tied decoder
    weights included, as ``load_state_dict`` expects them)."""
    get = _getter(state, "llnbench checkpoint")
    words = get("encoder.embeddings.words.weight")
    positions = get("encoder.embeddings.positions.weight")
    table = positions.new_zeros(pad_id + 1 + model.max_len, positions.shape[1])
    if pad_id == POSITION_PAD:
        table[0] = positions[0]  # the same table: a round trip returns it unchanged
    table[pad_id] = positions[POSITION_PAD]
    table[pad_id + 1 :] = positions[POSITION_OFFSET:]
    out = {
        "roberta.embeddings.word_embeddings.weight": words,
        "roberta.embeddings.position_embeddings.weight": table,
        "roberta.embeddings.token_type_embeddings.weight": words.new_zeros(1, words.shape[1]),
        "roberta.embeddings.LayerNorm.weight": get("encoder.embeddings.norm.weight"),
        "roberta.embeddings.LayerNorm.bias": get("encoder.embeddings.norm.bias"),
    }
    for i in range(model.layers):
        ours, theirs = f"encoder.layers.{i}.", f"roberta.encoder.layer.{i}."
        for kind in ("weight", "bias"):
            parts = get(f"{ours}attention.qkv.{kind}").chunk(3, dim=0)
            for name, part in zip(_QKV, parts):
                out[f"{theirs}attention.self.{name}.{kind}"] = part
        for key, hf_key in _LAYER.items():
            out[theirs + hf_key] = get(ours + key)
    for key, hf_key in _HEAD.items():
        out[hf_key] = get(key)
    out["lm_head.decoder.weight"] = words
    out["lm_head.decoder.bias"] = out["lm_head.bias"]
    return {k: v.contiguous() for k, v in out.items()}


def core_state(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """The attention cores' parameters and buffers, under HF-style layer names."""
    out = {}
    for key, value in state.items():
        if CORE in key and key.startswith("encoder.layers."):
            out["roberta.encoder.layer." + key.removeprefix("encoder.layers.")] = value
    return out


def model_config_from_hf(config: dict[str, Any], where: str) -> ModelConfig:
    """llnbench's ModelConfig for an HF RoBERTa ``config.json``; refuses what it cannot run. Every
    field read is checked: its type, and that the shape it gives is one llnbench can build."""
    if not isinstance(config, dict):
        raise CheckpointError(
            f"{where}: config.json holds a JSON {_json_kind(config)}; expected an object "
            "(a RobertaConfig)"
        )
    model_type = config.get("model_type")
    if model_type not in MODEL_TYPES:
        raise CheckpointError(
            f"{where}: model_type {model_type!r} is not a RoBERTa checkpoint; allowed: "
            f"{', '.join(MODEL_TYPES)}"
        )
    checks = {
        "hidden_act": ("gelu",),
        "position_embedding_type": ("absolute", None),
        "is_decoder": (False, None),
        "add_cross_attention": (False, None),
    }
    for key, allowed in checks.items():
        if config.get(key) not in allowed:
            raise CheckpointError(
                f"{where}: {key}={config.get(key)!r} is not supported (llnbench's RoBERTa has "
                f"{key}={allowed[0]!r})"
            )
    pad = hf_pad_id(config, where)
    recorded = llnbench_entry(config, where).get("model") or {}
    if not isinstance(recorded, dict):
        raise _field_error(where, "llnbench.model", recorded, "an object")
    shape = {k: _int_field(config, HF_FIELDS[k], where) for k in
             ("layers", "hidden", "heads", "ffn", "max_len", "vocab_size")}  # fmt: skip
    rates = {k: _float_field(config, HF_FIELDS[k], where, default) for k, default in
             (("dropout", 0.1), ("attention_dropout", 0.1), ("layer_norm_eps", 1e-5))}  # fmt: skip
    positions = shape["max_len"]
    shape["max_len"] = positions - (pad + 1)
    for key in ("layers", "hidden", "heads", "ffn", "vocab_size"):
        if shape[key] < 1:
            raise _field_error(where, HF_FIELDS[key], shape[key], "a positive integer")
    if shape["max_len"] < 1:
        raise _field_error(
            where, "max_position_embeddings", positions,
            f"more than pad_token_id + 1 = {pad + 1} (RoBERTa's positions start after <pad>)",
        )  # fmt: skip
    if shape["hidden"] % shape["heads"]:
        raise _field_error(
            where, "num_attention_heads", shape["heads"],
            f"a divisor of hidden_size={shape['hidden']}",
        )  # fmt: skip
    if pad >= shape["vocab_size"]:
        raise _field_error(where, "pad_token_id", pad, f"below vocab_size={shape['vocab_size']}")
    causal = recorded.get("causal", False)
    if not isinstance(causal, bool):
        raise _field_error(where, "llnbench.model.causal", causal, "true or false")
    model = ModelConfig(name="hf", **shape, **rates, causal=causal)
    try:
        model.validate()
    except Exception as err:
        raise CheckpointError(f"{where}: config.json: {err}") from None
    return model


def hf_pad_id(config: dict[str, Any], where: str) -> int:
    """config.json's ``pad_token_id`` (RoBERTa's 1 when absent): an integer >= 0."""
    pad = _int_field(config, "pad_token_id", where, 1)
    if pad < 0:
        raise _field_error(where, "pad_token_id", pad, "an integer >= 0 (the <pad> id)")
    return pad


def llnbench_entry(config: dict[str, Any], where: str) -> dict[str, Any]:
    """The ``llnbench`` object of an llnbench export's config.json ({} for other checkpoints)."""
    entry = config.get("llnbench") or {}
    if not isinstance(entry, dict):
        raise _field_error(where, "llnbench", entry, "an object (written by llnbench export)")
    return entry


_MISSING = object()


def _int_field(config: dict[str, Any], key: str, where: str, default: Any = _MISSING) -> int:
    value = config.get(key, default)
    if value is _MISSING:
        raise CheckpointError(f"{where}: config.json has no {key!r}")
    if isinstance(value, bool) or not isinstance(value, int):
        raise _field_error(where, key, value, "an integer")
    return value


def _float_field(config: dict[str, Any], key: str, where: str, default: float) -> float:
    value = config.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _field_error(where, key, value, "a number")
    return float(value)


def _field_error(where: str, key: str, value: Any, expected: str) -> CheckpointError:
    return CheckpointError(
        f"{where}: config.json field {key} is {value!r} ({_json_kind(value)}); expected {expected}"
    )


def _json_kind(value: Any) -> str:
    names = {dict: "object", list: "list", str: "string", bool: "boolean", int: "integer",
             float: "number", type(None): "null"}  # fmt: skip
    return names.get(type(value), type(value).__name__)


def from_hf_state(
    hf_state: dict[str, Tensor],
    model: ModelConfig,
    pad_id: int,
    where: str,
    origin: dict[str, str] | None = None,
) -> tuple[dict[str, Tensor], dict[str, Tensor] | None]:
    """(encoder state, MLM head state or None) from HF weights (``roberta.`` prefix optional,
    as RobertaModel saves them). Attention-core entries (an llnbench export) come along.

    Every tensor read must have the shape ``model`` (config.json) gives it, and the weights
    must hold exactly ``model.layers`` layers; ``origin`` (tensor -> file) names the file."""
    origin = dict(origin or {})
    if not any(k.startswith("roberta.") for k in hf_state):
        hf_state = {f"roberta.{k}": v for k, v in hf_state.items()}
        origin = {f"roberta.{k}": v for k, v in origin.items()}
    _check_layer_count(hf_state, model, where)
    hidden, ffn, vocab = model.hidden, model.ffn, model.vocab_size
    get = _getter(hf_state, where, origin)
    positions = get("roberta.embeddings.position_embeddings.weight",
                    (pad_id + 1 + model.max_len, hidden))  # fmt: skip
    types = hf_state.get("roberta.embeddings.token_type_embeddings.weight")
    if types is not None:
        types = get("roberta.embeddings.token_type_embeddings.weight", (types.shape[0], hidden))
        if types.shape[0] < 1:
            raise _shape_error(where, origin, "roberta.embeddings.token_type_embeddings.weight",
                               types, (1, hidden))  # fmt: skip
    shift = types[0] if types is not None else positions.new_zeros(hidden)
    table = positions.new_zeros(model.max_len + POSITION_OFFSET, hidden)
    if pad_id == POSITION_PAD:
        table[0] = positions[0] + shift
    table[POSITION_PAD] = positions[pad_id] + shift
    table[POSITION_OFFSET:] = positions[pad_id + 1 :] + shift
    encoder = {
        "embeddings.words.weight": get(
            "roberta.embeddings.word_embeddings.weight", (vocab, hidden)
        ),
        "embeddings.positions.weight": table,
        "embeddings.norm.weight": get("roberta.embeddings.LayerNorm.weight", (hidden,)),
        "embeddings.norm.bias": get("roberta.embeddings.LayerNorm.bias", (hidden,)),
    }
    layer_shapes = _layer_shapes(hidden, ffn)
    for i in range(model.layers):
        theirs, ours = f"roberta.encoder.layer.{i}.", f"layers.{i}."
        for kind in ("weight", "bias"):
            shape = (hidden, hidden) if kind == "weight" else (hidden,)
            parts = [get(f"{theirs}attention.self.{name}.{kind}", shape) for name in _QKV]
            encoder[f"{ours}attention.qkv.{kind}"] = torch.cat(parts, dim=0)
        for key, hf_key in _LAYER.items():
            encoder[ours + key] = get(theirs + hf_key, layer_shapes[key])
        prefix = f"{theirs}attention.core."
        for key, value in hf_state.items():
            if key.startswith(prefix):
                encoder[f"{ours}attention.core.{key.removeprefix(prefix)}"] = value
    head = None
    if "lm_head.dense.weight" in hf_state:
        head_shapes = {
            "lm_dense.weight": (hidden, hidden),
            "lm_dense.bias": (hidden,),
            "lm_norm.weight": (hidden,),
            "lm_norm.bias": (hidden,),
            "lm_bias": (vocab,),
        }
        head = {key: get(hf_key, head_shapes[key]) for key, hf_key in _HEAD.items()}  # fmt: skip
        decoder = hf_state.get("lm_head.decoder.weight")
        if decoder is not None and not torch.equal(decoder, encoder["embeddings.words.weight"]):
            raise CheckpointError(
                f"{where}: lm_head.decoder.weight is not tied to the word embeddings (llnbench's "
                "MLM head is)"
            )
    return encoder, head


def _layer_shapes(hidden: int, ffn: int) -> dict[str, tuple[int, ...]]:
    """The shape of each ``_LAYER`` tensor (llnbench key) in a layer of this width."""
    return {
        "attention.out.weight": (hidden, hidden), "attention.out.bias": (hidden,),
        "norm1.weight": (hidden,), "norm1.bias": (hidden,),
        "ffn.0.weight": (ffn, hidden), "ffn.0.bias": (ffn,),
        "ffn.2.weight": (hidden, ffn), "ffn.2.bias": (hidden,),
        "norm2.weight": (hidden,), "norm2.bias": (hidden,),
    }  # fmt: skip


def _check_layer_count(state: dict[str, Tensor], model: ModelConfig, where: str) -> None:
    """Weights of more (or fewer) layers than config.json's would be dropped (or missing)."""
    found = sorted({int(m.group(1)) for k in state if (m := _LAYER_KEY.match(k))})
    if found and found != list(range(model.layers)):
        held = f"layers {found[0]}..{found[-1]}" if len(found) > 1 else f"layer {found[0]}"
        raise CheckpointError(
            f"{where}: the weights hold {len(found)} encoder layers (roberta.encoder.{held}) "
            f"but config.json field num_hidden_layers is {model.layers}; expected them to agree"
        )


def _shape_error(where: str, origin: dict[str, str], key: str, tensor: Tensor, shape) -> Exception:
    file = origin.get(key, "the weights")
    return CheckpointError(
        f"{where}: {file}: tensor {key} has shape {tuple(tensor.shape)}; config.json "
        f"(hidden_size, intermediate_size, vocab_size, ...) gives it {tuple(shape)}"
    )


def _getter(state: dict[str, Tensor], where: str, origin: dict[str, str] | None = None):
    origin = origin or {}

    def get(key: str, shape: tuple[int, ...] | None = None) -> Tensor:
        if key not in state:
            raise CheckpointError(f"{where}: weights lack {key!r} (not a RoBERTa MLM/encoder?)")
        value = state[key]
        if not isinstance(value, Tensor):
            raise CheckpointError(
                f"{where}: {origin.get(key, 'the weights')}: {key} is a {type(value).__name__}, "
                "not a tensor"
            )
        if shape is not None and tuple(value.shape) != tuple(shape):
            raise _shape_error(where, origin, key, value, shape)
        return value

    return get
