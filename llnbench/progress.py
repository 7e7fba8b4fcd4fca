"""Progress of long work: a live rich bar on a terminal, plain lines everywhere else.

Off a terminal (stdout is a log file under nohup, SLURM or CI) a live bar shows nothing until the
end, so :class:`ProgressBar` prints one plain line instead, at every multiple of ``every`` units of
work or every ~30 s, whichever comes first (never more than one line per 2 s), and at the end:

    pretrain lln-tiny: step 100/1200 (8%), loss 7.123, 12,345 tok/s, elapsed 0:01:02, ETA 0:11:20

``LLNBENCH_PROGRESS_SECONDS`` changes the 30 s (0: a line at every update).
"""

from __future__ import annotations

import math
import os
import time
from types import TracebackType
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from llnbench.console import console as stdout_console

DEFAULT_SECONDS = 30.0
MIN_SECONDS = 2.0  # plain lines on `every` alone never come faster than this


def line_interval() -> float:
    """Seconds between plain lines: ``$LLNBENCH_PROGRESS_SECONDS`` or 30."""
    try:
        value = float(os.environ.get("LLNBENCH_PROGRESS_SECONDS", DEFAULT_SECONDS))
    except ValueError:
        return DEFAULT_SECONDS
    return value if math.isfinite(value) and value >= 0 else DEFAULT_SECONDS


class ProgressBar:
    """One task's progress. ``fields`` maps a value's name to its format (``"loss {:.3f}"``);
    values arrive through :meth:`update` and are shown in the bar or line once known."""

    def __init__(
        self,
        description: str,
        total: int,
        *,
        completed: int = 0,
        unit: str = "",
        fields: dict[str, str] | None = None,
        every: int = 1,
        enabled: bool = True,
        console: Console | None = None,
        transient: bool = False,
    ):
        self.description, self.total, self.completed = description, total, completed
        self.unit, self.fields, self.every = unit, dict(fields or {}), max(1, every)
        self.values: dict[str, Any] = {}
        self.console = console or stdout_console
        self.enabled, self.transient = enabled, transient  # transient: the bar goes at the end
        self.live = enabled and self.console.is_terminal
        self._progress: Progress | None = None
        self._task: Any = None
        self._start = time.perf_counter()
        self._first = completed  # work done in an earlier session does not count for the ETA
        self._printed_at, self._printed_done = self._start, completed
        self.interval = line_interval()

    # -- context ----------------------------------------------------------------------------

    def __enter__(self) -> ProgressBar:
        if self.live:
            columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn()]
            columns += [TextColumn(f"{{task.fields[{k}]}}") for k in self.fields]
            columns.append(TimeRemainingColumn(elapsed_when_finished=True))
            self._progress = Progress(*columns, console=self.console, transient=self.transient)
            self._progress.__enter__()
            self._task = self._progress.add_task(
                self.description, total=self.total, completed=self.completed,
                **{k: "" for k in self.fields},
            )  # fmt: skip
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        if self._progress is not None:
            self._progress.__exit__(kind, error, trace)
        elif (
            self.enabled and not self.live and kind is None and self._printed_done != self.completed
        ):
            self._print_line()  # the last state, when the final update did not print it

    # -- updates ----------------------------------------------------------------------------

    def update(
        self,
        *,
        completed: int | None = None,
        advance: int = 0,
        description: str | None = None,
        **values: Any,
    ) -> None:
        if completed is not None:
            self.completed = completed
        self.completed += advance
        if description is not None:
            self.description = description
        self.values.update(values)
        if not self.enabled:
            return
        if self._progress is not None:
            shown = {k: self._field(k) for k in self.fields}
            self._progress.update(
                self._task, completed=self.completed, description=self.description, **shown
            )
        elif self._due():
            self._print_line()

    def _field(self, key: str) -> str:
        value = self.values.get(key)
        if value is None or (isinstance(value, float) and not math.isfinite(value)):
            return ""
        return self.fields[key].format(value)

    def _due(self) -> bool:
        now = time.perf_counter()
        since, done = now - self._printed_at, self.completed - self._printed_done
        if done <= 0:
            return False
        if self.completed >= self.total or since >= self.interval:
            return True
        # a multiple of `every` passed since the last line (the Trainer's log steps)
        crossed = self.completed // self.every > self._printed_done // self.every
        return crossed and since >= min(MIN_SECONDS, self.interval)

    def _print_line(self) -> None:
        self.console.print(self.line(), markup=False, highlight=False, soft_wrap=True)
        self._printed_at, self._printed_done = time.perf_counter(), self.completed

    def line(self) -> str:
        """The plain progress line for the current state."""
        pct = 100 * self.completed / self.total if self.total else 100.0
        unit = f"{self.unit} " if self.unit else ""
        name = " ".join(self.description.split())  # a bar's column padding is noise in a log
        parts = [f"{name}: {unit}{self.completed}/{self.total} ({pct:.0f}%)"]
        parts += [text for key in self.fields if (text := self._field(key))]
        elapsed = time.perf_counter() - self._start
        parts.append(f"elapsed {clock(elapsed)}")
        done = self.completed - self._first
        if 0 < done and self.completed < self.total:
            parts.append(f"ETA {clock(elapsed / done * (self.total - self.completed))}")
        return ", ".join(parts)


def clock(seconds: float) -> str:
    """h:mm:ss, as rich's bars show time."""
    whole = round(seconds)
    return f"{whole // 3600}:{whole // 60 % 60:02d}:{whole % 60:02d}"
