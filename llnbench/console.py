"""The rich consoles every job prints through.

In a terminal rich uses its width; in logs and CI (no TTY) it would fall back to 80 columns and
cut the result tables, so those get 140 (or $COLUMNS).

User text (paths, names, values) is never markup: messages escape it (``rich.markup.escape``)
or print with ``markup=False``. As a last guard, a line whose markup does not parse (a path with
``[/x]`` that a message forgot to escape) is printed as it is instead of raising MarkupError.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from rich.console import Console
from rich.errors import MarkupError


def _width(stream) -> int | None:
    if stream.isatty() or os.environ.get("COLUMNS"):
        return None  # rich measures the terminal or reads $COLUMNS itself
    return 140


class _Console(Console):
    def print(self, *objects: Any, **kwargs: Any) -> None:
        try:
            super().print(*objects, **kwargs)
        except MarkupError:
            super().print(*objects, **{**kwargs, "markup": False})


console = _Console(width=_width(sys.stdout))
err_console = _Console(stderr=True, width=_width(sys.stderr))
