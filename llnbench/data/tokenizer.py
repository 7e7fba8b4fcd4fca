"""RoBERTa's byte-level BPE tokenizer, built from the vendored GPT-2 files or loaded from the hub.

Built with ``tokenizers`` directly: transformers 5.x's ``RobertaTokenizerFast(vocab_file=…,
merges_file=…)`` silently yields a 5-token tokenizer that maps every word to ``<unk>`` (spec §3);
``load_tokenizer`` checks the vocabulary size so that can never reach training.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path

from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors

from llnbench.data import GPT2_MERGES_ASSET, GPT2_VOCAB_ASSET, read_asset
from llnbench.data.hub import require_hub
from llnbench.errors import DataError

EMBEDDED = "embedded"
ROBERTA_SPECIALS = ("<s>", "<pad>", "</s>", "<unk>", "<mask>")
GPT2_VOCAB_SIZE = 50257  # ids 0..50256; the RoBERTa specials follow at 50257..50261
MIN_VOCAB = 50000  # anything smaller is a broken tokenizer (the 5-token pitfall)


class RobertaTokenizer:
    """A ``tokenizers.Tokenizer`` with RoBERTa's special ids at hand.

    ``encode`` gives bare ids; ``encode_batch`` adds ``<s> A </s>`` / ``<s> A </s></s> B </s>``.
    """

    def __init__(self, tokenizer: Tokenizer, name: str):
        self.tokenizer = tokenizer
        self.name = name
        tokenizer.no_padding()
        tokenizer.no_truncation()
        ids = {tok: tokenizer.token_to_id(tok) for tok in ROBERTA_SPECIALS}
        missing = [tok for tok, i in ids.items() if i is None]
        if missing:
            raise DataError(
                f"tokenizer {name!r} lacks RoBERTa special tokens {', '.join(missing)}; "
                f"use a RoBERTa tokenizer (e.g. FacebookAI/roberta-base) or 'embedded'"
            )
        self.bos_id: int = ids["<s>"]
        self.pad_id: int = ids["<pad>"]
        self.eos_id: int = ids["</s>"]
        self.unk_id: int = ids["<unk>"]
        self.mask_id: int = ids["<mask>"]
        self.vocab_size: int = tokenizer.get_vocab_size(with_added_tokens=True)
        if self.vocab_size < MIN_VOCAB:
            raise DataError(
                f"tokenizer {name!r} has only {self.vocab_size} tokens (expected > {MIN_VOCAB}); "
                "it was built wrongly (see spec §3: the 5-token tokenizer pitfall)"
            )

    @property
    def special_ids(self) -> frozenset[int]:
        """Ids never masked and never drawn as random replacements."""
        return frozenset((self.bos_id, self.pad_id, self.eos_id, self.unk_id, self.mask_id))

    @cached_property
    def fingerprint(self) -> str:
        """sha256 of the serialised tokenizer: two tokenizers with the same name but different
        vocabularies never share a cache entry."""
        return hashlib.sha256(self.tokenizer.to_str().encode("utf-8")).hexdigest()

    def __len__(self) -> int:
        return self.vocab_size

    def __repr__(self) -> str:
        return f"RobertaTokenizer(name={self.name!r}, vocab_size={self.vocab_size})"

    def encode(self, text: str) -> list[int]:
        """Ids of ``text`` without special tokens."""
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def encode_batch(
        self,
        texts: Sequence[str],
        pairs: Sequence[str] | None = None,
        max_length: int | None = None,
        add_special_tokens: bool = True,
    ) -> list[list[int]]:
        """Ids of many texts (or text pairs), with specials and longest-first truncation.

        ``max_length`` counts the special tokens, as the model sees them.
        """
        if pairs is not None and len(pairs) != len(texts):
            raise ValueError(f"{len(texts)} texts but {len(pairs)} pairs")
        inputs: list = list(texts) if pairs is None else list(zip(texts, pairs))
        if not inputs:
            return []
        if max_length is not None:
            self.tokenizer.enable_truncation(max_length, strategy="longest_first")
        try:
            encodings = self.tokenizer.encode_batch_fast(
                inputs, add_special_tokens=add_special_tokens
            )
        finally:
            if max_length is not None:
                self.tokenizer.no_truncation()
        return [e.ids for e in encodings]

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=skip_special_tokens)


def build_embedded_tokenizer() -> Tokenizer:
    """GPT-2's BPE (vendored from openai-whisper) plus RoBERTa's specials at 50257..50261."""
    vocab = json.loads(read_asset(GPT2_VOCAB_ASSET))
    merges = read_asset(GPT2_MERGES_ASSET).decode("utf-8")
    tok = build_bpe_tokenizer(vocab, merges)
    bos = tok.token_to_id("<s>")
    if bos != GPT2_VOCAB_SIZE:
        raise DataError(f"embedded GPT-2 vocabulary has unexpected size (<s> got id {bos})")
    return tok


def build_bpe_tokenizer(vocab: dict[str, int], merges: str) -> Tokenizer:
    """RoBERTa's byte-level BPE from a ``vocab.json`` mapping and ``merges.txt`` text; the
    specials are added (after the vocabulary) unless the vocabulary has them already."""
    lines = merges.split("\n")
    pairs = [tuple(line.split(" ")) for line in lines if line and not line.startswith("#version")]
    tok = Tokenizer(models.BPE(vocab=vocab, merges=pairs))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    # "<mask>" swallows the space before it, as in RoBERTa ("a <mask> b").
    specials = [AddedToken(t, special=True, lstrip=(t == "<mask>")) for t in ROBERTA_SPECIALS]
    tok.add_special_tokens(specials)
    bos, eos = tok.token_to_id("<s>"), tok.token_to_id("</s>")
    tok.post_processor = processors.RobertaProcessing(("</s>", eos), ("<s>", bos))
    return tok


def load_tokenizer(name: str = EMBEDDED) -> RobertaTokenizer:
    """``"embedded"`` (offline, vendored GPT-2 BPE), a local folder (a transformers checkpoint's
    ``tokenizer.json``, or its ``vocab.json`` + ``merges.txt``), or a hub id such as
    ``FacebookAI/roberta-base``."""
    if name == EMBEDDED:
        return RobertaTokenizer(build_embedded_tokenizer(), EMBEDDED)
    if Path(name).is_dir():
        return RobertaTokenizer(tokenizer_from_folder(Path(name)), name)
    require_hub(
        f"tokenizer {name!r}", f"use data.tokenizer={EMBEDDED} (the vendored GPT-2 BPE)",
        flag="HF_HUB_OFFLINE",
    )  # fmt: skip
    try:
        tok = Tokenizer.from_pretrained(name)
    except Exception as exc:  # hub client raises several types (offline, 404, HTTP, OSError)
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(
            f"cannot load tokenizer {name!r} from the hub ({type(exc).__name__}: {reason[:120]}); "
            "offline (HF_HUB_OFFLINE=1 / HF_DATASETS_OFFLINE=1) or without a network use "
            f"data.tokenizer={EMBEDDED} (the vendored GPT-2 BPE)"
        ) from exc
    return RobertaTokenizer(tok, name)


def tokenizer_from_folder(folder: Path) -> Tokenizer:
    """The tokenizer a transformers checkpoint folder holds."""
    try:
        if (folder / "tokenizer.json").is_file():
            return Tokenizer.from_file(str(folder / "tokenizer.json"))
        if (folder / "vocab.json").is_file() and (folder / "merges.txt").is_file():
            vocab = json.loads((folder / "vocab.json").read_text(encoding="utf-8"))
            return build_bpe_tokenizer(vocab, (folder / "merges.txt").read_text(encoding="utf-8"))
    except Exception as exc:  # a corrupt file: tokenizers and json raise several types
        raise DataError(f"cannot read the tokenizer in {folder}: {exc}") from None
    raise DataError(
        f"{folder} holds no tokenizer (tokenizer.json, or vocab.json + merges.txt); the model and "
        "its tokenizer must come from the same folder"
    )
