"""Checkpoints: written atomically, loaded with ``weights_only=True``, refused on shape mismatch.

A checkpoint holds only tensors and plain containers (the RNG states included), so the safe
unpickler of ``torch.load(weights_only=True)`` accepts it. A write is never cut by Ctrl-C or
SIGTERM (they act as it ends), and a full disk is one line naming the file.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch

from llnbench import files, stopping
from llnbench.errors import CheckpointError

CHECKPOINT = "checkpoint.pt"
FORMAT = 1


def save(path: str | Path, state: dict[str, Any]) -> Path:
    """Temp file in the same folder, fsync, rename: a kill leaves the old or the new file."""
    writer = _Recording()

    def write(handle: IO[bytes]) -> None:
        writer.handle = handle
        try:
            torch.save({"format": FORMAT, **state}, writer)
        except RuntimeError:  # torch wraps what the file raised ("enforce fail at ...")
            if writer.error is not None:
                raise writer.error from None
            raise

    try:
        with stopping.held():
            return files.atomic_write(path, write)
    except files.PathError as err:  # atomic_write names the path and the cause
        raise CheckpointError(
            f"checkpoint not written: {err}; the previous one is intact: free space (or fix "
            "the folder) and rerun the same command to continue"
        ) from None


class _Recording:
    """A file for torch.save that remembers the exception its writes raised (a full disk)."""

    def __init__(self) -> None:
        self.handle: IO[bytes] | None = None
        self.error: BaseException | None = None

    def write(self, data: bytes) -> int:
        try:
            return self.handle.write(data)  # type: ignore[union-attr]
        except BaseException as err:
            self.error = err
            raise

    def flush(self) -> None:
        self.handle.flush()  # type: ignore[union-attr]


def load(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # truncated, corrupt or foreign files all land here
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"cannot load checkpoint {path}: {reason[:200]}") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT or "model" not in state:
        raise CheckpointError(f"{path} is not an llnbench checkpoint")
    return state


def check_signature(path: Path, saved: dict[str, Any], wanted: dict[str, Any]) -> None:
    """Refuse a checkpoint whose shape-defining config differs, naming the differing keys."""
    diffs = _differences(saved, wanted)
    named = [d for d in diffs if d[0].endswith(".name")]
    diffs = named or diffs  # another mechanism: its options differ too, but the name says it all
    if diffs:
        shown = "; ".join(f"{k}: checkpoint {a!r} vs requested {b!r}" for k, a, b in diffs[:4])
        raise CheckpointError(f"checkpoint {path} does not match the requested config ({shown})")


def _differences(a: Any, b: Any, prefix: str = "") -> list[tuple[str, Any, Any]]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for key in sorted(set(a) | set(b)):
            out += _differences(a.get(key), b.get(key), f"{prefix}.{key}" if prefix else key)
        return out
    return [] if a == b else [(prefix, a, b)]


# ---------------------------------------------------------------------------------------------
# RNG state as plain containers


def rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "python": _listify(random.getstate()),
        "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _listify(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_listify(v) for v in value]
    return value
