"""The compact RoBERTa: shapes, positions, heads, and masks flowing through every mechanism."""

from __future__ import annotations

import pytest
import torch

from llnbench.attention import ATTENTIONS
from llnbench.errors import ConfigError
from llnbench.model.roberta import (
    IGNORE_INDEX,
    ModelConfig,
    RobertaForMaskedLM,
    RobertaForSequenceClassification,
    count_parameters,
)
from llnbench.schema import AttentionConfig

PAD = 50258
SMALL = ModelConfig(layers=2, hidden=64, heads=2, ffn=128, max_len=40, vocab_size=50264)


def test_base_preset_has_roberta_base_size() -> None:
    cfg = ModelConfig(layers=12, hidden=768, heads=12, ffn=3072, max_len=512)
    with torch.device("meta"):
        model = RobertaForMaskedLM(cfg, AttentionConfig("softmax"), PAD)
    # HF RobertaForMaskedLM (roberta-base) has 124.7 M parameters incl. the tied decoder's bias
    assert abs(count_parameters(model) - 124.7e6) < 0.5e6


def test_positions_follow_roberta_offset() -> None:
    model = RobertaForMaskedLM(SMALL, AttentionConfig("softmax"), PAD).eval()
    emb = model.encoder.embeddings
    ids = torch.randint(0, 50000, (2, 6))
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [0, 0, 1, 1, 1, 1]])
    captured = {}
    emb.positions.register_forward_hook(lambda m, i, o: captured.update(pos=i[0]))
    emb(ids, mask)
    assert captured["pos"].tolist() == [[2, 3, 4, 5, 6, 7], [1, 1, 2, 3, 4, 5]]
    assert emb.positions.num_embeddings == SMALL.max_len + 2
    assert torch.all(emb.positions.weight[1] == 0) and torch.all(emb.words.weight[PAD] == 0)


def test_too_long_input_is_a_clear_error() -> None:
    model = RobertaForMaskedLM(SMALL, AttentionConfig("lln"), PAD)
    ids = torch.randint(0, 50000, (1, 41))
    with pytest.raises(ConfigError, match="sequence length 41 exceeds model.max_len=40"):
        model(ids, torch.full_like(ids, IGNORE_INDEX))


def test_mlm_head_scores_only_masked_positions_and_is_tied() -> None:
    model = RobertaForMaskedLM(SMALL, AttentionConfig("lln"), PAD).eval()
    ids = torch.randint(0, 50000, (2, 16))
    labels = torch.full_like(ids, IGNORE_INDEX)
    labels[0, 3], labels[1, 7] = 11, 42
    loss, logits, targets = model(ids, labels)
    assert logits.shape == (2, SMALL.vocab_size) and targets.tolist() == [11, 42]
    hidden = model.encoder(ids)
    full = torch.nn.functional.linear(
        model.lm_norm(torch.nn.functional.gelu(model.lm_dense(hidden))),
        model.encoder.embeddings.words.weight,
        model.lm_bias,
    )
    expected = torch.nn.functional.cross_entropy(full[labels != IGNORE_INDEX], targets)
    torch.testing.assert_close(loss, expected)


@pytest.mark.parametrize("name", list(ATTENTIONS))
def test_padding_does_not_change_real_outputs(name: str) -> None:
    """A padded batch gives the same classification logits as each sequence alone (eval)."""
    options = {"stats_scope": "sequence"} if name in ("lln", "lln_diag") else {}
    torch.manual_seed(0)
    model = RobertaForSequenceClassification(SMALL, AttentionConfig(name, options), PAD, 3).eval()
    a = torch.randint(0, 50000, (1, 30))
    b = torch.randint(0, 50000, (1, 17))
    batch = torch.full((2, 30), PAD)
    batch[0], batch[1, :17] = a[0], b[0]
    mask = batch != PAD
    _, logits = model(batch, attention_mask=mask)
    _, alone_a = model(a, attention_mask=torch.ones_like(a, dtype=torch.bool))
    _, alone_b = model(b, attention_mask=torch.ones_like(b, dtype=torch.bool))
    torch.testing.assert_close(logits, torch.cat([alone_a, alone_b]), atol=2e-5, rtol=1e-4)


def test_regression_head_uses_mse() -> None:
    model = RobertaForSequenceClassification(SMALL, AttentionConfig("softmax"), PAD, 1).eval()
    ids = torch.randint(0, 50000, (3, 10))
    labels = torch.tensor([0.5, 2.0, 4.5])
    loss, logits = model(ids, labels)
    torch.testing.assert_close(loss, torch.mean((logits.squeeze(-1) - labels) ** 2))


def test_hidden_not_divisible_by_heads_is_refused() -> None:
    with pytest.raises(ConfigError, match="not divisible"):
        ModelConfig(hidden=100, heads=3).validate()
