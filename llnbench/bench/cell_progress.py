"""Progress of a ``scale`` sweep in a log: a line per finished cell, and a heartbeat inside long ones.

One cell can run for minutes (a compile, softmax at 64k on CPU), so a background thread prints a
line whenever ``interval`` seconds pass without one, naming what runs and its phase:

    scale: cell 7/24 softmax[flash] N=8192 fwdbwd: call 4 (timing), 0:00:41 in this cell, ...

The ETA extrapolates each series from its own last cell (time x (N ratio)^2 for quadratic
mechanisms, ^1 for linear ones) rather than averaging cells, whose cost grows with N.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from types import TracebackType

from rich.console import Console

from llnbench.progress import clock, line_interval


@dataclass(frozen=True)
class Cell:
    series: str
    seq_len: int
    mode: str
    exponent: float  # how time grows with N: 2 quadratic, 1 linear


class CellProgress:
    """Plain lines for a sweep of ``cells`` (disabled: silent, e.g. on a terminal with a bar)."""

    def __init__(self, cells: list[Cell], console: Console, *, enabled: bool = True,
                 interval: float | None = None, budget_s: float | None = None):  # fmt: skip
        self.cells, self.console, self.enabled = cells, console, enabled
        self.interval = line_interval() if interval is None else interval
        self.budget_s = budget_s
        self.walls: dict[int, float] = {}  # index -> wall seconds of finished cells
        self.index, self.phase = -1, "starting"
        self._start = self._cell_start = self._printed = time.perf_counter()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> CellProgress:
        if self.enabled and self.interval > 0:
            self._thread = threading.Thread(target=self._beat, name="scale-heartbeat", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:  # fmt: skip
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    # -- what the sweep reports -------------------------------------------------------------

    def start(self, index: int) -> None:
        with self._lock:
            self.index, self.phase = index, "building"
            self._cell_start = time.perf_counter()

    def set_phase(self, phase: str) -> None:
        self.phase = phase  # a plain attribute store: safe to read from the heartbeat thread

    def done(self, index: int, outcome: str, wall_s: float | None = None) -> None:
        with self._lock:
            self.walls[index] = time.perf_counter() - self._cell_start if wall_s is None else wall_s
            self._say(f"{self._name(index)}: {outcome}")

    # -- lines ------------------------------------------------------------------------------

    def _name(self, index: int) -> str:
        c = self.cells[index]
        return f"scale: cell {index + 1}/{len(self.cells)} {c.series} N={c.seq_len} {c.mode}"

    def _say(self, text: str) -> None:
        if not self.enabled:
            return
        elapsed = time.perf_counter() - self._start
        eta = self.eta_s() if len(self.walls) < len(self.cells) else None
        tail = f", elapsed {clock(elapsed)}" + (f", ETA ~{clock(eta)}" if eta is not None else "")
        self.console.print(text + tail, markup=False, highlight=False, soft_wrap=True)
        self._printed = time.perf_counter()

    def heartbeat_line(self) -> str:
        in_cell = time.perf_counter() - self._cell_start
        return f"{self._name(self.index)}: {self.phase}, {clock(in_cell)} in this cell"

    def _beat(self) -> None:
        while not self._stop.wait(min(1.0, self.interval)):
            with self._lock:
                if self.index >= 0 and time.perf_counter() - self._printed >= self.interval:
                    self._say(self.heartbeat_line())

    def eta_s(self) -> float | None:
        """Seconds left: each remaining cell from its series' last finished cell, scaled by N."""
        if not self.walls:
            return None
        mean = sum(self.walls.values()) / len(self.walls)
        last: dict[tuple[str, str], tuple[int, float]] = {}
        left = 0.0
        for i, cell in enumerate(self.cells):
            key = (cell.series, cell.mode)
            if i in self.walls:
                last[key] = (cell.seq_len, self.walls[i])
                continue
            if i == self.index:  # running: at least what it has taken so far
                guess = self._guess(cell, last.get(key), mean)
                left += max(guess - (time.perf_counter() - self._cell_start), 0.0)
                continue
            left += self._guess(cell, last.get(key), mean)
        return left

    def _guess(self, cell: Cell, seen: tuple[int, float] | None, mean: float) -> float:
        guess = mean if seen is None else seen[1] * (cell.seq_len / seen[0]) ** cell.exponent
        # a cell over the budget skips its series' longer lengths, so none costs much more
        return min(guess, 1.5 * self.budget_s) if self.budget_s else guess
