"""The generated LRA tasks, checked by independent means: ListOps labels by a separate recursive
evaluator of the written expression, Pathfinder labels by a flood fill over the rendered pixels;
plus the LRA rules (lengths, depth, arguments, distinct expressions), determinism and the cache."""

from __future__ import annotations

import math
import os
import statistics
import subprocess
import sys
import time
from collections import deque
from pathlib import Path

import numpy as np
import pytest

from llnbench.data import listops, pathfinder
from llnbench.data.lra import LraDataConfig, load_lra, resolve_data
from llnbench.errors import ConfigError

# ------------------------------------------------------------------------------------------------
# ListOps: an evaluator of its own (text in, value out), sharing nothing with the generator


def evaluate(text: str, max_depth: int, max_args: int) -> int:
    """Parse ``[OP a b ... ]`` recursively; checks the grammar, the depth and argument limits."""
    symbols = text.split()
    position = 0
    functions = {
        "[MAX": max,
        "[MIN": min,
        "[MED": lambda xs: math.floor(statistics.median(xs)),
        "[SM": lambda xs: sum(xs) % 10,
    }

    def expression(depth: int) -> int:
        nonlocal position
        symbol = symbols[position]
        position += 1
        if symbol.isdigit():
            assert depth <= max_depth
            return int(symbol)
        assert symbol in functions and depth < max_depth, (symbol, depth)
        arguments = []
        while symbols[position] != "]":
            arguments.append(expression(depth + 1))
        position += 1
        assert 2 <= len(arguments) <= max_args
        return functions[symbol](arguments)

    value = expression(1)
    assert position == len(symbols), "text after the expression"
    return value


def test_listops_labels_match_an_independent_evaluator() -> None:
    spec = listops.ListOpsSpec(max_depth=10, max_args=10, min_length=20, max_length=120)
    sequences, labels, _ = listops.generate(400, spec, "test-labels")
    for tokens, label in zip(sequences, labels):
        assert spec.min_length < len(tokens) < spec.max_length
        assert evaluate(listops.to_text(tokens), spec.max_depth, spec.max_args) == label
    assert len({t.tobytes() for t in sequences}) == len(sequences)  # distinct, as LRA's set
    counts = np.bincount(labels, minlength=10)
    assert (counts > 0).all() and counts.max() / len(labels) < 0.3  # LRA's majority is ~17%


def test_listops_respects_small_depth_and_argument_limits() -> None:
    spec = listops.ListOpsSpec(max_depth=3, max_args=3, min_length=6, max_length=40)
    sequences, labels, _ = listops.generate(200, spec, "limits")
    for tokens, label in zip(sequences, labels):
        assert evaluate(listops.to_text(tokens), 3, 3) == label


def test_median_rounds_down_like_lra() -> None:
    tokens = [listops.OPERATOR0 + 2, listops.DIGIT0 + 2, listops.DIGIT0 + 5, listops.CLOSE]
    assert listops.to_text(tokens) == "[MED 2 5 ]"
    assert evaluate(listops.to_text(tokens), 10, 10) == 3  # int(np.median([2, 5])) = int(3.5)


# ------------------------------------------------------------------------------------------------
# Pathfinder: a flood fill of its own over the rendered grid (the statistical readers, and a
# vectorised flood fill on thousands of images, are in test_lra_shortcuts.py)


def joined(image: np.ndarray, a: tuple[int, int], b: tuple[int, int], radius: float) -> bool:
    """BFS over ink pixels; two pixels are neighbours within Euclidean distance ``radius``."""
    ink = image > 0
    n = image.shape[0]
    r = int(radius)
    steps = [
        (v, u) for v in range(-r, r + 1) for u in range(-r, r + 1) if v * v + u * u <= radius**2
    ]
    seen = np.zeros_like(ink)
    queue = deque([a])
    seen[a] = True
    while queue:
        y, x = queue.popleft()
        if (y, x) == b:
            return True
        for v, u in steps:
            if 0 <= y + v < n and 0 <= x + u < n and ink[y + v, x + u] and not seen[y + v, x + u]:
                seen[y + v, x + u] = True
                queue.append((y + v, x + u))
    return False


@pytest.mark.parametrize("difficulty", ["easy", "hard"])
@pytest.mark.parametrize("size", [32, 64])
def test_pathfinder_positives_are_joined_and_negatives_are_not(size: int, difficulty: str) -> None:
    spec = pathfinder.spec_for(size, difficulty)
    count = 40 if size == 32 else 16
    drawn = pathfinder.generate(count, spec, f"flood-{size}-{difficulty}")
    images, labels = drawn.images, drawn.labels
    assert images.shape == (count, size, size) and images.dtype == np.uint8
    assert len(np.unique(images)) > 10  # anti-aliased grey levels, not a binary image
    assert 0 < labels.sum() < count
    assert drawn.marker_centres.shape == (count, 2, 2)
    assert (drawn.contour_lengths == pathfinder.DIFFICULTIES[difficulty]).all()
    for image, label, (a, b) in zip(images, labels, drawn.marker_centres):
        a, b = tuple(np.round(a).astype(int)), tuple(np.round(b).astype(int))
        assert image[a] == 255 and image[b] == 255  # a round marker's centre is fully covered
        assert joined(image, a, b, spec.link_radius) == bool(label)


def test_pathfinder_is_seeded() -> None:
    spec = pathfinder.spec_for(32, "easy")
    one, two = (pathfinder.generate(30, spec, "seeded") for _ in range(2))
    assert (one.images == two.images).all() and (one.labels == two.labels).all()
    assert (one.marker_centres == two.marker_centres).all()
    other = pathfinder.generate(30, spec, "another")
    assert (other.images != one.images).any()


def test_pathfinder_difficulty_is_checked() -> None:
    assert [pathfinder.spec_for(32, d).contour_length for d in pathfinder.DIFFICULTIES] == [
        6,
        9,
        14,
    ]
    assert pathfinder.SPECS[64].difficulty == "hard"  # LRA reports the hard split
    with pytest.raises(
        ConfigError, match="data.difficulty='medium' is not a Pathfinder difficulty"
    ):
        pathfinder.spec_for(32, "medium")


def _children(pid: int) -> list[int]:
    """Live (not zombie) processes whose parent is ``pid``, from /proc."""
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            fields = Path(f"/proc/{name}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            out.append(int(name))
    return out


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_generation_workers_exit_when_their_parent_is_killed() -> None:
    script = (
        "from dataclasses import asdict\n"
        "from llnbench.data import pathfinder\n"
        "from llnbench.data.lra_generate import generate_splits\n"
        "sizes = {'train': 100000, 'validation': 4000, 'test': 4000}\n"
        "generate_splits('pathfinder32', asdict(pathfinder.SPECS[32]), sizes, 0, workers=2)\n"
    )
    root = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])}
    parent = subprocess.Popen([sys.executable, "-c", script], env=env)
    try:
        deadline = time.monotonic() + 60
        workers: list[int] = []
        while len(workers) < 2 and time.monotonic() < deadline and parent.poll() is None:
            time.sleep(0.2)
            workers = [
                pid
                for pid in _children(parent.pid)
                if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()
            ]
        assert len(workers) == 2, f"the generation did not start its workers: {workers}"
    finally:
        parent.kill()
        parent.wait()
    deadline = time.monotonic() + 5
    while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_alive(pid) for pid in workers), "workers outlived their killed parent"


# ------------------------------------------------------------------------------------------------
# The data layer: splits, determinism, cache, bad values


def tiny(**values) -> LraDataConfig:
    base = {"max_length": 40, "min_length": 8, "train_size": 60, "validation_size": 20,
            "test_size": 20, "workers": 1}  # fmt: skip
    return LraDataConfig(**{**base, **values})


def test_splits_are_seeded_cached_and_disjoint(tmp_path) -> None:
    cfg = tiny(cache_dir=str(tmp_path))
    first = load_lra("listops", cfg)
    again = load_lra("listops", cfg)
    assert not first.from_cache and again.from_cache and first.cache_path == again.cache_path
    ids = {s: [row.tobytes() for row in first.splits[s].input_ids] for s in first.splits}
    assert ids == {s: [row.tobytes() for row in again.splits[s].input_ids] for s in again.splits}
    assert [len(ids[s]) for s in ("train", "validation", "test")] == [60, 20, 20]
    all_ids = ids["train"] + ids["validation"] + ids["test"]
    assert len(set(all_ids)) == len(all_ids)  # no expression in two splits
    assert all(row[0] == listops.CLS and len(row) <= 40 for row in first.splits["train"].input_ids)
    # validation and test do not depend on the training set's size; another seed differs
    more = load_lra("listops", tiny(cache_dir=str(tmp_path), train_size=80))
    assert [r.tobytes() for r in more.splits["test"].input_ids] == ids["test"]
    other = load_lra("listops", tiny(cache_dir=str(tmp_path), seed=1))
    assert [r.tobytes() for r in other.splits["test"].input_ids] != ids["test"]


def test_generation_does_not_depend_on_the_worker_count(tmp_path) -> None:
    sizes = {"train_size": 1200, "validation_size": 10, "test_size": 10}
    one = load_lra("listops", tiny(cache_dir=str(tmp_path / "a"), workers=1, **sizes))
    two = load_lra("listops", tiny(cache_dir=str(tmp_path / "b"), workers=2, **sizes))
    for split in ("train", "validation", "test"):
        assert [r.tobytes() for r in one.splits[split].input_ids] == [
            r.tobytes() for r in two.splits[split].input_ids
        ]
        assert one.splits[split].labels == two.splits[split].labels


def test_pathfinder_sequences_are_cls_and_shifted_pixels(tmp_path) -> None:
    cfg = LraDataConfig(train_size=4, validation_size=2, test_size=2, cache_dir=str(tmp_path))
    data = load_lra("pathfinder32", cfg)
    row = data.splits["train"].input_ids[0]
    assert len(row) == 1025 and row[0] == 1
    assert row[1:].min() >= 2 and row[1:].max() == 257  # grey level + 2
    assert data.resolved.sequence_length == 1025


BAD_VALUES = [
    ("listops", {"max_length": 100, "min_length": 200}, "data.max_length=100 is too short"),
    ("listops", {"max_length": 4, "min_length": 0}, "must be at least 5"),
    ("pathfinder32", {"max_length": 512}, "pathfinder32: its sequences are 1024 pixels"),
    ("pathfinder64", {"max_length": 2048}, "are 4096 pixels"),
    ("pathfinder32", {"max_depth": 5}, "data.max_depth applies to task listops only"),
    ("listops", {"train_size": 0}, "data.train_size must be positive"),
]


@pytest.mark.parametrize(("task", "values", "message"), BAD_VALUES)
def test_bad_data_values_name_the_value(task: str, values: dict, message: str) -> None:
    from llnbench.data.lra import get_lra_task

    with pytest.raises(ConfigError, match=message):
        resolve_data(get_lra_task(task), LraDataConfig(**values))


def test_a_window_without_enough_distinct_expressions_is_refused(tmp_path) -> None:
    cfg = tiny(max_length=5, min_length=3, train_size=450, cache_dir=str(tmp_path))
    with pytest.raises(ConfigError, match="too few distinct expressions"):
        load_lra("listops", cfg)


def test_pathfinder_splits_come_with_their_metadata() -> None:
    from dataclasses import asdict

    from llnbench.data.lra_generate import chunk_seed, generate_splits

    spec = pathfinder.spec_for(32, "intermediate")
    sizes = {"train": 12, "validation": 6, "test": 6}
    splits = generate_splits("pathfinder32", asdict(spec), sizes, 0, workers=1)
    for split, n in sizes.items():
        meta = splits[split][2]
        assert meta["marker_centres"].shape == (n, 2, 2)
        assert (meta["contour_length"] == 9).all()
    # the metadata belongs to the images it travels with
    drawn = pathfinder.generate(6, spec, chunk_seed("pathfinder32", "test", 0, 0))
    assert [image.tobytes() for image in drawn.images] == splits["test"][0]
    assert (drawn.marker_centres == splits["test"][2]["marker_centres"]).all()


def test_pathfinder_names_the_32_pixel_task() -> None:
    from llnbench.data.lra import get_lra_task

    assert get_lra_task("pathfinder") is get_lra_task("pathfinder32")
    with pytest.raises(ConfigError, match=r"allowed: listops, .*\(pathfinder = pathfinder32\)"):
        get_lra_task("pathfinder16")
