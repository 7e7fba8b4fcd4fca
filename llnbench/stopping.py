"""SIGTERM as a clean stop: what schedulers (SLURM, Kubernetes), ``kill`` and CI send first.

Outside a training loop SIGTERM raises :class:`Terminated` at once, like Ctrl-C raises
KeyboardInterrupt: every file is written atomically, so stopping anywhere leaves the last good
state. Inside :func:`deferred` (the Trainer's loop) it only sets a flag; the loop finishes its
step, writes its checkpoint and then raises, so the rerun resumes from exactly that step.
The CLI turns :class:`Terminated` into one line and exit code 143 (128 + SIGTERM).
:func:`held` keeps both SIGTERM and Ctrl-C out of a write that must not be cut (torch.save turns
an exception raised inside it into its own RuntimeError); they take effect as it ends.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType


class Terminated(Exception):
    """The process got SIGTERM; the message says where it stopped and how to resume."""

    exit_code = 128 + signal.SIGTERM


class _State:
    deferring = 0  # nesting depth of deferred()
    requested = False  # a SIGTERM arrived while deferring


_state = _State()


def _handler(signum: int, frame: FrameType | None) -> None:
    if _state.deferring:
        _state.requested = True
        return
    raise Terminated("stopped by SIGTERM")


@contextlib.contextmanager
def sigterm_raises() -> Iterator[None]:
    """For the duration: SIGTERM raises Terminated (or is deferred, see below). A no-op off the
    main thread, where Python cannot install signal handlers."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class Deferral:
    """Handed out by :func:`deferred`: ``requested`` is true once SIGTERM has arrived."""

    @property
    def requested(self) -> bool:
        return _state.requested


@contextlib.contextmanager
def deferred() -> Iterator[Deferral]:
    """For the duration, SIGTERM only sets ``requested``; the caller stops at a safe point. A
    SIGTERM still pending on exit is raised then."""
    with sigterm_raises():
        if _state.deferring == 0:
            _state.requested = False
        _state.deferring += 1
        try:
            yield Deferral()
        finally:
            _state.deferring -= 1
            pending = _state.deferring == 0 and _state.requested
            if pending:
                _state.requested = False
    if pending:
        raise Terminated("stopped by SIGTERM")


@contextlib.contextmanager
def held() -> Iterator[None]:
    """For the duration, SIGINT (Ctrl-C) and SIGTERM are recorded, not acted on; on exit each one
    that arrived is raised again under the handlers from before, so Ctrl-C still ends in
    KeyboardInterrupt and SIGTERM in :class:`Terminated` (or a deferred stop) right after."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    arrived: list[int] = []
    signals = (signal.SIGINT, signal.SIGTERM)
    previous = {s: signal.signal(s, lambda signum, frame: arrived.append(signum)) for s in signals}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        for s in dict.fromkeys(arrived):
            signal.raise_signal(s)
