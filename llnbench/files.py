"""Every file a command writes goes through here: atomic writes, folders, lock files, figures.

A crash at any moment leaves the old file or the new one, never a torn one. An OS error (a
read-only filesystem, a parent that is a file, a full disk, a device or FIFO where a file should
be) becomes one :class:`PathError` line naming the path and the cause, never a traceback. Files
get the mode of the user's umask (0644 under the usual 022), as ``open`` would give them: a temp
file from ``mkstemp`` is 0600 and would otherwise keep that mode after the rename.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import io
import json
import os
import stat
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from llnbench.errors import LlnbenchError


class PathError(LlnbenchError):
    """A file or folder that cannot be written; the message names the path and the cause."""


_CAUSES = {
    errno.EROFS: "read-only filesystem",
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted (a read-only or special filesystem?)",
    errno.EISDIR: "it is a directory, not a file",
    errno.ENAMETOOLONG: "file name too long",
    errno.ELOOP: "too many levels of symbolic links",
    errno.EXDEV: "crosses filesystems",
}


def describe_os_error(err: OSError, path: str | Path | None = None, verb: str = "write") -> str:
    """``cannot write 'PATH': CAUSE`` for an OS error, naming the culprit where it is a parent."""
    given = path if path is not None else err.filename
    if given is None:  # the OS named no file (a write on an open handle)
        return f"a {verb} failed: {_CAUSES.get(err.errno or 0) or err.strerror or err}"
    where = Path(os.fsdecode(given))
    return f"cannot {verb} {str(where)!r}: {_cause(err, where)}"


def is_path_problem(err: OSError) -> bool:
    """An OS error about a file or the disk (worth one line), not a bug or a broken pipe."""
    return err.filename is not None or err.errno in (errno.ENOSPC, errno.EROFS, errno.EDQUOT)


def _cause(err: OSError, path: Path) -> str:
    code = err.errno
    if code in (errno.ENOTDIR, errno.EEXIST, errno.ENOENT):
        blocker = _non_folder_parent(path)
        if blocker is not None:
            return f"{str(blocker)!r} is {_kind(blocker)}, not a folder"
        if code == errno.ENOENT and _on_proc(path):
            return "/proc is a kernel filesystem; nothing can be created there"
    if code in _CAUSES:
        return _CAUSES[code]
    return err.strerror or str(err)


def _non_folder_parent(path: Path) -> Path | None:
    """The nearest existing path at or above ``path`` that is not a folder, if any."""
    for candidate in [path, *path.parents]:
        if os.path.lexists(candidate):
            return None if candidate.is_dir() else candidate
    return None


def _on_proc(path: Path) -> bool:
    return path.absolute().parts[1:2] == ("proc",)


def _kind(path: Path) -> str:
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return "a broken link"
    if stat.S_ISREG(mode):
        return "a file"
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


@contextlib.contextmanager
def writing(path: str | Path) -> Iterator[None]:
    """OS errors inside (and a library's error on a full disk) become one PathError line naming
    ``path``."""
    try:
        yield
    except LlnbenchError:
        raise
    except OSError as err:  # named by the path meant, not by a temp file beside it
        raise PathError(describe_os_error(err, path)) from None
    except Exception:
        # libraries report a full disk in their own words: torch.save as "[enforce fail at
        # inline_container.cc] ...", safetensors as a SafetensorError
        if _disk_full(Path(path)):
            raise PathError(f"cannot write {str(path)!r}: no space left on device") from None
        raise


def file_mode() -> int:
    """The mode ``open`` gives a new file under the current umask (0o644 under 022)."""
    return 0o666 & ~_umask()


def folder_mode() -> int:
    return 0o777 & ~_umask()


def _umask() -> int:
    try:  # Linux reports it without changing it
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def make_dir(path: str | Path, what: str = "folder") -> Path:
    """``path`` as a folder (parents too); a file in the way or an OS refusal is one line."""
    path = Path(path)
    if os.path.lexists(path) and not path.is_dir():
        raise PathError(f"cannot use {str(path)!r} as a {what}: it is {_kind(path)}")
    with writing(path):
        path.mkdir(parents=True, exist_ok=True)
    return path


def temp_dir_beside(path: str | Path) -> Path:
    """A fresh hidden folder next to ``path`` (same filesystem, for a rename into place), with
    the umask's folder mode rather than mkdtemp's 0700."""
    path = Path(path)
    make_dir(path.parent)
    with writing(path):
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
        os.chmod(tmp, folder_mode())
    return tmp


def share_modes(folder: str | Path) -> None:
    """Every file and folder under ``folder`` to the umask's mode: libraries that write their
    own files (safetensors writes 0600) then match what llnbench writes itself."""
    with writing(folder):
        for root, _, names in os.walk(folder):
            os.chmod(root, folder_mode())
            for name in names:
                os.chmod(os.path.join(root, name), file_mode())


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], None]) -> Path:
    """Write through ``write(fileobj)`` to a temp file in the same folder, fsync, then rename."""
    path = Path(path)
    make_dir(path.parent)
    if os.path.lexists(path) and not _regular(path):
        raise PathError(f"cannot write {str(path)!r}: it is {_kind(path)}, not a regular file")
    with writing(path):
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            os.fchmod(fd, file_mode())
            with os.fdopen(fd, "wb") as handle:
                write(handle)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    return path


def _disk_full(path: Path) -> bool:
    folder = next((p for p in [path, *path.parents] if p.is_dir()), None)
    try:
        return folder is not None and _free_bytes(folder) < 1 << 20
    except OSError:
        return False


def _free_bytes(folder: Path) -> int:
    info = os.statvfs(folder)
    return info.f_bavail * info.f_frsize


def _regular(path: Path) -> bool:
    """A regular file (or a dangling link, which a rename simply replaces)."""
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return True


def open_lock(path: str | Path) -> int:
    """A descriptor on the lock file ``path`` (created 0644-under-umask), refused unless it is a
    regular file: a FIFO, a device (/dev/full) or a folder there is one line, not a hang."""
    path = Path(path)
    if os.path.lexists(path) and not (path.exists() and _regular(path)):
        raise PathError(
            f"cannot use lock file {str(path)!r}: it is {_kind(path)}, not a regular file; "
            "remove it"
        )
    with writing(path):
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NONBLOCK, file_mode())
    if not stat.S_ISREG(os.fstat(fd).st_mode):  # replaced between the check and the open
        os.close(fd)
        raise PathError(f"cannot use lock file {str(path)!r}: not a regular file; remove it")
    os.set_blocking(fd, True)
    return fd


def rewrite_fd(fd: int, text: str, path: str | Path) -> None:
    """Replace the contents of an open file (a lock file's holder line); a full disk is one line."""
    with writing(path):
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, text.encode())


def save_figure(fig: Any, path: str | Path, **kwargs: Any) -> Path:
    """A matplotlib figure saved atomically (format from the suffix), in the umask's mode."""
    path = Path(path)
    fmt = kwargs.pop("format", None) or path.suffix.lstrip(".") or "png"
    return atomic_write(path, lambda handle: fig.savefig(handle, format=fmt, **kwargs))


def write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda f: f.write(text.encode()))


def write_json(path: str | Path, data: Any) -> Path:
    return write_text(path, json.dumps(data, indent=2, default=_jsonable) + "\n")


def write_csv(path: str | Path, rows: Iterable[dict[str, Any]]) -> Path:
    rows = list(rows)
    columns: list[str] = []
    for row in rows:
        columns.extend(k for k in row if k not in columns)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns)
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _csv_value(row.get(k)) for k in columns})
    return write_text(path, buffer.getvalue())


def _csv_value(value: Any) -> Any:
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(value, default=_jsonable)
    return "" if value is None else value


def _jsonable(value: Any) -> Any:
    """Tensors, numpy scalars and paths become plain JSON values."""
    if hasattr(value, "item") and callable(value.item):
        try:
            return value.item()
        except (ValueError, RuntimeError):
            pass
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    return str(value)
