"""How signals are held while a stopped run saves its work (mtlsearch/search/_signals.py), in this
process: with another thread alive, as Optuna's heartbeat thread is during a trial (a
``pthread_sigmask`` of the main thread then holds nothing: the kernel hands the signal to the
other thread and the main thread raises anyway)."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator

import pytest

from mtlsearch.search._signals import deferred, guarded, safe_point, stoppable


@pytest.fixture(autouse=True)
def default_handlers() -> Iterator[None]:
    """Each test starts from Python's own handlers: tests that ran `mtlsearch.cli.main` in this
    process before (the fuzz test) leave SIGTERM raising KeyboardInterrupt, as the CLI wants."""
    import signal

    from mtlsearch.search import _signals

    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    _signals._Stops.active = _signals._Stops.open = False
    _signals._Stops.pending = None
    yield
    for s, handler in saved.items():
        signal.signal(s, handler)


@pytest.fixture
def other_thread() -> Iterator[None]:
    stop = threading.Event()
    thread = threading.Thread(target=stop.wait)
    thread.start()
    yield
    stop.set()
    thread.join()


def spin(seconds: float = 0.05) -> None:
    """Run Python code for a while: a pending signal handler runs here."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        time.sleep(0.001)


def kill(*signals: signal.Signals) -> None:
    for sig in signals:
        os.kill(os.getpid(), sig)
        time.sleep(0.001)


def test_a_second_signal_cannot_cut_short_the_saving_of_the_first(other_thread):
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    saved = []
    with pytest.raises(KeyboardInterrupt, match="signal SIGINT"):
        with guarded():
            try:
                with stoppable():  # training
                    kill(signal.SIGINT)
                    spin(5)
            except KeyboardInterrupt:
                kill(signal.SIGINT, signal.SIGTERM)  # 1 ms apart
                spin()
                saved.append("the retry")  # nothing cut this short
                raise
    assert saved == ["the retry"]
    assert {s: signal.getsignal(s) for s in before} == before


def test_outside_training_a_signal_waits_for_the_next_safe_point(other_thread):
    written = []
    with pytest.raises(KeyboardInterrupt, match="signal SIGTERM"):
        with guarded():
            kill(signal.SIGTERM)
            spin()  # Optuna's tell, a storage write
            written.append("told")
            safe_point()
            written.append("never")
    assert written == ["told"]


def test_a_signal_that_waited_stops_the_run_when_the_block_ends_normally(other_thread):
    with pytest.raises(KeyboardInterrupt):
        with guarded():
            kill(signal.SIGINT)
            spin()


def test_a_swallowed_interrupt_still_stops_the_trial_at_its_next_safe_point(other_thread):
    """Python swallows an exception raised in a weakref callback or ``__del__`` (two signals 1 ms
    apart can be one call of the handler); the trial still stops, at its next epoch's end."""
    with guarded():
        with stoppable():
            try:
                kill(signal.SIGINT, signal.SIGINT)
                spin(5)
            except KeyboardInterrupt:
                pass  # swallowed
            spin()  # training goes on
            with pytest.raises(KeyboardInterrupt):
                safe_point()


def test_an_ignored_signal_stays_ignored(other_thread):
    previous = signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        with guarded(), stoppable():
            kill(signal.SIGTERM)
            spin()
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_deferred_holds_a_signal_until_the_block_ends(other_thread):
    done = []
    with pytest.raises(KeyboardInterrupt):
        with deferred():
            os.kill(os.getpid(), signal.SIGINT)
            spin()
            done.append("saved")
        spin()  # delivered now
    assert done == ["saved"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_signal_while_an_append_waits_for_the_journal_lock_waits_until_it_is_written(tmp_path):
    """The record is written, the other writer's lock is left alone (Optuna's lock, interrupted
    at the wrong moment, releases a lock that another writer holds), then the signal raises."""
    from optuna.storages.journal import JournalFileSymlinkLock

    from mtlsearch.search._storage import HeldSignalsBackend

    path = str(tmp_path / "j.log")
    backend = HeldSignalsBackend(path)
    other = JournalFileSymlinkLock(path)  # another writer, holding the lock for 0.3 s
    other.acquire()
    threading.Timer(0.05, os.kill, (os.getpid(), signal.SIGINT)).start()
    releases: list[str] = []

    def release() -> None:
        try:
            other.release()
            releases.append("released")
        except RuntimeError as err:  # "did not possess lock": someone took it
            releases.append(str(err))

    threading.Timer(0.3, release).start()
    with pytest.raises(KeyboardInterrupt):
        with guarded(), stoppable():  # an epoch's record, written during training
            backend.append_logs([{"op_code": 0, "worker_id": "w", "study_name": "s", "directions": [1]}])
            spin()
    spin(0.4)
    assert releases == ["released"]
    assert list(backend.read_logs(0)) == [{"op_code": 0, "worker_id": "w", "study_name": "s", "directions": [1]}]
