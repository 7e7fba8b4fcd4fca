"""The generated LRA tasks carry no label shortcut that a simple reader finds.

Pathfinder: readers fitted on training images and scored on held-out ones. One sees only the two
marker positions, one only the total ink, one only the ink near each marker, and one is logistic
regression on the pixels. Each must stay at chance (50 ± 3 %). A flood fill from one marker,
bridging the dashes' gaps, must recover the label (the task is solvable from the pixels).
ListOps: the length alone must not predict the value beyond the majority class.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler
from sklearn.tree import DecisionTreeClassifier

from llnbench.data import listops, pathfinder

TRAIN, HELD_OUT = 2000, 2000
CHANCE_BAND = 0.03


@pytest.fixture(scope="module", params=[32, 64], ids=["pathfinder32", "pathfinder64"])
def split(request):
    spec = pathfinder.SPECS[request.param]
    train = pathfinder.generate(TRAIN, spec, f"shortcuts-train-{request.param}")
    test = pathfinder.generate(HELD_OUT, spec, f"shortcuts-test-{request.param}")
    return spec, train, test


def band_rule(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray) -> np.ndarray:
    """The best rule "label = 1 iff a <= x <= b" (or its negation) on train, over 30 quantiles."""
    cuts = np.quantile(x_train, np.linspace(0, 1, 31))
    best, rule = -1.0, (cuts[0], cuts[-1], True)
    for i, a in enumerate(cuts):
        for b in cuts[i + 1 :]:
            inside = (x_train >= a) & (x_train <= b)
            for positive in (True, False):
                accuracy = np.mean((inside if positive else ~inside) == (y_train == 1))
                if accuracy > best:
                    best, rule = accuracy, (a, b, positive)
    a, b, positive = rule
    inside = (x_test >= a) & (x_test <= b)
    return (inside if positive else ~inside).astype(int)


def bins_rule(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray) -> np.ndarray:
    """Each of 20 quantile bins of x (fitted on train) predicts its majority label."""
    edges = np.quantile(x_train, np.linspace(0, 1, 21))[1:-1]
    which = np.digitize(x_train, edges)
    votes = np.array(
        [np.mean(y_train[which == b]) if np.any(which == b) else 0.5 for b in range(20)]
    )
    return (votes[np.digitize(x_test, edges)] > 0.5).astype(int)


def tree_rule(f_train: np.ndarray, y_train: np.ndarray, f_test: np.ndarray) -> np.ndarray:
    return (
        DecisionTreeClassifier(max_depth=4, min_samples_leaf=50, random_state=0)
        .fit(f_train, y_train)
        .predict(f_test)
    )


def logistic(f_train: np.ndarray, y_train: np.ndarray, f_test: np.ndarray, c: float) -> np.ndarray:
    scale = StandardScaler().fit(f_train)
    model = LogisticRegression(C=c, max_iter=300).fit(scale.transform(f_train), y_train)
    return model.predict(scale.transform(f_test))


def marker_features(data: pathfinder.PathfinderImages, size: int) -> np.ndarray:
    """Distance, |dy|, |dx|, and each marker's distance from the centre and the border."""
    c = data.marker_centres.astype(np.float64)
    d = c[:, 0] - c[:, 1]
    centre = np.linalg.norm(c - (size - 1) / 2, axis=2)
    border = np.minimum(c, size - 1 - c).min(axis=2)
    return np.column_stack([np.linalg.norm(d, axis=1), np.abs(d), centre, border])


def ink_near(data: pathfinder.PathfinderImages, radius: int) -> np.ndarray:
    """Total grey level within ``radius`` px of each marker: (n, 2)."""
    n, size, _ = data.images.shape
    yy, xx = np.mgrid[:size, :size]
    out = np.zeros((n, 2))
    for k in range(2):
        cy = data.marker_centres[:, k, 0, None, None]
        cx = data.marker_centres[:, k, 1, None, None]
        near = (yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2
        out[:, k] = (data.images * near).sum(axis=(1, 2))
    return out


def flood_fill_labels(data: pathfinder.PathfinderImages, radius: float) -> np.ndarray:
    """1 where ink reached from the start marker's pixel, bridging gaps of up to ``radius`` px,
    covers the end marker's pixel."""
    offsets = pathfinder.link_offsets(radius)
    r = int(radius)
    disc = np.zeros((1, 2 * r + 1, 2 * r + 1), dtype=bool)
    for dy, dx in offsets:
        disc[0, r + dy, r + dx] = True
    ink = data.images > 0
    pixel = np.round(data.marker_centres).astype(int)
    rows = np.arange(len(ink))
    seed = np.zeros_like(ink)
    seed[rows, pixel[:, 0, 0], pixel[:, 0, 1]] = True
    reached = ndimage.binary_propagation(seed, structure=disc, mask=ink)
    return reached[rows, pixel[:, 1, 0], pixel[:, 1, 1]].astype(int)


def accuracy(predicted: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(predicted == labels))


def test_marker_positions_alone_are_chance(split) -> None:
    spec, train, test = split
    f_train, f_test = marker_features(train, spec.size), marker_features(test, spec.size)
    y = train.labels
    readers = {
        "distance band": band_rule(f_train[:, 0], y, f_test[:, 0]),
        "distance bins": bins_rule(f_train[:, 0], y, f_test[:, 0]),
        "position tree": tree_rule(f_train, y, f_test),
    }
    scores = {name: accuracy(p, test.labels) for name, p in readers.items()}
    assert all(abs(s - 0.5) <= CHANCE_BAND for s in scores.values()), scores


def test_total_ink_alone_is_chance(split) -> None:
    _, train, test = split
    ink_train = train.images.reshape(TRAIN, -1).sum(axis=1).astype(np.float64)
    ink_test = test.images.reshape(HELD_OUT, -1).sum(axis=1).astype(np.float64)
    scores = {
        "band": accuracy(band_rule(ink_train, train.labels, ink_test), test.labels),
        "bins": accuracy(bins_rule(ink_train, train.labels, ink_test), test.labels),
    }
    assert all(abs(s - 0.5) <= CHANCE_BAND for s in scores.values()), scores


def test_ink_near_the_markers_is_chance(split) -> None:
    spec, train, test = split
    radii = (3, 6) if spec.size == 32 else (5, 10)
    f_train = np.hstack([ink_near(train, r) for r in radii])
    f_test = np.hstack([ink_near(test, r) for r in radii])
    scores = {
        "logistic": accuracy(logistic(f_train, train.labels, f_test, 1.0), test.labels),
        "tree": accuracy(tree_rule(f_train, train.labels, f_test), test.labels),
    }
    assert all(abs(s - 0.5) <= CHANCE_BAND for s in scores.values()), scores


def test_logistic_regression_on_pixels_is_chance(split) -> None:
    _, train, test = split
    x_train = train.images.reshape(TRAIN, -1) / 255.0
    x_test = test.images.reshape(HELD_OUT, -1) / 255.0
    score = accuracy(logistic(x_train, train.labels, x_test, 0.01), test.labels)
    assert abs(score - 0.5) <= CHANCE_BAND, score


def test_a_flood_fill_from_one_marker_recovers_the_label(split) -> None:
    spec, _, test = split
    score = accuracy(flood_fill_labels(test, spec.link_radius), test.labels)
    assert score >= 0.99, score
    # without bridging the gaps the fill stops at the first dash: the contours are dashed
    assert accuracy(flood_fill_labels(test, 1.0), test.labels) < 0.75


# ------------------------------------------------------------------------------------------------
# ListOps


@pytest.fixture(scope="module")
def listops_split():
    spec = listops.ListOpsSpec(max_depth=10, max_args=10, min_length=16, max_length=128)
    train = listops.generate(2000, spec, "shortcuts-train")
    test = listops.generate(1500, spec, "shortcuts-test")
    return train, test


def test_listops_length_alone_does_not_beat_the_majority(listops_split) -> None:
    (s_train, y_train, _), (s_test, y_test, _) = listops_split
    length_train = np.array([len(s) for s in s_train])
    length_test = np.array([len(s) for s in s_test])
    majority = np.mean(y_test == np.bincount(y_train).argmax())
    edges = np.quantile(length_train, np.linspace(0, 1, 11))[1:-1]
    which = np.digitize(length_train, edges)
    vote = [np.bincount(y_train[which == b], minlength=10).argmax() for b in range(10)]
    score = np.mean(np.asarray(vote)[np.digitize(length_test, edges)] == y_test)
    assert score <= majority + 0.03, (score, majority)


@pytest.mark.xfail(
    strict=True,
    reason="LRA's own ListOps: the root operator predicts the value (MAX roots are mostly 9, MIN "
    "roots 0); ours matches LRA's generator, so it does too (measured: 33 % vs 15 % majority)",
)
def test_listops_root_operator_alone_does_not_beat_the_majority(listops_split) -> None:
    (s_train, y_train, _), (s_test, y_test, _) = listops_split
    root_train = np.array([s[0] for s in s_train])
    root_test = np.array([s[0] for s in s_test])
    majority = np.mean(y_test == np.bincount(y_train).argmax())
    vote = {r: np.bincount(y_train[root_train == r], minlength=10).argmax() for r in root_train}
    score = np.mean([vote.get(r, 0) == y for r, y in zip(root_test, y_test)])
    assert score <= majority + 0.03, (score, majority)
