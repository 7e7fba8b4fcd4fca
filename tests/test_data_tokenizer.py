"""The RoBERTa tokenizer built from the vendored GPT-2 files (spec §3)."""

import os

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
from tokenizers import Tokenizer, models, pre_tokenizers

from llnbench.data import tokenizer as tokenizer_module
from llnbench.data.tokenizer import RobertaTokenizer, load_tokenizer
from llnbench.errors import DataError


@pytest.fixture(scope="module")
def tok() -> RobertaTokenizer:
    return load_tokenizer("embedded")


def test_vocabulary_is_gpt2_plus_roberta_specials(tok):
    assert len(tok) > 50000  # the 5-token pitfall would give 5
    assert len(tok) == tok.vocab_size == 50262
    assert (tok.bos_id, tok.pad_id, tok.eos_id, tok.unk_id, tok.mask_id) == (
        50257,
        50258,
        50259,
        50260,
        50261,
    )
    assert tok.special_ids == frozenset(range(50257, 50262))
    assert tok.name == "embedded"


def test_known_ids_without_and_with_specials(tok):
    assert tok.encode("Hello world") == [15496, 995]
    assert tok.encode_batch(["Hello world"]) == [[50257, 15496, 995, 50259]]


def test_round_trip_of_a_sentence(tok):
    text = "The café’s naïve résumé — 42 items!  Two spaces,\nand a new line."
    ids = tok.encode(text)
    assert 0 < len(ids) < len(text)
    assert tok.unk_id not in ids
    assert tok.decode(ids) == text


def test_pair_layout(tok):
    a, b = "Hello world", "How are you?"
    (ids,) = tok.encode_batch([a], [b])
    assert ids == [tok.bos_id, *tok.encode(a), tok.eos_id, tok.eos_id, *tok.encode(b), tok.eos_id]
    assert tok.encode(b) == [2437, 389, 345, 30]


def test_pairs_truncate_longest_first_within_max_length(tok):
    long, short = "a b c d e f g h", "x y z"
    (ids,) = tok.encode_batch([long], [short], max_length=8)
    # 8 = 4 specials + 4 content tokens: the longer side loses tokens first (2 + 2 remain)
    bos, eos = tok.bos_id, tok.eos_id
    assert ids == [bos, *tok.encode("a b"), eos, eos, *tok.encode("x y"), eos]
    # truncation is per call: the next call without max_length is untouched
    (full,) = tok.encode_batch([long], [short])
    assert len(full) == 4 + 8 + 3


def test_mask_token_swallows_the_space_before_it(tok):
    assert tok.encode("a <mask> b") == [64, tok.mask_id, 275]


def test_tiny_tokenizer_is_refused():
    """A 5-token vocabulary (transformers 5.x keyword pitfall) must never reach training."""
    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3, "<mask>": 4}
    tiny = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tiny.pre_tokenizer = pre_tokenizers.Whitespace()
    with pytest.raises(DataError, match="only 5 tokens"):
        RobertaTokenizer(tiny, "tiny")


def test_tokenizer_without_roberta_specials_is_refused():
    bare = Tokenizer(models.WordLevel({"a": 0, "[UNK]": 1}, unk_token="[UNK]"))
    with pytest.raises(DataError, match=r"lacks RoBERTa special tokens <s>, <pad>"):
        RobertaTokenizer(bare, "bert-like")


def test_hub_failure_is_one_line_naming_id_flags_and_embedded(monkeypatch):
    class OfflineTokenizer:
        @staticmethod
        def from_pretrained(name):
            raise OSError("We couldn't connect to 'https://huggingface.co' (offline)")

    monkeypatch.setattr(tokenizer_module, "Tokenizer", OfflineTokenizer)
    with pytest.raises(DataError) as info:
        load_tokenizer("FacebookAI/roberta-base")
    msg = str(info.value)
    assert "\n" not in msg
    assert "'FacebookAI/roberta-base'" in msg
    assert "HF_HUB_OFFLINE" in msg and "HF_DATASETS_OFFLINE" in msg
    assert "data.tokenizer=embedded" in msg


def test_fingerprint_identifies_the_vocabulary(tok):
    assert len(tok.fingerprint) == 64
    assert tok.fingerprint == load_tokenizer().fingerprint
