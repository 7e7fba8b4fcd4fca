"""The LRA data cache proves itself: each kind of damage (wrong labels, bad offsets, a missing
field, short labels, a garbled record, a truncated file, another config's file) is rebuilt with
one warning line and gives the same data; a directory in its place is refused in one line."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from llnbench.data.lra import LraDataConfig, load_lra
from llnbench.errors import DataError


def cfg(tmp_path, **values) -> LraDataConfig:
    base = {"max_length": 40, "min_length": 8, "train_size": 30, "validation_size": 10,
            "test_size": 10, "workers": 1, "cache_dir": str(tmp_path)}  # fmt: skip
    return LraDataConfig(**{**base, **values})


def ids(data) -> dict[str, list[bytes]]:
    return {s: [r.tobytes() for r in data.splits[s].input_ids] for s in data.splits}


def rewrite(path, change) -> None:
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    change(arrays)
    with open(path, "wb") as handle:
        np.savez(handle, **arrays)


def flip_label(a):
    a["train_labels"] = a["train_labels"].copy()
    a["train_labels"][0] = (a["train_labels"][0] + 1) % 10


def bad_offsets(a):
    a["test_offsets"] = a["test_offsets"].copy()
    a["test_offsets"][3] = a["test_offsets"][2] - 1


def short_labels(a):
    a["validation_labels"] = a["validation_labels"][:-2]


def missing_field(a):
    del a["train_offsets"]


def garbled_meta(a):
    a["meta"] = np.array("{not json")


def tokens_changed(a):  # offsets and labels intact: only the checksum sees it
    a["train_tokens"] = a["train_tokens"].copy()
    a["train_tokens"][5] ^= 1


DAMAGE = {
    "wrong-labels": (flip_label, "fails its checksum"),
    "bad-offsets": (bad_offsets, "has bad test offsets"),
    "short-labels": (short_labels, "holds 8 validation labels for 10 examples"),
    "missing-field": (missing_field, "has no train_offsets"),
    "garbled-meta": (garbled_meta, "has a garbled meta record"),
    "changed-tokens": (tokens_changed, "fails its checksum"),
}


@pytest.mark.parametrize("damage", list(DAMAGE), ids=list(DAMAGE))
def test_a_damaged_cache_is_rebuilt_with_one_warning(tmp_path, capsys, damage: str) -> None:
    first = load_lra("listops", cfg(tmp_path))
    change, reason = DAMAGE[damage]
    rewrite(first.cache_path, change)
    capsys.readouterr()
    again = load_lra("listops", cfg(tmp_path))
    err = capsys.readouterr().err.strip()
    assert not again.from_cache and ids(again) == ids(first)
    assert len(err.splitlines()) == 1 and reason in err and "rebuilding it" in err, err
    assert load_lra("listops", cfg(tmp_path)).from_cache  # the rebuilt file passes


def test_a_truncated_file_and_another_configs_file_are_rebuilt(tmp_path, capsys) -> None:
    first = load_lra("listops", cfg(tmp_path))
    first.cache_path.write_bytes(first.cache_path.read_bytes()[:100])
    assert ids(load_lra("listops", cfg(tmp_path))) == ids(first)
    assert "cannot be read" in capsys.readouterr().err
    other = load_lra("listops", cfg(tmp_path, seed=1))
    shutil.copy(other.cache_path, first.cache_path)  # a file of another config in its place
    assert ids(load_lra("listops", cfg(tmp_path))) == ids(first)
    assert "was made by another data config" in capsys.readouterr().err


def test_a_directory_in_place_of_the_cache_is_one_line(tmp_path) -> None:
    first = load_lra("listops", cfg(tmp_path))
    first.cache_path.unlink()
    first.cache_path.mkdir()
    with pytest.raises(DataError, match="is a directory or another non-file; remove it"):
        load_lra("listops", cfg(tmp_path))


def test_an_unwritable_cache_is_one_line(tmp_path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(DataError, match="cannot write the LRA data cache .*data.cache_dir"):
        load_lra("listops", cfg(tmp_path / "file"))


def test_the_cache_records_its_config_and_checksum(tmp_path) -> None:
    data = load_lra("pathfinder32", LraDataConfig(train_size=4, validation_size=2, test_size=2,
                                                  cache_dir=str(tmp_path)))  # fmt: skip
    with np.load(data.cache_path) as z:
        meta = json.loads(str(z["meta"]))
        assert z["train_marker_centres"].shape == (4, 2, 2)
    assert meta["key"]["difficulty"] == "hard" and len(meta["checksum"]) == 64
