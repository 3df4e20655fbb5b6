"""Stopping on a signal without losing work: SIGTERM is handled like Ctrl-C, and a second
signal that arrives while the first one's work is being saved waits until it is saved. See
docs/search.md#ctrl-c-and-sigterm."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}


def terminate_as_interrupt() -> None:
    """Make SIGTERM raise ``KeyboardInterrupt`` in the main thread, as Ctrl-C does, so that a
    terminated run re-queues its trial, stops its workers and prints how to resume."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _raise_interrupt)


def _raise_interrupt(signum, frame) -> None:  # noqa: ARG001 - a signal handler's signature
    raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")


def hold() -> set[int | signal.Signals] | None:
    """Hold SIGINT and SIGTERM until :func:`release` (main thread only; elsewhere ``None``)."""
    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)


def release(previous: set[int | signal.Signals] | None) -> None:
    """Undo :func:`hold`; a signal that arrived meanwhile is delivered now."""
    if previous is not None:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Hold SIGINT and SIGTERM while the block runs (e.g. queueing an interrupted trial again);
    a signal that arrived meanwhile is delivered when the block ends."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
