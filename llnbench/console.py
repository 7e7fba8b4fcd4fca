"""The rich consoles every job prints through.

In a terminal rich uses its width; in logs and CI (no TTY) it would fall back to 80 columns and
cut the result tables, so those get 140 (or $COLUMNS).
"""

from __future__ import annotations

import os
import sys

from rich.console import Console


def _width(stream) -> int | None:
    if stream.isatty() or os.environ.get("COLUMNS"):
        return None  # rich measures the terminal or reads $COLUMNS itself
    return 140


console = Console(width=_width(sys.stdout))
err_console = Console(stderr=True, width=_width(sys.stderr))
