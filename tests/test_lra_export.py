"""``data.export_dir``: the splits in LRA's file formats, read back by plain means (csv, json,
numpy) and compared with the examples the model trains on."""

from __future__ import annotations

import csv
import hashlib
import json

import numpy as np
from typer.testing import CliRunner

from llnbench.cli import app
from llnbench.data import listops, lra_text, pathfinder
from llnbench.data.lra import LraDataConfig, load_lra
from llnbench.data.lra_export import export_splits

SIZES = {"train_size": 12, "validation_size": 4, "test_size": 4}


def exported(tmp_path, task: str, **values):
    data = load_lra(task, LraDataConfig(cache_dir=str(tmp_path / "cache"), **SIZES, **values))
    paths = export_splits(data.task.kind, data.resolved.describe(), data.arrays, tmp_path / "out")
    return data, {p.name: p for p in paths}


def test_listops_is_lra_tsv_source_target(tmp_path) -> None:
    data, paths = exported(tmp_path, "listops", max_length=40, min_length=8, workers=1)
    assert set(paths) == {"basic_train.tsv", "basic_val.tsv", "basic_test.tsv", "manifest.json"}
    symbol = {name: i for i, name in enumerate(listops.VOCAB)}
    for split, name in (("train", "basic_train.tsv"), ("validation", "basic_val.tsv"),
                        ("test", "basic_test.tsv")):  # fmt: skip
        with paths[name].open(newline="") as f:
            rows = list(csv.reader(f, delimiter="\t"))
        assert rows[0] == ["Source", "Target"] and len(rows) == len(data.splits[split]) + 1
        for (source, target), ids, label in zip(rows[1:], data.splits[split].input_ids,
                                                data.splits[split].labels):  # fmt: skip
            assert [symbol[s] for s in source.split()] == list(ids[1:]) and int(target) == label


def test_pathfinder_is_one_npz_per_split_with_metadata(tmp_path) -> None:
    data, paths = exported(tmp_path, "pathfinder32")
    with np.load(paths["train.npz"], allow_pickle=False) as z:
        images, labels = z["images"], z["labels"]
        assert images.shape == (12, 32, 32) and images.dtype == np.uint8
        assert z["marker_centres"].shape == (12, 2, 2) and z["contour_length"].shape == (12,)
        assert list(z["difficulty"]) == ["hard"] * 12
    tokens = np.stack(data.splits["train"].input_ids)[:, 1:] - pathfinder.PIXEL0
    assert (
        np.array_equal(images.reshape(12, -1), tokens)
        and list(labels) == data.splits["train"].labels
    )


def test_text_is_jsonl_whose_bytes_are_the_tokens_and_the_manifest_checks(tmp_path) -> None:
    data, paths = exported(tmp_path, "text", source="standin", max_length=80)
    lines = paths["test.jsonl"].read_text(encoding="utf-8").splitlines()
    for line, ids, label in zip(lines, data.splits["test"].input_ids, data.splits["test"].labels):
        row = json.loads(line)
        assert list(row["text"].encode("utf-8")) == [int(t) - lra_text.BYTE0 for t in ids[1:]]
        assert row["label"] == label
    manifest = json.loads(paths["manifest.json"].read_text())
    for name, entry in manifest["files"].items():
        assert hashlib.sha256(paths[name].read_bytes()).hexdigest() == entry["sha256"]
    assert manifest["data"]["source"] == "standin"


def test_the_cli_exports_beside_training(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("LLNBENCH_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "exported"
    result = CliRunner().invoke(app, [
        "lra", "task=listops", "data.max_length=32", "data.min_length=6", "data.train_size=16",
        "data.validation_size=8", "data.test_size=8", "data.workers=1", "model.layers=1",
        "trainer.batch_size=8", "trainer.max_steps=1", "trainer.eval_every=1",
        "wandb.mode=disabled", f"run_dir={tmp_path / 'run'}", f"data.export_dir={out}",
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert (out / "basic_test.tsv").read_text().startswith("Source\tTarget\n")
