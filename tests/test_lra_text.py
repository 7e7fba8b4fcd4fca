"""LRA's Text task: the offline stand-in, local files in each accepted layout, the byte encoding
(checked against the source texts), the held-out validation split, and one-line errors (offline
hub included, without network retries)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from llnbench.cli import app
from llnbench.data import lra_text
from llnbench.data.lra import LraDataConfig, load_lra
from llnbench.errors import ConfigError, DataError

SMALL = {"train_size": 6, "validation_size": 2, "test_size": 3, "max_length": 64}
REVIEWS = [('A fine, "warm" film. Très bien — five stars.', 1), ("Dull\tand long;\nskip it.", 0),
           ("I loved every minute", 1), ("Awful acting, worse plot", 0), ("Great fun", 1),
           ("Boring", 0), ("Moving and funny", 1), ("Not worth it", 0), ("A gem", 1),
           ("Two hours lost", 0)]  # fmt: skip


def text_of(row: np.ndarray) -> str:
    assert row[0] == 1  # [CLS]
    return bytes(int(t) - lra_text.BYTE0 for t in row[1:]).decode("utf-8")


def write_local(root, layout: str) -> None:
    root.mkdir(parents=True, exist_ok=True)
    for split in ("train", "test"):
        if layout == "jsonl":
            lines = [json.dumps({"text": t, "label": y}) for t, y in REVIEWS]
            (root / f"{split}.jsonl").write_text("\n".join(lines) + "\n")
        elif layout == "csv":
            import csv

            with (root / f"{split}.csv").open("w", newline="") as f:
                writer = csv.writer(f)
                writer.writerow(["text", "label"])
                writer.writerows((t, "pos" if y else "neg") for t, y in REVIEWS)
        elif layout == "tsv":  # verbatim: a quote is text, tabs and newlines are not
            rows = [f"{t.replace(chr(9), ' ').replace(chr(10), ' ')}\t{y}" for t, y in REVIEWS]
            (root / f"{split}.tsv").write_text("text\tlabel\n" + "\n".join(rows) + "\n")
        else:  # aclImdb
            for i, (t, y) in enumerate(REVIEWS):
                folder = root / split / ("pos" if y else "neg")
                folder.mkdir(parents=True, exist_ok=True)
                (folder / f"{i}_7.txt").write_text(t)


def test_the_standin_is_named_and_encodes_its_snippets_as_bytes(tmp_path) -> None:
    data = load_lra("text", LraDataConfig(source="standin", cache_dir=str(tmp_path), **SMALL))
    assert data.resolved.standin and "NOT IMDb" in data.resolved.label
    pool = lra_text.read_pools("standin", None)["train"]
    known = dict(zip(*pool))
    seen = []
    for split in ("train", "validation", "test"):
        for row, label in zip(data.splits[split].input_ids, data.splits[split].labels):
            text = text_of(row)
            assert len(row) <= 64 and any(k.startswith(text) and known[k] == label for k in known)
            seen.append(text)
    assert len(set(seen)) == len(seen) == 11  # the splits are disjoint


def test_auto_is_the_standin_offline_and_hub_fails_fast(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert load_lra("text", LraDataConfig(cache_dir=str(tmp_path), **SMALL)).resolved.standin

    def no_network(*args, **kwargs):
        raise AssertionError("offline must not probe the network")

    monkeypatch.setattr(lra_text, "hub_reachable", no_network)
    import datasets

    def not_cached(*args, **kwargs):
        raise ConnectionError("offline")

    monkeypatch.setattr(datasets, "load_dataset", not_cached)
    with pytest.raises(DataError, match="cannot load stanfordnlp/imdb from the hub .offline"):
        load_lra("text", LraDataConfig(source="hub", cache_dir=str(tmp_path), **SMALL))


def test_an_unreachable_hub_fails_in_one_probe(monkeypatch, tmp_path) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.setattr(lra_text, "hub_reachable", lambda timeout=3.0: False)
    with pytest.raises(DataError, match="huggingface.co is unreachable"):
        load_lra("text", LraDataConfig(source="hub", cache_dir=str(tmp_path), **SMALL))


@pytest.mark.parametrize("layout", ["jsonl", "csv", "tsv", "aclImdb"])
def test_local_files_give_their_reviews_byte_for_byte(tmp_path, layout: str) -> None:
    write_local(tmp_path / "imdb", layout)
    cfg = LraDataConfig(source="local", local_dir=str(tmp_path / "imdb"),
                        cache_dir=str(tmp_path / "c"), **{**SMALL, "max_length": 20})  # fmt: skip
    data = load_lra("text", cfg)
    flat = layout == "tsv"
    expected = {
        lra_text.utf8_prefix(t.replace("\t", " ").replace("\n", " ") if flat else t, 19): y
        for t, y in REVIEWS
    }
    for split in ("train", "validation", "test"):
        for row, label in zip(data.splits[split].input_ids, data.splits[split].labels):
            assert expected[text_of(row).encode()] == label
    train = {text_of(r) for r in data.splits["train"].input_ids}
    assert not train & {text_of(r) for r in data.splits["validation"].input_ids}
    assert data.resolved.label == "IMDb (local files)"


def test_a_cut_never_splits_a_character() -> None:
    text = "ab€"  # € is 3 bytes
    assert [lra_text.utf8_prefix(text, n) for n in (2, 3, 4, 5)] == [b"ab", b"ab", b"ab",
                                                                     "ab€".encode()]  # fmt: skip


@pytest.mark.parametrize(
    ("values", "error", "message"),
    [
        ({"source": "local"}, ConfigError, "data.source=local needs data.local_dir"),
        ({"source": "web"}, ConfigError, "unknown data.source 'web'; allowed: auto, hub"),
        ({"source": "local", "local_dir": "/nonexistent"}, DataError, "is not a directory"),
        ({"source": "standin", "train_size": 99999}, ConfigError, "data.train_size=99999 is"),
        ({"difficulty": "hard"}, ConfigError, "data.difficulty applies to task pathfinder"),
        ({"max_depth": 3}, ConfigError, "data.max_depth applies to task listops only, not text"),
    ],
    ids=["local-without-dir", "unknown-source", "missing-dir", "too-many", "difficulty", "depth"],
)
def test_bad_text_values_are_one_line(tmp_path, values, error, message) -> None:
    with pytest.raises(error, match=message):
        load_lra("text", LraDataConfig(cache_dir=str(tmp_path), **{**SMALL, **values}))


def test_a_bad_local_label_names_the_file_and_line(tmp_path) -> None:
    write_local(tmp_path / "imdb", "jsonl")
    (tmp_path / "imdb" / "test.jsonl").write_text('{"text": "ok", "label": "maybe"}\n')
    cfg = LraDataConfig(source="local", local_dir=str(tmp_path / "imdb"), cache_dir=str(tmp_path))
    with pytest.raises(DataError, match=r"test.jsonl line 1: label 'maybe' is not one of"):
        load_lra("text", cfg)


def test_text_runs_end_to_end_on_the_standin(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("LLNBENCH_CACHE", str(tmp_path / "cache"))
    run_dir = tmp_path / "run"
    result = CliRunner().invoke(app, [
        "lra", "task=text", "data.train_size=24", "data.validation_size=8", "data.test_size=8",
        "data.max_length=48", "model.layers=1", "trainer.batch_size=8", "trainer.max_steps=2",
        "trainer.eval_every=2", "wandb.mode=disabled", f"run_dir={run_dir}",
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "STAND-IN" in result.output
    results = json.loads((run_dir / "results.json").read_text())
    assert results["standin"] and "NOT IMDb" in results["data_label"]
    assert results["model"]["vocab_size"] == 258 and results["pooling"] == "mean"


def test_the_cli_offline_with_source_hub_is_one_line(tmp_path, monkeypatch) -> None:
    import datasets

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: (_ for _ in ()).throw(OSError()))
    result = CliRunner().invoke(
        app, ["lra", "task=text", "data.source=hub", f"run_dir={tmp_path / 'run'}"]
    )
    text = result.output.strip()
    assert result.exit_code == 2 and len(text.splitlines()) == 1 and "Traceback" not in text
    assert "cannot load stanfordnlp/imdb from the hub (offline" in text
    assert not (tmp_path / "run").exists()
