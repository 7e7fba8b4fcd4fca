"""Run directories: ``runs/<job>/<timestamp>-<label>`` unless the user names one; config.yaml.

Every run directory is locked while its job runs (``.llnbench.lock``, holding the pid): a second
process on the same directory is refused instead of writing the same checkpoint. The lock is an
``flock``, which the kernel drops when its holder dies, so a lock file left by a ``kill -9`` is
stale by construction and the next run takes it over.
"""

from __future__ import annotations

import atexit
import dataclasses
import datetime
import os
import re
import socket
from pathlib import Path
from typing import Any

import yaml

from llnbench import files
from llnbench.errors import ConfigError

LOCK = ".llnbench.lock"
# resolved run directory -> (the path as given, descriptor of its locked lock file)
_held: dict[Path, tuple[Path, int]] = {}


def new_run_dir(job: str, label: str, explicit: str | None = None) -> Path:
    """The user's ``run_dir`` as given (resuming reuses it), else a fresh timestamped folder;
    locked for this process either way."""
    if explicit:
        path = Path(explicit)
        _make_dir(path, explicit)
        lock_run_dir(path)
        return path
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    # a mechanism spec (my_pkg.mod:Cls) or a hub id (org/name) is no folder name
    label = re.sub(r"[^A-Za-z0-9._-]+", "-", label)
    base = Path("runs") / job / f"{stamp}-{label}"
    path, i = base, 1
    while path.exists():  # two runs in the same second
        path, i = base.with_name(f"{base.name}-{i}"), i + 1
    _make_dir(path, str(path))
    lock_run_dir(path)
    return path


def _make_dir(path: Path, given: str) -> None:
    if path.exists() and not path.is_dir():
        raise ConfigError(
            f"run directory {given!r} is an existing file; run_dir (scale: --out) must name a "
            "folder, new or from an earlier run"
        )
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:  # a parent that is a file, no permission, read-only filesystem
        raise ConfigError(f"cannot create run directory {given!r}: {err.strerror}") from None


def lock_run_dir(path: Path) -> None:
    """Hold ``path/.llnbench.lock`` until the job ends (``release_run_dirs``) or the process dies;
    refuse when another live process holds it."""
    import fcntl

    key = path.resolve()
    if key in _held:
        return
    lock = path / LOCK
    fd = files.open_lock(lock)  # a FIFO, a device or an unwritable folder: one line
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _holder(fd) or "pid unknown"
        os.close(fd)
        raise ConfigError(
            f"run directory {str(path)!r} is in use by another llnbench process ({holder}); wait "
            "for it to finish or stop it, or choose another run_dir"
        ) from None
    except OSError:  # a filesystem without flock (some network mounts): run unlocked
        os.close(fd)
        return
    stale = _holder(fd)
    if stale:  # the holder died without releasing (kill -9, power loss): its lock is void now
        from llnbench.console import err_console

        err_console.print(
            f"note: {lock} was left by {stale}, which is no longer running; taking it over",
            markup=False,
            highlight=False,
        )
    stamp = datetime.datetime.now().isoformat(timespec="seconds")
    files.rewrite_fd(fd, f"pid {os.getpid()} on {socket.gethostname()} since {stamp}\n", lock)
    _held[key] = (path, fd)


def _holder(fd: int) -> str:
    os.lseek(fd, 0, os.SEEK_SET)
    return os.read(fd, 200).decode(errors="replace").strip()


def release_run_dirs() -> None:
    """Unlock every run directory this process holds (the CLI calls it after each job)."""
    import fcntl

    for _, fd in _held.values():
        os.ftruncate(fd, 0)  # empty = released cleanly, not stale
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
    _held.clear()


atexit.register(release_run_dirs)


def held_run_dirs() -> list[Path]:
    """The run directories this process holds (as given), in the order it locked them."""
    return [path for path, _ in _held.values()]


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
