"""Pathfinder (Linsley et al. 2018; LRA's 32×32 task and its longer variants), drawn on the pixel grid.

An image holds two target contours, short distractor contours and two square markers. A contour is
a chain of straight dashes ("paddles") whose direction turns by at most ``max_turn_deg`` from one
dash to the next, with exactly ``gap`` blank pixels between consecutive dashes. As in the original
generator the two target contours start next to each other (``seed_distance``) and grow apart; one
marker sits on the start of a target contour, the other on the end of the same contour (label 1,
connected) or of the other one (label 0). Both classes have the same contours and markers, so only
following the dashed curve tells them apart.

Guarantees, by construction (and checked by the tests with a flood fill): pixels of one contour
link up when gaps of ``gap`` pixels are bridged (``link_radius``); pixels of different contours are
never that close, so bridging the gaps never joins two contours. Pixels are 0 or 255.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import numpy as np

from llnbench.errors import DataError

INK = 255
PIXEL0 = 2  # token = grey level + 2 (0 = padding, 1 = the classification token)
VOCAB_SIZE = PIXEL0 + 256
NUM_CLASSES = 2
_TRIES_PER_DASH = 12
_TRIES_PER_CONTOUR = 20
_TRIES_PER_IMAGE = 200

Pixel = tuple[int, int]


@dataclass(frozen=True)
class PathfinderSpec:
    """Geometry of one variant; lengths in pixels."""

    size: int = 32
    dash_length: float = 2.0  # along the dash: 3 pixels when straight, 2–3 when diagonal
    gap: int = 1  # blank pixels between consecutive dashes (Chebyshev distance gap + 1)
    contour_dashes: int = 6
    distractor_dashes: int = 2
    distractors: int = 5
    max_turn_deg: float = 35.0
    seed_distance: float = 6.0  # between the two target contours' first dashes
    marker_radius: int = 1  # a square of side 2r + 1 centred on the contour's end pixel

    @property
    def link_radius(self) -> int:
        """Chebyshev distance that bridges a gap; different contours are farther apart."""
        return self.gap + 1

    @property
    def sequence_length(self) -> int:
        return self.size * self.size


# Two variants beside LRA's 32×32; Path-X (128×128) is the same geometry scaled once more.
SPECS = {
    32: PathfinderSpec(),
    64: PathfinderSpec(
        size=64,
        dash_length=3.0,
        gap=2,
        contour_dashes=9,
        distractor_dashes=3,
        distractors=12,
        seed_distance=9.0,
        marker_radius=2,
    ),
}


def _dash(start: tuple[float, float], theta: float, length: float) -> list[Pixel]:
    """The distinct pixels of a straight dash from ``start``: samples 0.5 pixel apart change
    each rounded coordinate by at most 1, so the dash is 8-connected."""
    dy, dx = 0.5 * math.sin(theta), 0.5 * math.cos(theta)
    pixels: list[Pixel] = []
    for i in range(round(2 * length) + 1):
        p = (round(start[0] + i * dy), round(start[1] + i * dx))
        if not pixels or p != pixels[-1]:
            pixels.append(p)
    return pixels


def _distance(a: list[Pixel], b: list[Pixel]) -> int:
    """Smallest Chebyshev distance between two pixel sets (plain loops: the hot path)."""
    best = 1 << 30
    for y, x in a:
        for v, u in b:
            dy, dx = abs(y - v), abs(x - u)
            d = dy if dy > dx else dx
            if d < best:
                best = d
    return best


class _Canvas:
    """Which pixels a new contour may use: inside the image and farther than ``link_radius``
    from every pixel already placed."""

    def __init__(self, spec: PathfinderSpec):
        self.spec = spec
        self.blocked = np.zeros((spec.size, spec.size), dtype=bool)

    def free(self, pixels: list[Pixel]) -> bool:
        n = self.spec.size
        return all(0 <= y < n and 0 <= x < n and not self.blocked[y, x] for y, x in pixels)

    def place(self, pixels: list[Pixel]) -> None:
        _dilate_into(self.blocked, pixels, self.spec.link_radius)


def _dilate_into(mask: np.ndarray, pixels: list[Pixel], r: int) -> None:
    """Mark every pixel within Chebyshev distance ``r`` of ``pixels``."""
    for y, x in pixels:
        mask[max(0, y - r) : y + r + 1, max(0, x - r) : x + r + 1] = True


def _marker(spec: PathfinderSpec, tip: Pixel) -> list[Pixel]:
    r = spec.marker_radius
    return [(tip[0] + a, tip[1] + b) for a in range(-r, r + 1) for b in range(-r, r + 1)]


def _contour(
    rng: random.Random, spec: PathfinderSpec, canvas: _Canvas, start, theta: float, dashes: int,
    marked: bool,
) -> list[list[Pixel]] | None:  # fmt: skip
    """Grow one contour on free pixels: its dashes, or None. ``marked``: both ends keep room for a
    marker (a target contour)."""
    turn, r = math.radians(spec.max_turn_deg), spec.link_radius
    chain = [_dash(start, theta, spec.dash_length)]
    if not canvas.free(chain[0]):
        return None
    older = np.zeros_like(canvas.blocked)  # within r of this contour's dashes but the last
    for _ in range(dashes - 1):
        last = chain[-1][-1]
        for _ in range(_TRIES_PER_DASH):
            heading = theta + rng.uniform(-turn, turn)
            begin = (last[0] + r * math.sin(heading), last[1] + r * math.cos(heading))
            dash = _dash(begin, heading, spec.dash_length)
            # exactly `gap` blank pixels to the previous dash, more to every earlier one
            if _distance(dash, chain[-1]) != r or not canvas.free(dash):
                continue
            if any(older[y, x] for y, x in dash):
                continue
            _dilate_into(older, chain[-1], r)
            chain.append(dash)
            theta = heading
            break
        else:
            return None
    if marked and not all(canvas.free(_marker(spec, tip)) for tip in (chain[0][0], chain[-1][-1])):
        return None
    return chain


def _footprint(spec: PathfinderSpec, chain: list[list[Pixel]], marked: bool) -> list[Pixel]:
    pixels = [p for dash in chain for p in dash]
    if marked:
        pixels += _marker(spec, chain[0][0]) + _marker(spec, chain[-1][-1])
    return pixels


def _place_contour(
    rng: random.Random, spec: PathfinderSpec, canvas: _Canvas, origin, dashes: int, marked: bool
) -> list[list[Pixel]] | None:
    """Try a few headings (and, with ``origin`` None, random starts); place the first contour
    that fits."""
    n = spec.size
    for _ in range(_TRIES_PER_CONTOUR):
        start = origin or (rng.uniform(0, n - 1), rng.uniform(0, n - 1))
        chain = _contour(rng, spec, canvas, start, rng.uniform(-math.pi, math.pi), dashes, marked)
        if chain is not None:
            canvas.place(_footprint(spec, chain, marked))
            return chain
    return None


def render(
    rng: random.Random, spec: PathfinderSpec, label: int
) -> tuple[np.ndarray, tuple[Pixel, Pixel]]:
    """One image (size × size, uint8) with ``label`` (1 = the markers are joined) and the two
    markers' centres."""
    n, pad = spec.size, spec.marker_radius + 1
    for _ in range(_TRIES_PER_IMAGE):
        canvas = _Canvas(spec)
        origin = (rng.uniform(pad, n - 1 - pad), rng.uniform(pad, n - 1 - pad))
        first = _place_contour(rng, spec, canvas, origin, spec.contour_dashes, True)
        if first is None:
            continue
        around = rng.uniform(-math.pi, math.pi)
        near = (
            origin[0] + spec.seed_distance * math.sin(around),
            origin[1] + spec.seed_distance * math.cos(around),
        )
        second = _place_contour(rng, spec, canvas, near, spec.contour_dashes, True)
        if second is None:
            continue
        contours = [first, second]
        for _ in range(spec.distractors):  # as many as fit, like the original's distractors
            extra = _place_contour(rng, spec, canvas, None, spec.distractor_dashes, False)
            if extra is not None:
                contours.append(extra)
        image = np.zeros((n, n), dtype=np.uint8)
        for chain in contours:
            for y, x in (p for dash in chain for p in dash):
                image[y, x] = INK
        origin_of = rng.randrange(2)  # which target contour carries the start marker
        start_tip = contours[origin_of][0][0]
        end_tip = contours[origin_of if label else 1 - origin_of][-1][-1]
        for y, x in _marker(spec, start_tip) + _marker(spec, end_tip):
            image[y, x] = INK
        return image, (start_tip, end_tip)
    raise DataError(f"Pathfinder {n}×{n}: no image fits after {_TRIES_PER_IMAGE} tries")


def generate(
    count: int, spec: PathfinderSpec, seed: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``count`` images seeded by the string ``seed``: (images (count, size, size) uint8, labels,
    marker centres (count, 2, 2))."""
    rng = random.Random(seed)
    images = np.zeros((count, spec.size, spec.size), dtype=np.uint8)
    labels = np.zeros(count, dtype=np.int64)
    markers = np.zeros((count, 2, 2), dtype=np.int16)
    for i in range(count):
        labels[i] = rng.randrange(2)
        images[i], tips = render(rng, spec, int(labels[i]))
        markers[i] = tips
    return images, labels, markers
