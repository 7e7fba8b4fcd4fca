"""The LRA splits as files in LRA's own formats, so that other codebases train and evaluate on
exactly the examples ``llnbench lra`` uses (``data.export_dir=DIR``).

    listops       basic_train.tsv, basic_val.tsv, basic_test.tsv: a header ``Source<TAB>Target``,
                  then one expression per row, as LRA's ``listops.py`` names and writes them
                  (symbols separated by one space, ``]`` closing each operator; without the
                  parentheses of LRA's tuple rendering, which its input pipeline strips anyway)
    pathfinder*   train.npz, validation.npz, test.npz: ``images`` (n, size, size) uint8 grey
                  levels, ``labels`` (n,) int64 (1 = the markers are joined), ``marker_centres``
                  (n, 2, 2) float32 (row, column of each marker's centre, start marker first), ``contour_length`` (n,) int16
                  (paddles), ``difficulty`` (n,) str
    text          train.jsonl, validation.jsonl, test.jsonl: one ``{"text": ..., "label": 0|1}``
                  per line; ``text`` is the review as the model saw it (its UTF-8 bytes are
                  exactly the tokens)

Beside them ``manifest.json`` records the data config that made the files, the example count and
the sha256 of each file. Every file is written atomically.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from pathlib import Path
from typing import Any

import numpy as np

from llnbench import files
from llnbench.data import listops
from llnbench.errors import DataError

LISTOPS_FILES = {"train": "basic_train.tsv", "validation": "basic_val.tsv",
                 "test": "basic_test.tsv"}  # fmt: skip
SPLITS = ("train", "validation", "test")


def _examples(arrays: dict[str, np.ndarray], split: str) -> list[np.ndarray]:
    tokens, offsets = arrays[f"{split}_tokens"], arrays[f"{split}_offsets"]
    return [tokens[offsets[i] : offsets[i + 1]] for i in range(len(offsets) - 1)]


def _listops(arrays: dict[str, np.ndarray], split: str) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter="\t", lineterminator="\n")
    writer.writerow(["Source", "Target"])
    for tokens, label in zip(_examples(arrays, split), arrays[f"{split}_labels"]):
        writer.writerow([listops.to_text(tokens), int(label)])
    return buffer.getvalue().encode()


def _pathfinder(arrays: dict[str, np.ndarray], split: str, size: int, difficulty: str) -> bytes:
    labels = arrays[f"{split}_labels"]
    n = len(labels)
    images = arrays[f"{split}_tokens"].reshape(n, size, size)
    buffer = io.BytesIO()
    np.savez(
        buffer,
        images=images,
        labels=labels.astype(np.int64),
        marker_centres=arrays[f"{split}_marker_centres"].reshape(n, 2, 2).astype(np.float32),
        contour_length=arrays[f"{split}_contour_length"].astype(np.int16),
        difficulty=np.array([difficulty] * n),
    )
    return buffer.getvalue()


def _text(arrays: dict[str, np.ndarray], split: str) -> bytes:
    lines = [
        json.dumps({"text": tokens.tobytes().decode("utf-8"), "label": int(label)},
                   ensure_ascii=False)
        for tokens, label in zip(_examples(arrays, split), arrays[f"{split}_labels"])
    ]  # fmt: skip
    return ("\n".join(lines) + "\n").encode("utf-8")


def export_splits(
    kind: str, describe: dict[str, Any], arrays: dict[str, np.ndarray], out_dir: str | Path
) -> list[Path]:
    """Write the three splits (and manifest.json) under ``out_dir``; the paths written."""
    out = Path(out_dir).expanduser()
    contents: dict[str, bytes] = {}
    for split in SPLITS:
        if kind == "listops":
            contents[LISTOPS_FILES[split]] = _listops(arrays, split)
        elif kind == "pathfinder":
            contents[f"{split}.npz"] = _pathfinder(
                arrays, split, describe["size"], describe["difficulty"]
            )
        else:
            contents[f"{split}.jsonl"] = _text(arrays, split)
    manifest = {
        "written_by": "llnbench lra data.export_dir",
        "data": describe,
        "files": {
            name: {"split": split, "examples": len(arrays[f"{split}_labels"]),
                   "sha256": hashlib.sha256(data).hexdigest()}
            for (name, data), split in zip(contents.items(), SPLITS)
        },
    }  # fmt: skip
    contents["manifest.json"] = (json.dumps(manifest, indent=2) + "\n").encode()
    written = []
    try:
        for name, data in contents.items():
            written.append(files.atomic_write(out / name, lambda f, data=data: f.write(data)))
    except files.PathError as err:  # it names the path and the cause
        raise DataError(f"cannot write the LRA export under {out} ({err})") from None
    return written
