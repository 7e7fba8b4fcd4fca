"""A compact RoBERTa encoder whose self-attention core comes from the attention registry.

Read top to bottom: embeddings (tokens + learned positions with RoBERTa's offset), post-LN encoder
layers (x = LN(x + Attn(x)); x = LN(x + FFN(x))), an MLM head tied to the word embeddings that
projects only the masked positions (fairseq's ``masked_tokens``), and a classification head on <s>.
The Q/K/V/O projections live here; ``build_attention`` supplies the core on (B, H, N, d) tensors.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from llnbench.attention import build_attention
from llnbench.errors import CheckpointError, ConfigError
from llnbench.schema import AttentionConfig

IGNORE_INDEX = -100
# RoBERTa's learned positions start at padding_idx + 1 = 2, so the table has max_len + 2 rows.
POSITION_PAD = 1
POSITION_OFFSET = 2
# state-dict keys of the attention cores' own parameters and buffers contain this
CORE = ".attention.core."
POOLINGS = ("cls", "mean")


@dataclass
class ModelConfig:
    """Encoder shape (``conf/model/<preset>.yaml``); head dim = hidden / heads."""

    name: str = "custom"  # the preset's name, for run names; not part of the shape
    layers: int = 2
    hidden: int = 128
    heads: int = 2
    ffn: int = 512
    max_len: int = 128  # learned positions; the longest sequence the model accepts
    vocab_size: int = 50264  # 50,262 real entries rounded up to a multiple of 8
    dropout: float = 0.1
    attention_dropout: float = 0.1  # only where the mechanism has probabilities (softmax, local)
    layer_norm_eps: float = 1e-5
    causal: bool = False
    pooling: str = "cls"  # classification from: cls (the <s> token) | mean (over real tokens)

    def validate(self) -> None:
        for name in ("layers", "hidden", "heads", "ffn", "max_len", "vocab_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"model.{name} must be positive, got {getattr(self, name)}")
        if self.hidden % self.heads:
            raise ConfigError(
                f"model.hidden={self.hidden} is not divisible by model.heads={self.heads}"
            )
        for name in ("dropout", "attention_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ConfigError(f"model.{name} must be in [0, 1), got {getattr(self, name)}")
        if self.layer_norm_eps <= 0:
            raise ConfigError(f"model.layer_norm_eps must be positive, got {self.layer_norm_eps}")
        if self.pooling not in POOLINGS:
            raise ConfigError(
                f"unknown model.pooling {self.pooling!r}; allowed: {', '.join(POOLINGS)}"
            )

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads


def shape_signature(model: ModelConfig, attention: AttentionConfig) -> dict[str, object]:
    """What fixes the parameter shapes and the computation; a checkpoint must match it."""
    shape = {k: v for k, v in asdict(model).items() if k != "name"}
    if shape["pooling"] == "cls":  # the default: checkpoints from before the option still match
        del shape["pooling"]
    return {"model": shape, "attention": attention.to_dict()}


def shape_hash(signature: dict[str, object]) -> str:
    return hashlib.sha256(json.dumps(signature, sort_keys=True).encode()).hexdigest()[:16]


class Embeddings(nn.Module):
    def __init__(self, cfg: ModelConfig, pad_id: int):
        super().__init__()
        self.max_len = cfg.max_len
        self.words = nn.Embedding(cfg.vocab_size, cfg.hidden, padding_idx=pad_id)
        self.positions = nn.Embedding(
            cfg.max_len + POSITION_OFFSET, cfg.hidden, padding_idx=POSITION_PAD
        )
        self.norm = nn.LayerNorm(cfg.hidden, eps=cfg.layer_norm_eps)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None) -> Tensor:
        n = input_ids.shape[1]
        if n > self.max_len:
            raise ConfigError(
                f"sequence length {n} exceeds model.max_len={self.max_len} (the learned "
                f"position table); raise model.max_len or shorten the input"
            )
        if attention_mask is None:
            positions = torch.arange(POSITION_OFFSET, n + POSITION_OFFSET, device=input_ids.device)
            positions = positions.expand_as(input_ids)
        else:  # real tokens count up from the offset; padding takes the padding position
            real = attention_mask.long()
            positions = (torch.cumsum(real, dim=1) + POSITION_PAD) * real + POSITION_PAD * (
                1 - real
            )
        x = self.words(input_ids) + self.positions(positions)
        return self.dropout(self.norm(x))


class SelfAttention(nn.Module):
    """Q/K/V/O projections around a registered attention core."""

    def __init__(self, cfg: ModelConfig, attention: AttentionConfig):
        super().__init__()
        self.heads, self.head_dim = cfg.heads, cfg.head_dim
        self.qkv = nn.Linear(cfg.hidden, 3 * cfg.hidden)
        self.out = nn.Linear(cfg.hidden, cfg.hidden)
        self.core = build_attention(
            attention.name,
            num_heads=cfg.heads,
            head_dim=cfg.head_dim,
            causal=cfg.causal,
            dropout=cfg.attention_dropout,
            **attention.options,
        )

    def forward(self, x: Tensor, attention_mask: Tensor | None) -> Tensor:
        b, n, _ = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        out = self.core(q, k, v, attention_mask)  # (B, H, N, d)
        return self.out(out.transpose(1, 2).reshape(b, n, -1))


class EncoderLayer(nn.Module):
    def __init__(self, cfg: ModelConfig, attention: AttentionConfig):
        super().__init__()
        self.attention = SelfAttention(cfg, attention)
        self.norm1 = nn.LayerNorm(cfg.hidden, eps=cfg.layer_norm_eps)
        self.ffn = nn.Sequential(
            nn.Linear(cfg.hidden, cfg.ffn), nn.GELU(), nn.Linear(cfg.ffn, cfg.hidden)
        )
        self.norm2 = nn.LayerNorm(cfg.hidden, eps=cfg.layer_norm_eps)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: Tensor, attention_mask: Tensor | None) -> Tensor:
        x = self.norm1(x + self.dropout(self.attention(x, attention_mask)))
        return self.norm2(x + self.dropout(self.ffn(x)))


class Encoder(nn.Module):
    def __init__(self, cfg: ModelConfig, attention: AttentionConfig, pad_id: int):
        super().__init__()
        self.embeddings = Embeddings(cfg, pad_id)
        self.layers = nn.ModuleList(EncoderLayer(cfg, attention) for _ in range(cfg.layers))

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        x = self.embeddings(input_ids, attention_mask)
        for layer in self.layers:
            x = layer(x, attention_mask)
        return x

    def attention_cores(self) -> list[nn.Module]:
        return [layer.attention.core for layer in self.layers]

    def load_weights(self, state: dict[str, Tensor], where: str) -> None:
        """Load encoder weights. A state without any attention-core entry (a transformers
        checkpoint, or any softmax model) leaves this model's cores (LARA's landmark MLPs, the
        Nystrom conv, ...) at their initialisation: the attention is being swapped in."""
        missing, unexpected = self._load(state, where)
        if not any(CORE in key for key in state):
            missing = [key for key in missing if CORE not in key]
        if missing or unexpected:
            shown = "; ".join(
                part
                for part in (
                    f"missing {', '.join(missing[:3])}" if missing else "",
                    f"unexpected {', '.join(unexpected[:3])}" if unexpected else "",
                )
                if part
            )
            raise CheckpointError(f"{where} does not fit the model: {shown}")

    def _load(self, state: dict[str, Tensor], where: str) -> tuple[list[str], list[str]]:
        try:
            result = self.load_state_dict(state, strict=False)
        except RuntimeError as err:  # shape mismatches
            lines = [line.strip() for line in str(err).strip().splitlines() if line.strip()]
            first = lines[1] if len(lines) > 1 else lines[0]  # the first mismatch
            raise CheckpointError(f"{where} does not fit the model: {first}") from None
        return list(result.missing_keys), list(result.unexpected_keys)


def init_weights(module: nn.Module) -> None:
    """RoBERTa/BERT init: normal(0, 0.02) weights, zero biases, LN (1, 0), zero padding rows."""
    if isinstance(module, nn.Linear):
        nn.init.normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Embedding):
        nn.init.normal_(module.weight, std=0.02)
        if module.padding_idx is not None:
            with torch.no_grad():
                module.weight[module.padding_idx].zero_()
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


class RobertaForMaskedLM(nn.Module):
    def __init__(self, cfg: ModelConfig, attention: AttentionConfig, pad_id: int):
        super().__init__()
        self.cfg, self.attention_cfg, self.pad_id = cfg, attention, pad_id
        self.encoder = Encoder(cfg, attention, pad_id)
        self.lm_dense = nn.Linear(cfg.hidden, cfg.hidden)
        self.lm_norm = nn.LayerNorm(cfg.hidden, eps=cfg.layer_norm_eps)
        self.lm_bias = nn.Parameter(torch.zeros(cfg.vocab_size))
        self.apply(init_weights)

    def forward(
        self, input_ids: Tensor, labels: Tensor, attention_mask: Tensor | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Mean cross-entropy over masked positions, their logits (M, V) and targets (M,)."""
        hidden = self.encoder(input_ids, attention_mask)
        masked = labels != IGNORE_INDEX
        # project only the masked positions: the 50k-way head over every token dominates a step
        logits = self.project(hidden[masked])
        targets = labels[masked]
        return F.cross_entropy(logits.float(), targets), logits, targets

    def project(self, hidden: Tensor) -> Tensor:
        """The MLM head: vocabulary logits of hidden states (..., hidden) -> (..., vocab)."""
        h = self.lm_norm(F.gelu(self.lm_dense(hidden)))
        return F.linear(h, self.encoder.embeddings.words.weight, self.lm_bias)

    def logits(self, input_ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        """(B, N, vocab) logits at every position (``transformers``' MLM output)."""
        return self.project(self.encoder(input_ids, attention_mask))


class RobertaForSequenceClassification(nn.Module):
    """Classification (num_labels >= 2) or regression (num_labels = 1, MSE) on the <s> token
    (``pooling="cls"``) or the mean of the real tokens (``pooling="mean"``)."""

    def __init__(self, cfg: ModelConfig, attention: AttentionConfig, pad_id: int, num_labels: int):
        super().__init__()
        self.cfg, self.attention_cfg, self.pad_id = cfg, attention, pad_id
        self.num_labels = num_labels
        self.encoder = Encoder(cfg, attention, pad_id)
        self.head = nn.Sequential(
            nn.Dropout(cfg.dropout),
            nn.Linear(cfg.hidden, cfg.hidden),
            nn.Tanh(),
            nn.Dropout(cfg.dropout),
            nn.Linear(cfg.hidden, num_labels),
        )
        self.apply(init_weights)

    def forward(
        self, input_ids: Tensor, labels: Tensor | None = None, attention_mask: Tensor | None = None
    ) -> tuple[Tensor | None, Tensor]:
        hidden = self.encoder(input_ids, attention_mask)
        logits = self.head(pool(hidden, attention_mask, self.cfg.pooling)).float()
        if labels is None:
            return None, logits
        if self.num_labels == 1:
            return F.mse_loss(logits.squeeze(-1), labels.float()), logits
        return F.cross_entropy(logits, labels.long()), logits


def pool(hidden: Tensor, attention_mask: Tensor | None, pooling: str) -> Tensor:
    """(B, N, D) -> (B, D): the first token's state, or the mean over real tokens (padding
    excluded; the pooling of the PyTorch LRA code)."""
    if pooling == "cls":
        return hidden[:, 0]
    if attention_mask is None:
        return hidden.mean(dim=1)
    mask = attention_mask.to(hidden.dtype).unsqueeze(-1)
    return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def human_count(n: int) -> str:
    return f"{n / 1e6:.1f} M" if n >= 1e6 else f"{n / 1e3:.1f} k"
