"""Stopping on a signal without losing work: SIGTERM is handled like Ctrl-C, and a second
signal that arrives while the first one's work is being saved waits until it is saved. See
docs/search.md#ctrl-c-and-sigterm.

Signals are held by Python handlers that record them, not by ``pthread_sigmask``: a mask holds
a signal from the calling thread only, and the kernel then hands it to another thread (Optuna's
heartbeat thread, torch's), whose C handler still makes the main thread raise.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def terminate_as_interrupt() -> None:
    """Make SIGTERM raise ``KeyboardInterrupt`` in the main thread, as Ctrl-C does, so that a
    terminated run re-queues its trial, stops its workers and prints how to resume."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _raise_interrupt)


def _raise_interrupt(signum, frame) -> None:  # noqa: ARG001 - a signal handler's signature
    raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


class _Stops:
    """Where a guarded block stands: signals raise at once while ``open``; else one waits."""

    active = False
    open = False
    pending: int | None = None


def _stop(signum: int, frame: FrameType | None) -> None:  # noqa: ARG001 - a signal handler's signature
    if _Stops.pending is None:  # kept: an interrupt that Python swallows (raised in a weakref
        _Stops.pending = signum  # callback, say) raises again at the next safe point
    if _Stops.open:
        _Stops.open = False  # a second signal waits: it must not cut short the first one's saving
        raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")


@contextlib.contextmanager
def guarded() -> Iterator[None]:
    """While the block runs (main thread only), SIGINT and SIGTERM stop it only where that loses
    nothing: at once inside :func:`stoppable` blocks (training: the trial is then queued again),
    elsewhere at the next :func:`safe_point`, so none cuts short a storage write (Optuna's
    ask and tell, a retry being queued, the heartbeat thread's end); a signal that arrives while
    the first one's work is saved waits, and is dropped when the block ends by that interrupt. A
    signal the process ignores or handles its own way is left alone."""
    if not _main_thread() or _Stops.active:
        yield
        return
    previous = {s: signal.getsignal(s) for s in STOP_SIGNALS}
    for s, handler in previous.items():
        if handler in (signal.default_int_handler, signal.SIG_DFL, _raise_interrupt):
            signal.signal(s, _stop)
    _Stops.active, _Stops.open, _Stops.pending = True, False, None
    try:
        yield
    finally:
        _restore(previous)
        _Stops.active = _Stops.open = False
        pending, _Stops.pending = _Stops.pending, None
    if pending is not None:  # the block ended normally (its interrupt was swallowed, or it waited)
        raise KeyboardInterrupt(f"signal {signal.Signals(pending).name}")


def _restore(previous: dict) -> None:
    """Put back the handlers a block replaced (``None``: one not set from Python, left alone)."""
    for s, handler in previous.items():
        if handler is not None:
            signal.signal(s, handler)


@contextlib.contextmanager
def stoppable() -> Iterator[None]:
    """Inside :func:`guarded`, a signal raises ``KeyboardInterrupt`` at once while the block runs
    (one that waited raises on entry); elsewhere the block runs as it is."""
    safe_point()
    if not _Stops.active:
        yield
        return
    _Stops.open = True
    try:
        yield
    finally:
        _Stops.open = False


def safe_point() -> None:
    """Raise ``KeyboardInterrupt`` here for a signal that waited (inside :func:`guarded`)."""
    if _Stops.pending is not None:
        pending, _Stops.pending = _Stops.pending, None
        raise KeyboardInterrupt(f"signal {signal.Signals(pending).name}")


@contextlib.contextmanager
def ignored() -> Iterator[None]:
    """Ignore SIGINT and SIGTERM while the block runs (main thread only), e.g. while a stopped run
    prints how to resume: CPython runs a handler some bytecodes after the signal, so one that
    arrived just as a :func:`guarded` block ended would otherwise raise there."""
    if not _main_thread():
        yield
        return
    previous = {s: signal.signal(s, signal.SIG_IGN) for s in STOP_SIGNALS}
    try:
        yield
    finally:
        _restore(previous)


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Hold SIGINT and SIGTERM while the block runs (e.g. queueing an interrupted trial again);
    the first that arrived meanwhile is delivered when the block ends."""
    if not _main_thread():
        yield
        return
    held: list[int] = []
    previous = {s: signal.getsignal(s) for s in STOP_SIGNALS}
    for s, handler in previous.items():
        if handler is not None:
            signal.signal(s, lambda signum, frame: held.append(signum))
    try:
        yield
    finally:
        _restore(previous)
        if held:
            signal.raise_signal(held[0])
