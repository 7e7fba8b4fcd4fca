"""Pathfinder (Linsley et al. 2018; LRA's Pathfinder-32 and Pathfinder-64), drawn as the original's
``snakes2.py`` draws it, batched over many images with numpy.

An image holds two target snakes, a few short distractor snakes and two round markers. A snake is a
chain of straight paddles. Each paddle ends ``paddle_margin`` short of a pivot, and the next one
starts ``paddle_margin`` past it, so consecutive paddles leave a gap of about twice the margin. The
next direction is drawn from the free directions with weight cos²(min(turn × continuity, 90°)):
turns of up to 90° at continuity 1. The two target snakes start ``seed_distance`` apart near the
centre and grow paddle by paddle in turn. One marker sits on the first paddle of one target snake.
The other sits on the last paddle of the same snake (label 1) or of the other one (label 0).
Distractors (``distractor_paddles // (contour_length // 3)`` snakes of ``contour_length // 3``
paddles) are drawn after the targets, on the space they left free, as the original draws them.

LRA's parameters, from the docstrings of ``lra_benchmarks/data/pathfinder.py`` (``Pathfinder32`` and
``Pathfinder64``); the rest are ``snakes2_wrapper.py``'s defaults:

    32×32  paddle_length 2, paddle_thickness 0.5, paddle_margin 1, antialias_scale 2, padding 1,
           marker_radius 1.5, seed_distance 7, continuity 1.0, snake contrast 2 × paddle contrast
           0.75 (the distractors get the snake contrast, 2), distractors 20 // distractor_length
    64×64  paddle_length 5 (default), paddle_thickness 1, paddle_margin 1, antialias_scale 2,
           padding 1, marker_radius 2.5, seed_distance 12, continuity 1.8 (see below), contrast 0.8
           (targets and distractors), distractors 22 / distractor_length (Python 2: floor)
    both   contour_length 6 / 9 / 14 for the easy / intermediate / hard splits (LRA reports hard),
           distractor_length = contour_length // 3, no single-paddle distractors

Grey levels: a paddle's pixel is contrast × the fraction of the pixel its rectangle covers (8 × 8
samples per pixel), a marker's is the covered fraction of its disc; overlapping strokes take the
maximum, and 1.0 is grey level 255, the level the original's byte scaling gives its brightest
stroke. At 32×32 that makes a target paddle about 190, a distractor paddle and a marker 255. The
original draws at ``antialias_scale`` and resizes with Lanczos. That adds faint ringing (at most
about 6 grey levels). Here that ringing is left out, so every stroke's footprint (its non-zero
pixels) stays compact.

Departures from the original, each measured or needed:

- Separation: pixels of different snakes are never within ``link_radius`` (Euclidean) of each
  other, the room kept for a marker at each of the four target ends counting too; consecutive
  paddles of one snake always are. A flood fill that bridges gaps of up to ``link_radius``
  therefore recovers every label. The original keeps margins of about this size, with no
  guarantee.
- Marker distance: an image is kept only while its class has not drawn more images at its marker
  distance (bins of ``DISTANCE_BIN`` px) than the other class. The two classes then have the same
  distance histogram, so the distance between the markers tells nothing about the label.
- Pathfinder-64 turns with continuity 1.0 (LRA's 32×32 value), not the 1.8 of its docstring. At
  1.8 (turns of at most 50°) no pair of 14-paddle snakes fit in 64×64: 0 of 500 tries.
- Directions: the next paddle is drawn among all free directions on a 10° grid, where the
  original draws three times from whole-pixel heads and gives up. A snake with no free direction
  still ends the try, as in the original, and the pair is drawn again. At 32×32 hard that is
  about 2 % of pairs fitting: most of the generation time.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import NamedTuple

import numpy as np

from llnbench.errors import ConfigError, DataError

PIXEL0 = 2  # token = grey level + 2 (0 = padding, 1 = the classification token)
VOCAB_SIZE = PIXEL0 + 256
NUM_CLASSES = 2
DIFFICULTIES = {"easy": 6, "intermediate": 9, "hard": 14}  # paddles per target snake

ANGLES = 36  # paddle directions (10° apart); the original samples whole pixels on a circle
SUBPIXEL = 4  # paddle ends and marker centres lie on a quarter-pixel grid
SUPERSAMPLE = 8  # coverage samples per pixel side
DISTANCE_BIN = 0.5  # px: the marker-distance histogram both classes share
SEED_TRIES = 16  # candidate starts per snake; the first free one is uniform on the free set
DISTRACTOR_TRIES = 5  # the original's max_distractor_contour_retrial + 1
BATCH_CELLS = 1 << 22
POOL = 1024  # images drawn per round before the distance balancing picks (bounds the memory)  # map pixels per batch of canvases (bounds the memory of one batch)


@dataclass(frozen=True)
class PathfinderSpec:
    """One Pathfinder variant; lengths in pixels (see the module docstring for LRA's values)."""

    size: int = 32
    difficulty: str = "hard"  # easy | intermediate | hard: 6 / 9 / 14 paddles per target snake
    paddle_length: float = 2.0
    paddle_thickness: float = 0.5
    paddle_margin: float = 1.0
    continuity: float = 1.0  # turn weight cos²(min(turn × continuity, 90°))
    seed_distance: float = 7.0
    marker_radius: float = 1.5
    padding: int = 1  # border rows and columns left blank
    target_contrast: float = 1.5
    distractor_contrast: float = 2.0
    distractor_paddles: int = 20  # distractor snakes = this // distractor_length
    link_radius: float = 2.0  # Euclidean px: gaps within a snake are at most this, others farther

    def validate(self) -> None:
        if self.difficulty not in DIFFICULTIES:
            raise ConfigError(
                f"data.difficulty={self.difficulty!r} is not a Pathfinder difficulty; allowed: "
                + ", ".join(DIFFICULTIES)
            )

    @property
    def contour_length(self) -> int:
        return DIFFICULTIES[self.difficulty]

    @property
    def distractor_length(self) -> int:
        return max(1, self.contour_length // 3)

    @property
    def distractors(self) -> int:
        return self.distractor_paddles // self.distractor_length

    @property
    def sequence_length(self) -> int:
        return self.size * self.size


SPECS = {
    32: PathfinderSpec(),
    64: PathfinderSpec(
        size=64,
        paddle_length=5.0,
        paddle_thickness=1.0,
        continuity=1.0,  # LRA lists 1.8; with it no pair of 14-paddle snakes fits (0 of 500)
        seed_distance=12.0,
        marker_radius=2.5,
        target_contrast=0.8,
        distractor_contrast=0.8,
        distractor_paddles=22,
    ),
}


def spec_for(size: int, difficulty: str = "hard") -> PathfinderSpec:
    """LRA's variant at ``size`` (32 or 64) and ``difficulty``; a bad value is one ConfigError."""
    if size not in SPECS:
        raise ConfigError(f"Pathfinder size {size} is not one of {', '.join(map(str, SPECS))}")
    spec = replace(SPECS[size], difficulty=difficulty)
    spec.validate()
    return spec


class PathfinderImages(NamedTuple):
    """Generated images and what the export needs to describe each one."""

    images: np.ndarray  # (n, size, size) uint8 grey levels
    labels: np.ndarray  # (n,) int64, 1 = the markers lie on one snake
    marker_centres: np.ndarray  # (n, 2, 2) float32 (y, x): the start marker, then the end marker
    contour_lengths: np.ndarray  # (n,) int16 paddles per target snake


# ------------------------------------------------------------------------------------------------
# Stamps: every paddle direction and quarter-pixel offset, and the marker disc, drawn once


class _Stamps(NamedTuple):
    """Footprints as pixel lists; short lists are padded by repeating their first pixel, which
    changes neither a test for overlap nor a drawing (the same value is written twice)."""

    offsets: np.ndarray  # (S, F, 2) pixel offsets of the footprint from the anchor pixel
    values: np.ndarray  # (S, F) coverage
    dilated: np.ndarray  # (S, D, 2) the footprint grown by link_radius


def link_offsets(radius: float) -> list[tuple[int, int]]:
    """Pixel offsets within Euclidean distance ``radius``: two ink pixels this close are linked."""
    r = math.floor(radius)
    span = range(-r, r + 1)
    return [(dy, dx) for dy in span for dx in span if dy * dy + dx * dx <= radius * radius]


def _pixels(mask: np.ndarray, centre: int, count: int) -> tuple[np.ndarray, np.ndarray]:
    ys, xs = np.nonzero(mask)
    keep = np.arange(count) % len(ys)
    return np.stack([ys - centre, xs - centre], axis=1)[keep], keep


def _pack(cover: np.ndarray, radius: float) -> _Stamps:
    """Stamps from coverage windows (S, W, W) centred on the anchor pixel."""
    s, w, _ = cover.shape
    r = math.floor(radius)
    inked = cover > 0
    grown = np.zeros((s, w + 2 * r, w + 2 * r), dtype=bool)
    for dy, dx in link_offsets(radius):
        grown[:, r + dy : r + dy + w, r + dx : r + dx + w] |= inked
    f, d = int(inked.sum(axis=(1, 2)).max()), int(grown.sum(axis=(1, 2)).max())
    f = -(-f // 8) * 8  # whole bytes of 8 flags: a footprint test reads one uint64 per 8 pixels
    offsets = np.zeros((s, f, 2), dtype=np.int64)
    values = np.zeros((s, f), dtype=np.float32)
    dilated = np.zeros((s, d, 2), dtype=np.int64)
    for i in range(s):
        offsets[i], _ = _pixels(inked[i], w // 2, f)
        ys, xs = np.nonzero(inked[i])
        values[i] = cover[i, ys, xs][np.arange(f) % len(ys)]
        dilated[i], _ = _pixels(grown[i], w // 2 + r, d)
    return _Stamps(offsets, values, dilated)


def _sample_points(half: int) -> tuple[np.ndarray, np.ndarray]:
    """Coverage sample positions of a (2 half + 1)² window around the anchor pixel (0, 0), whose
    square is [-0.5, 0.5]²: arrays of shape (W, W, SS, SS)."""
    sub = (np.arange(SUPERSAMPLE) + 0.5) / SUPERSAMPLE - 0.5
    pix = np.arange(-half, half + 1, dtype=np.float64)
    y = pix[:, None, None, None] + sub[None, None, :, None]
    x = pix[None, :, None, None] + sub[None, None, None, :]
    return np.broadcast_arrays(y, x)


def _fractions() -> np.ndarray:
    q = np.arange(SUBPIXEL) / SUBPIXEL
    return np.stack(np.meshgrid(q, q, indexing="ij"), axis=-1).reshape(-1, 2)  # (16, 2)


@lru_cache(maxsize=8)
def _paddle_stamps(length: float, thickness: float, radius: int) -> _Stamps:
    """Index = angle × SUBPIXEL² + fraction: a rectangle from the tail (anchor + fraction) along
    the angle, ``length`` long and ``thickness`` wide, flat ends (as PIL's line)."""
    half = math.ceil(length + thickness) + 1
    y, x = _sample_points(half)
    windows = []
    for a in range(ANGLES):
        theta = 2 * math.pi * a / ANGLES
        uy, ux = math.sin(theta), math.cos(theta)
        for fy, fx in _fractions():
            qy, qx = y - fy, x - fx
            along = qy * uy + qx * ux
            across = qy * ux - qx * uy
            inside = (along >= 0) & (along <= length) & (np.abs(across) <= thickness / 2)
            windows.append(inside.mean(axis=(2, 3)))
    return _pack(np.stack(windows), radius)


@lru_cache(maxsize=8)
def _marker_stamps(marker_radius: float, radius: int) -> _Stamps:
    """Index = fraction: a disc of ``marker_radius`` around anchor + fraction."""
    half = math.ceil(marker_radius) + 1
    y, x = _sample_points(half)
    windows = [
        (((y - fy) ** 2 + (x - fx) ** 2) <= marker_radius**2).mean(axis=(2, 3))
        for fy, fx in _fractions()
    ]
    return _pack(np.stack(windows), radius)


# ------------------------------------------------------------------------------------------------
# A batch of canvases


_UNIT = np.stack(
    [
        np.sin(2 * np.pi * np.arange(ANGLES) / ANGLES),
        np.cos(2 * np.pi * np.arange(ANGLES) / ANGLES),
    ],
    axis=-1,
)


_SIN, _COS = np.ascontiguousarray(_UNIT[:, 0]), np.ascontiguousarray(_UNIT[:, 1])


def _unit(angle_index: np.ndarray) -> np.ndarray:
    return np.stack([np.take(_SIN, angle_index), np.take(_COS, angle_index)], axis=-1)


class _Canvas:
    """``count`` images in map coordinates (image pixel + ``edge``), flattened, with the maps that
    say where a new paddle may go: ``blocked`` (walls, and every placed stroke grown by
    link_radius except the newest paddle of each growing snake) and per growing snake ``last``
    (its newest paddle grown by link_radius: the next one must touch it, other snakes must not).
    Stamps are pixel offsets in the flattened map, so a test is one gather."""

    def __init__(self, spec: PathfinderSpec, count: int):
        self.spec = spec
        paddles = _paddle_stamps(spec.paddle_length, spec.paddle_thickness, spec.link_radius)
        markers = _marker_stamps(spec.marker_radius, spec.link_radius)
        reach = max(int(np.abs(paddles.dilated).max()), int(np.abs(markers.dilated).max()))
        self.step = spec.paddle_length + 2 * spec.paddle_margin
        self.edge = e = reach + math.ceil(self.step) + 2
        self.side = side = spec.size + 2 * e
        self.area = side * side
        flat = lambda offsets: offsets[..., 0] * side + offsets[..., 1]  # noqa: E731
        self.paddle, self.paddle_grown = flat(paddles.offsets), flat(paddles.dilated)
        self.marker, self.marker_grown = flat(markers.offsets), flat(markers.dilated)
        self.paddle_values, self.marker_values = paddles.values, markers.values
        self.walls = np.ones((side, side), dtype=bool)
        inner = slice(e + spec.padding, e + spec.size - spec.padding)
        self.walls[inner, inner] = False
        self.walls = self.walls.reshape(-1)
        self.blocked = np.tile(self.walls, (count, 1))
        self.ink = np.zeros((count, self.area), dtype=np.float32)
        self.low, self.high = -e + reach, spec.size + e - reach - 1  # anchors kept on the map

    @property
    def count(self) -> int:
        return self.blocked.shape[0]

    def blank(self) -> np.ndarray:
        return np.zeros_like(self.blocked)

    def subset(self, rows: np.ndarray) -> _Canvas:
        """A copy of ``rows``' maps with blank ink (to try strokes and keep only those that fit)."""
        part = object.__new__(_Canvas)
        part.__dict__.update(self.__dict__)
        part.blocked = self.blocked[rows]
        part.ink = np.zeros((len(rows), self.area), dtype=np.float32)
        return part

    def anchor(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Points (..., 2), rounded to the quarter-pixel grid → flat anchors (...) in the map and
        fraction indices (...)."""
        q = np.round(points * SUBPIXEL) / SUBPIXEL
        base = np.floor(q)
        frac = np.round((q - base) * SUBPIXEL).astype(np.int64)
        base = np.clip(base.astype(np.int64), self.low, self.high) + self.edge
        return base[..., 0] * self.side + base[..., 1], frac[..., 0] * SUBPIXEL + frac[..., 1]

    def _at(self, rows: np.ndarray, base: np.ndarray, pixels: np.ndarray) -> np.ndarray:
        row = (rows * self.area).reshape((-1,) + (1,) * (base.ndim - 1))
        return (row + base)[..., None] + pixels

    def where(self, rows, base, pixels: np.ndarray) -> np.ndarray:
        """Flat map indices of footprints ``pixels`` (len(rows), K, F) at ``base`` (len(rows), K)."""
        return self._at(rows, base, pixels)

    @staticmethod
    def hits(where: np.ndarray, *maps: np.ndarray) -> np.ndarray:
        """(len(rows), K): does any footprint pixel ``where`` lie on any of ``maps``? (F is a
        multiple of 8, so each footprint's flags are whole uint64 words.)"""
        flags = np.take(maps[0].reshape(-1), where)
        for m in maps[1:]:
            flags |= np.take(m.reshape(-1), where)
        words = flags.view(np.uint64)
        out = words[..., 0] != 0
        for i in range(1, words.shape[-1]):
            out |= words[..., i] != 0
        return out

    def place(self, snake: _Snakes, rows, paddle, marker, rivals: list[_Snakes], first=False):
        """Make the grown ``paddle`` (base, pixels), with a marker's grown room ``marker`` (base,
        pixels) or None, the newest paddle of ``snake`` in ``rows``: the ``rivals`` may no
        longer come near it, and the paddle it replaces becomes forbidden to the snake itself."""
        if not first:
            old = [snake.last_px[rows]]
            with_room = rows[snake.has_room[rows]]
            if len(with_room):
                old.append(snake.room_px[with_room])
                snake.has_room[with_room] = False
            for px in old:
                snake.blocked.reshape(-1)[px] = True
                snake.last.reshape(-1)[px] = False
        for part, out in ((paddle, snake.last_px), (marker, snake.room_px)):
            if part is None:
                continue
            new = self._at(rows, *part)
            snake.last.reshape(-1)[new] = True
            for rival in rivals:
                rival.blocked.reshape(-1)[new] = True
            out[rows] = new
        if marker is not None:
            snake.has_room[rows] = True

    def draw(self, rows, base, pixels: np.ndarray, values: np.ndarray, level: float) -> None:
        at = self.ink.reshape(-1)
        where = self._at(rows, base, pixels)
        at[where] = np.maximum(at[where], np.minimum(1.0, level * values))

    def crop(self) -> np.ndarray:
        e, n = self.edge, self.spec.size
        return self.ink.reshape(-1, self.side, self.side)[:, e : e + n, e : e + n]


class _Snakes:
    """The growing state of one snake per row: pivot, heading, its newest paddle's map (grown by
    link_radius: the next paddle must touch it) and the map of what it must not touch (walls,
    its own older paddles, every paddle of the other snakes, all grown by link_radius)."""

    def __init__(self, canvas: _Canvas, blocked: np.ndarray):
        count = canvas.count
        self.blocked = blocked
        self.last = canvas.blank()
        self.last_px = np.zeros((count, canvas.paddle_grown.shape[1]), dtype=np.int64)
        self.room_px = np.zeros((count, canvas.marker_grown.shape[1]), dtype=np.int64)
        self.has_room = np.zeros(count, dtype=bool)  # the newest paddle keeps a marker's room
        self.pivot = np.zeros((count, 2))
        self.heading = np.zeros(count, dtype=np.int64)
        self.start = np.zeros((count, 2))  # the first paddle's free end (a marker spot)
        self.end = np.zeros((count, 2))  # the last paddle's free end (a marker spot)
        self.strokes: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # (rows, base, ids)

    def draw(self, cv: _Canvas, rows: np.ndarray, level: float) -> None:
        """Ink the paddles of ``rows`` (drawn only once a snake is kept: most are not)."""
        keep = np.zeros(cv.count, dtype=bool)
        keep[rows] = True
        for grown, base, ids in self.strokes:
            k = keep[grown]
            cv.draw(grown[k], base[k], cv.paddle[ids[k]], cv.paddle_values[ids[k]], level)


def _turns(spec: PathfinderSpec) -> tuple[np.ndarray, np.ndarray]:
    """Turn offsets (angle indices) with a non-zero cos² weight, and the weights."""
    limit = math.pi / 2 / spec.continuity
    k = math.floor(limit / (2 * math.pi / ANGLES) - 1e-9)
    turns = np.arange(-k, k + 1)
    return turns, np.cos(turns * (2 * math.pi / ANGLES) * spec.continuity) ** 2


def _seed(cv: _Canvas, rows, snake: _Snakes, rivals, tails, heads, marked: bool):
    """Start ``snake`` in ``rows`` at the first free candidate of (tails (b, T, 2), heading indices
    (b, T)); ``marked``: with room for a marker on the tail. Returns which rows found one."""
    spec = cv.spec
    base, frac = cv.anchor(tails)
    ids = heads * SUBPIXEL**2 + frac
    hit = cv.hits(cv.where(rows, base, cv.paddle[ids]), snake.blocked)
    if marked:
        hit |= cv.hits(cv.where(rows, base, cv.marker[frac]), snake.blocked)
    free = ~hit
    ok = free.any(axis=1)
    pick = np.argmax(free, axis=1)[ok]
    sel = np.nonzero(ok)[0]
    grown, base, ids, frac = rows[ok], base[sel, pick], ids[sel, pick], frac[sel, pick]
    tail, heading = tails[sel, pick], heads[sel, pick]
    snake.strokes.append((grown, base, ids))
    room = (base, cv.marker_grown[frac]) if marked else None
    cv.place(snake, grown, (base, cv.paddle_grown[ids]), room, rivals, first=True)
    snake.start[grown] = np.round(tail * SUBPIXEL) / SUBPIXEL
    snake.heading[grown] = heading
    snake.pivot[grown] = tail + (spec.paddle_length + spec.paddle_margin) * _unit(heading)
    return ok


def _extend(rng, cv: _Canvas, rows, snake: _Snakes, rivals, final: bool):
    """Add one paddle to ``snake`` in ``rows``: a free direction drawn with the cos² turn weights;
    the paddle must touch the snake's newest one (grown) and nothing the snake must not touch.
    ``final``: the paddle also keeps room for a marker on its free end. Returns which rows
    grew."""
    spec = cv.spec
    turns, weights = _turns(spec)
    angle = (snake.heading[rows, None] + turns[None, :]) % ANGLES  # (b, K)
    u = _unit(angle)
    tails = snake.pivot[rows, None, :] + spec.paddle_margin * u
    base, frac = cv.anchor(tails)
    ids = angle * SUBPIXEL**2 + frac
    where = cv.where(rows, base, cv.paddle[ids])
    hit = cv.hits(where, snake.blocked)
    touch = cv.hits(where, snake.last)
    if final:
        ends = tails + spec.paddle_length * u
        mbase, mfrac = cv.anchor(ends)
        hit |= cv.hits(cv.where(rows, mbase, cv.marker[mfrac]), snake.blocked)
    w = np.where(touch & ~hit, weights[None, :], 0.0)
    total = w.sum(axis=1)
    ok = total > 0
    cum = np.cumsum(w, axis=1)
    pick = np.argmax(cum > (rng.random(len(rows)) * total)[:, None], axis=1)[ok]
    sel = np.nonzero(ok)[0]
    grown = rows[ok]
    base, ids, chosen = base[sel, pick], ids[sel, pick], angle[sel, pick]
    snake.strokes.append((grown, base, ids))
    room = (mbase[sel, pick], cv.marker_grown[mfrac[sel, pick]]) if final else None
    cv.place(snake, grown, (base, cv.paddle_grown[ids]), room, rivals)
    if final:
        snake.end[grown] = np.round(ends[sel, pick] * SUBPIXEL) / SUBPIXEL
    snake.pivot[grown] += cv.step * _unit(chosen)
    snake.heading[grown] = chosen
    return ok


def _targets(rng, cv: _Canvas) -> tuple[np.ndarray, _Snakes, _Snakes]:
    """The two target snakes on every canvas; returns which canvases hold both, complete."""
    spec, count = cv.spec, cv.count
    n, sd = spec.size, spec.seed_distance
    a, c = _Snakes(cv, cv.blocked.copy()), _Snakes(cv, cv.blocked.copy())
    # the first snake starts at least 2 × seed_distance from the border (the original's rule)
    lo, hi = min(2 * sd, n / 2 - 1), max(n - 1 - 2 * sd, n / 2)
    tails = rng.uniform(lo, hi, size=(count, 1, 2))
    heads = rng.integers(0, ANGLES, (count, 1))
    alive = np.arange(count)
    ok = _seed(cv, alive, a, [c], tails, heads, True)
    alive = alive[ok]
    around = rng.uniform(0, 2 * math.pi, size=(len(alive), SEED_TRIES))
    tails = a.start[alive, None, :] + sd * np.stack([np.sin(around), np.cos(around)], axis=-1)
    heads = rng.integers(0, ANGLES, (len(alive), SEED_TRIES))
    ok = _seed(cv, alive, c, [a], tails, heads, True)
    alive = alive[ok]
    for step in range(spec.contour_length - 1):
        final = step == spec.contour_length - 2
        for snake, other in ((a, c), (c, a)):
            ok = _extend(rng, cv, alive, snake, [other], final)
            alive = alive[ok]
    cv.blocked[alive] = a.blocked[alive] | c.blocked[alive]  # every stroke, grown, and walls
    a.draw(cv, alive, spec.target_contrast)
    c.draw(cv, alive, spec.target_contrast)
    done = np.zeros(count, dtype=bool)
    done[alive] = True
    return done, a, c


def _distractors(rng, cv: _Canvas) -> None:
    """Up to ``spec.distractors`` short snakes per canvas, each tried ``DISTRACTOR_TRIES`` times
    from a random free start; one that cannot grow to full length is dropped, as in the
    original. Each try draws on a copy of the pending canvases and keeps the snakes that grew."""
    spec = cv.spec
    n, pad = spec.size, spec.padding
    for _ in range(spec.distractors):
        pending = np.arange(cv.count)
        for _ in range(DISTRACTOR_TRIES):
            if len(pending) == 0:
                break
            part = cv.subset(pending)
            snake = _Snakes(part, part.blocked)
            tails = rng.uniform(pad, n - 1 - pad, size=(part.count, SEED_TRIES, 2))
            heads = rng.integers(0, ANGLES, (part.count, SEED_TRIES))
            alive = np.arange(part.count)
            ok = _seed(part, alive, snake, [], tails, heads, False)
            alive = alive[ok]
            for _ in range(spec.distractor_length - 1):
                ok = _extend(rng, part, alive, snake, [], False)
                alive = alive[ok]
            snake.draw(part, alive, spec.distractor_contrast)
            rows = pending[alive]
            cv.blocked[rows] = part.blocked[alive] | snake.last[alive]
            cv.ink[rows] = np.maximum(cv.ink[rows], part.ink[alive])
            grown = np.zeros(part.count, dtype=bool)
            grown[alive] = True
            pending = pending[~grown]


def _configurations(rng, spec: PathfinderSpec, count: int):
    """``count`` canvases of target snakes and distractors (no markers yet), with the snakes'
    starts and ends (count, 2, 2). Target pairs are drawn in batches sized by the success rate
    so far; a pair that does not fit is dropped and drawn again, as in the original."""
    cv = _Canvas(spec, count)
    starts = np.zeros((count, 2, 2))
    ends = np.zeros((count, 2, 2))
    have, tried, fitted = 0, 0, 0
    limit = max(64, BATCH_CELLS // cv.area)
    while have < count:
        rate = (fitted + 1) / (tried + 2)
        if tried > 4096 and fitted == 0:
            raise DataError(
                f"Pathfinder {spec.size}×{spec.size} {spec.difficulty}: no pair of target "
                f"snakes fits in {tried} tries"
            )
        part = _Canvas(spec, min(limit, max(16, math.ceil(1.2 * (count - have) / rate))))
        ok, a, c = _targets(rng, part)
        tried, fitted = tried + part.count, fitted + int(ok.sum())
        got = np.nonzero(ok)[0][: count - have]
        done = slice(have, have + len(got))
        cv.blocked[done], cv.ink[done] = part.blocked[got], part.ink[got]
        starts[done] = np.stack([a.start[got], c.start[got]], axis=1)
        ends[done] = np.stack([a.end[got], c.end[got]], axis=1)
        have += len(got)
    _distractors(rng, cv)
    return cv, starts, ends


def _rng(seed: str) -> np.random.Generator:
    digest = hashlib.sha256(f"llnbench-pathfinder-{seed}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:16], "little"))


def generate(count: int, spec: PathfinderSpec, seed: str) -> PathfinderImages:
    """``count`` images seeded by the string ``seed`` (the same seed and count give the same
    images). Labels are drawn fair, then kept only while their marker distance is not yet more
    frequent in their class than in the other (``DISTANCE_BIN``)."""
    spec.validate()
    rng = _rng(seed)
    n = spec.size
    images = np.zeros((count, n, n), dtype=np.uint8)
    labels = np.zeros(count, dtype=np.int64)
    centres = np.zeros((count, 2, 2), dtype=np.float32)
    seen = {0: {}, 1: {}}  # class → distance bin → images kept
    kept = 0
    while kept < count:
        pool = min(POOL, max(64, math.ceil((count - kept) * 1.25)))
        cv, starts, ends = _configurations(rng, spec, pool)
        label = rng.integers(0, 2, pool)
        origin = rng.integers(0, 2, pool)
        first = starts[np.arange(pool), origin]
        second = ends[np.arange(pool), np.where(label == 1, origin, 1 - origin)]
        distance = np.linalg.norm(first - second, axis=1)
        take = []
        for i in range(pool):
            y, b = int(label[i]), int(distance[i] // DISTANCE_BIN)
            if seen[y].get(b, 0) > seen[1 - y].get(b, 0):
                continue  # this class already leads at this distance
            seen[y][b] = seen[y].get(b, 0) + 1
            take.append(i)
            if kept + len(take) == count:
                break
        take = np.asarray(take, dtype=np.int64)
        for point in (first, second):
            base, frac = cv.anchor(point[take])
            cv.draw(take, base, cv.marker[frac], cv.marker_values[frac], 1.0)
        out = slice(kept, kept + len(take))
        images[out] = np.round(cv.crop()[take] * 255).astype(np.uint8)
        labels[out] = label[take]
        centres[out] = np.stack([first[take], second[take]], axis=1)
        kept += len(take)
    lengths = np.full(count, spec.contour_length, dtype=np.int16)
    return PathfinderImages(images, labels, centres, lengths)
