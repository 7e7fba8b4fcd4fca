"""Run directories: ``runs/<job>/<timestamp>-<label>`` unless the user names one; config.yaml.

Every run directory is locked while its job runs (``.llnbench.lock``, holding the pid): a second
process on the same directory is refused instead of writing the same checkpoint. The lock is an
``flock``, which the kernel drops when its holder dies, so a lock file left by a ``kill -9`` is
stale by construction and the next run takes it over; temporary files a kill left mid-write
(``.checkpoint.pt.*.tmp``) are removed then too.

A run directory belongs to one run: ``.llnbench-run.json`` names its job, config.yaml holds the
settings that ran. :func:`claim_run_dir` refuses another job's directory, or settings that would
change the result (``seed``, ``trainer.lr``, ...); settings that cannot (``log_every``, W&B, the
cache folder) may differ. A directory this process created and left holding nothing but its lock
(the data check failed, say) is removed again when the job ends.
"""

from __future__ import annotations

import atexit
import dataclasses
import datetime
import json
import os
import re
import socket
from pathlib import Path
from typing import Any

import yaml

from llnbench import files
from llnbench.errors import ConfigError

LOCK = ".llnbench.lock"
RECORD = ".llnbench-run.json"  # {"job": ...}: which job's run this directory holds
CONFIG = "config.yaml"
# config keys that cannot change a result: they may differ when a run is continued
NO_RESULT_KEYS = (
    "run_dir", "wandb", "trainer.log_every", "trainer.checkpoint_every", "trainer.resume",
    "trainer.eval_batch_size", "trainer.compile", "data.cache_dir", "data.workers", "progress",
)  # fmt: skip
# files a job leaves in its run directory, for directories older than RECORD
_JOB_MARKERS = (("scale.json", "scale"), ("checkpoint.pt", "pretrain"), ("lra_curves.png", "lra"))
# resolved run directory -> (the path as given, descriptor of its locked lock file)
_held: dict[Path, tuple[Path, int]] = {}
# run directories that held nothing when this process locked them -> the topmost folder it
# created for them (None: the folder was there, empty): at release, when they still hold
# nothing but the lock and the run record, those go, and the folders this process created
_created: dict[Path, Path | None] = {}


def new_run_dir(job: str, label: str, explicit: str | None = None) -> Path:
    """The user's ``run_dir`` as given (resuming reuses it), else a fresh timestamped folder;
    locked for this process either way."""
    if explicit:
        path = Path(explicit)
        top = _make_dir(path, explicit)
        lock_run_dir(path, created=top)
        return path
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    # a mechanism spec (my_pkg.mod:Cls) or a hub id (org/name) is no folder name
    label = re.sub(r"[^A-Za-z0-9._-]+", "-", label)
    base = Path("runs") / job / f"{stamp}-{label}"
    path, i = base, 1
    while path.exists():  # two runs in the same second
        path, i = base.with_name(f"{base.name}-{i}"), i + 1
    top = _make_dir(path, str(path))
    lock_run_dir(path, created=top)
    return path


def _make_dir(path: Path, given: str) -> Path | None:
    """Create ``path`` (and its parents); the topmost folder it created, None when it existed."""
    if path.exists() and not path.is_dir():
        raise ConfigError(
            f"run directory {given!r} is an existing file; run_dir (scale: --out) must name a "
            "folder, new or from an earlier run"
        )
    top = None
    for folder in (path, *path.parents):
        if folder.exists():
            break
        top = folder
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:  # a parent that is a file, no permission, read-only filesystem
        raise ConfigError(f"cannot create run directory {given!r}: {err.strerror}") from None
    return top


def lock_run_dir(path: Path, created: Path | None = None) -> None:
    """Hold ``path/.llnbench.lock`` until the job ends (``release_run_dirs``) or the process dies;
    refuse when another live process holds it. ``created``: the topmost folder the caller made
    for ``path``, removed at release when the run never wrote anything."""
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
    remove_stale_temporaries(path)
    if created is not None or not _used(path):
        _created[key] = created


def remove_stale_temporaries(run_dir: Path) -> list[Path]:
    """Delete the temporary files of atomic writes (``.<name>.<random>.tmp``) that a kill left in
    ``run_dir`` and its seed folders; only the lock holder calls this, so none is being written."""
    removed = []
    for pattern in (".*.tmp", "*/.*.tmp", "*/*/.*.tmp"):
        for tmp in run_dir.glob(pattern):
            if tmp.is_file() and tmp.name.count(".") >= 3:
                tmp.unlink(missing_ok=True)
                removed.append(tmp)
    return removed


def _holder(fd: int) -> str:
    os.lseek(fd, 0, os.SEEK_SET)
    return os.read(fd, 200).decode(errors="replace").strip()


def release_run_dirs() -> None:
    """Unlock every run directory this process holds (the CLI calls it after each job)."""
    import fcntl

    for key, (path, fd) in _held.items():
        os.ftruncate(fd, 0)  # empty = released cleanly, not stale
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
        if key in _created:
            _remove_if_unused(path, _created.pop(key))
    _held.clear()
    _created.clear()


def _used(path: Path) -> bool:
    return bool({p.name for p in path.iterdir()} - {LOCK, RECORD})


def _remove_if_unused(path: Path, top: Path | None) -> None:
    """A run that never started (its data check failed, say) leaves nothing behind: when
    ``path`` holds only the lock and the run record, remove them, then ``path`` and its empty
    parents up to ``top``, the first folder this process created (None: keep the folder)."""
    try:
        if _used(path):
            return
        for name in (LOCK, RECORD):
            (path / name).unlink(missing_ok=True)
        if top is None:
            return
        folder = path
        while True:
            folder.rmdir()
            if folder == top or folder.parent == folder:
                break
            folder = folder.parent
            if any(folder.iterdir()):
                break
    except OSError:  # someone else wrote there meanwhile, or a folder is not ours to remove
        pass


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
    text = yaml.safe_dump(as_plain(cfg), sort_keys=False)
    return files.write_text(run_dir / CONFIG, text)  # an OS error: one PathError line


# ---------------------------------------------------------------------------------------------
# One run per directory


def open_run_dir(
    job: str, label: str, explicit: str | None, cfg: Any | None = None, may_differ: tuple = ()
) -> Path:
    """:func:`new_run_dir`, then :func:`claim_run_dir` for ``job`` and ``cfg``."""
    path = new_run_dir(job, label, explicit)
    claim_run_dir(path, job, cfg, may_differ)
    return path


def claim_run_dir(
    run_dir: Path, job: str, cfg: Any | None = None, may_differ: tuple[str, ...] = ()
) -> None:
    """Refuse ``run_dir`` when it holds another job's run, or (``cfg`` given) a run whose
    config.yaml differs from ``cfg`` in a key that can change the result, where it holds a
    checkpoint or a result to continue from (a run that never saved one simply starts over);
    then record ``job``.

    Call it right after :func:`new_run_dir`, before anything is read from or written into the
    directory, with the config that :func:`save_config` will write (derived values resolved).
    ``may_differ``: keys the job keeps apart itself (GLUE and LRA seeds: one folder each)."""
    found = run_job(run_dir)
    if found is not None and found != job:
        raise ConfigError(
            f"run directory {str(run_dir)!r} holds a {found} run; a {job} run cannot continue "
            f"in it (its files would be replaced): choose another run_dir, or leave run_dir "
            "unset for a fresh folder"
        )
    if cfg is not None and holds_state(run_dir):  # else nothing of that run is continued
        saved = _saved_config(run_dir)
        if saved is not None:
            diffs = config_differences(saved, as_plain(cfg), may_differ)
            if diffs:
                shown = "; ".join(f"{k}: ran {a!r}, now {b!r}" for k, a, b in diffs[:4])
                more = f" (and {len(diffs) - 4} more)" if len(diffs) > 4 else ""
                raise ConfigError(
                    f"run directory {str(run_dir)!r} holds a {job} run of other settings "
                    f"({shown}{more}); rerun with its settings to continue it, or choose "
                    "another run_dir for these"
                )
    if found is None:
        files.write_json(run_dir / RECORD, {"job": job})


def holds_state(run_dir: Path) -> bool:
    """Does ``run_dir`` hold something a rerun continues or reuses (a checkpoint, a result)?"""
    names = ("checkpoint.pt", "result.json", "results.json")
    return any(any(run_dir.glob(f"{deep}{name}")) for deep in ("", "*/", "*/*/") for name in names)


def run_job(run_dir: Path) -> str | None:
    """The job whose run ``run_dir`` holds: its record, else (older runs) results.json's
    ``job``, else the files it left; None for an empty or unknown folder."""
    for name, key in ((RECORD, "job"), ("results.json", "job")):
        data = _read_json(run_dir / name)
        if isinstance(data, dict) and isinstance(data.get(key), str):
            return data[key]
    for name, job in _JOB_MARKERS:
        if (run_dir / name).exists():
            return job
    if any(run_dir.glob("seed*/result.json")) or any(run_dir.glob("seed*/checkpoint.pt")):
        return "lra"
    if any(run_dir.glob("*/seed*/result.json")) or any(run_dir.glob("*/seed*/checkpoint.pt")):
        return "glue"
    return None


def config_differences(
    saved: dict[str, Any], wanted: dict[str, Any], may_differ: tuple[str, ...] = ()
) -> list[tuple[str, Any, Any]]:
    """(key, ran, now) for each result-changing key where the configs differ (``None`` stands
    for a key one side lacks); a mechanism's name first: another mechanism's options differ too."""
    ran, now = _flat(saved), _flat(wanted)
    out = [
        (key, ran.get(key), now.get(key))
        for key in sorted(set(ran) | set(now))
        if not _no_result(key, may_differ)
        and (key not in ran or key not in now or ran[key] != now[key])
    ]
    return sorted(out, key=lambda diff: not diff[0].endswith(".name"))


def _no_result(key: str, also: tuple[str, ...] = ()) -> bool:
    return any(key == k or key.startswith(f"{k}.") for k in also) or any(
        key == k or key.startswith(f"{k}.") or key.endswith(f".{k}") for k in NO_RESULT_KEYS
    )


def _flat(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, dict) and data:
        out: dict[str, Any] = {}
        for key, value in data.items():
            out.update(_flat(value, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: data}


def _saved_config(run_dir: Path) -> dict[str, Any] | None:
    path = run_dir / CONFIG
    if not path.is_file():
        return None
    try:
        data = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError, OSError) as err:
        raise ConfigError(
            f"{path} cannot be read ({type(err).__name__}), so this run's settings cannot be "
            "checked against it: choose another run_dir, or restore the file"
        ) from None
    return data if isinstance(data, dict) else None


def _read_json(path: Path) -> Any:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (ValueError, OSError):  # damaged: the other signs decide
        return None
