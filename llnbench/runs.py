"""Run directories: ``runs/<job>/<timestamp>-<label>`` unless the user names one; config.yaml."""

from __future__ import annotations

import dataclasses
import datetime
import re
from pathlib import Path
from typing import Any

import yaml

from llnbench import files


def new_run_dir(job: str, label: str, explicit: str | None = None) -> Path:
    """The user's ``run_dir`` as given (resuming reuses it), else a fresh timestamped folder."""
    if explicit:
        path = Path(explicit)
        path.mkdir(parents=True, exist_ok=True)
        return path
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    # a mechanism spec (my_pkg.mod:Cls) or a hub id (org/name) is no folder name
    label = re.sub(r"[^A-Za-z0-9._-]+", "-", label)
    base = Path("runs") / job / f"{stamp}-{label}"
    path, i = base, 1
    while path.exists():  # two runs in the same second
        path, i = base.with_name(f"{base.name}-{i}"), i + 1
    path.mkdir(parents=True)
    return path


def as_plain(cfg: Any) -> dict[str, Any]:
    """A dataclass config as plain containers (for config.yaml, W&B and checkpoints)."""
    data = dataclasses.asdict(cfg) if dataclasses.is_dataclass(cfg) else dict(cfg)
    return _plain(data)


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def save_config(run_dir: Path, cfg: Any) -> Path:
    return files.write_text(run_dir / "config.yaml", yaml.safe_dump(as_plain(cfg), sort_keys=False))
