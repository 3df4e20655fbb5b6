"""Optuna storages for one or many workers, with heartbeats that let a dead worker's trial be
retried.

* ``sqlite:///file.db`` (one machine, few writers), ``postgresql://...`` / ``mysql://...``
  (several machines): Optuna's ``RDBStorage``, with its own heartbeat;
* ``journal:///file.log``: Optuna's journal file storage, for several worker processes on one
  machine (appends under a file lock; no "database is locked"). A torn last line that a killed
  writer left is ended before anything appends (:func:`~mtlsearch.search._journal.end_torn_tail`;
  Optuna would append onto it and leave the file unreadable). Optuna's journal
  storage has no heartbeat, so :class:`HeartbeatJournalStorage` adds one with the same contract
  as ``RDBStorage``'s: Optuna's own heartbeat thread, stale-trial check and
  ``RetryHeartbeatStaleTrialCallback`` then work unchanged.

With heartbeats on, a trial whose worker stopped beating for ``grace_period`` seconds is failed
the next time any worker starts a trial (or :func:`recover` runs), and the retry callback queues
a copy with the same parameters and user attributes; mtlsearch's ``run_id`` user attribute is
how the copy finds the dead trial's epoch checkpoints.
"""

from __future__ import annotations

import datetime
import time
import warnings
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import JournalStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages.journal import JournalFileBackend
from optuna.trial import FrozenTrial, TrialState

from ..errors import ConfigError, DamagedStorageError
from ..storage_url import driver_hint, redact, scrub, with_installed_driver
from ._compat import BaseHeartbeat, heartbeat_storage, rdb_heartbeat_age, storage_trial_id
from ._signals import deferred

HEARTBEAT_ATTR = "mtlsearch:heartbeat"
RETRY_OF = "retry_of"  # user attribute of a trial queued again after Ctrl-C: the interrupted number
MAX_RETRY = 3  # a trial whose workers keep dying is retried at most this often


class HeartbeatJournalStorage(JournalStorage, BaseHeartbeat):
    """A journal file storage whose running trials record heartbeats (a system attribute with the
    wall-clock time); a running trial silent for ``grace_period`` seconds is stale.

    Clocks: the journal is a local file, so every writer shares the machine's clock.
    """

    def __init__(self, backend, heartbeat_interval: int, grace_period: int, callback=None):
        super().__init__(backend)
        self.heartbeat_interval = heartbeat_interval
        self.grace_period = grace_period
        self.callback = callback

    def record_heartbeat(self, trial_id: int) -> None:
        self.set_trial_system_attr(trial_id, HEARTBEAT_ATTR, time.time())

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        now = time.time()
        stale = []
        for trial in self.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,)):
            beat = trial.system_attrs.get(HEARTBEAT_ATTR)
            if beat is None:  # never beat: count from the start
                beat = trial.datetime_start.timestamp() if trial.datetime_start else now
            if now - beat > self.grace_period:
                stale.append(storage_trial_id(trial))
        return stale

    def get_heartbeat_interval(self) -> int | None:
        return self.heartbeat_interval

    def get_heartbeat_stale_trial_callback(self):
        return self.callback


class HeldSignalsBackend(JournalFileBackend):
    """Optuna's journal file backend, appending with SIGINT and SIGTERM held: a record is written
    whole or not at all, and Optuna's file lock, interrupted at the wrong moment, would release
    the lock that another writer holds (whose own release then fails: ``did not possess lock``)."""

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        with deferred():
            super().append_logs(logs)


def journal_path(url: str) -> str:
    path = url[len("journal:///") :] if url.startswith("journal:///") else url[len("journal://") :]
    if not path:
        raise ConfigError("run.storage", f"`{url}` names no file; e.g. journal:///study.log")
    return path


def open_storage(url: str, heartbeat: tuple[int, int] | None = None) -> optuna.storages.BaseStorage:
    """An Optuna storage for ``url``: SQLAlchemy URLs (sqlite, postgresql, mysql) or
    ``journal:///relative/file.log`` / ``journal:////absolute/file.log`` for a journal file.

    ``heartbeat=(interval, grace_period)`` turns on heartbeats and the retry of stale trials
    (what workers need); reading a study (report, export) does not.
    """
    with warnings.catch_warnings():  # Optuna marks its heartbeat API experimental since v2.8; it is what we rely on
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        callback = RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY) if heartbeat else None
    if url.startswith("journal://"):
        from ._journal import end_torn_tail

        path = journal_path(url)
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        end_torn_tail(path)  # before anything appends: Optuna would write onto the torn line
        backend = HeldSignalsBackend(path)
        try:  # the storage reads the whole file now
            if heartbeat:
                return HeartbeatJournalStorage(backend, heartbeat[0], heartbeat[1], callback)
            return JournalStorage(backend)
        except ValueError as err:  # JSONDecodeError, "Invalid log format."
            raise DamagedStorageError(
                "run.storage",
                f"journal `{path}` has a damaged line in the middle ({type(err).__name__}: {err}), such as a write "
                f"onto a torn one leaves; `mtlsearch check STUDY --storage {redact(url)} --repair` repairs torn "
                "writes and keeps every finished trial",
            ) from None
    kwargs: dict = {}
    shown = redact(url)
    url = with_installed_driver(url)
    if url.startswith("sqlite:///"):
        db = url[len("sqlite:///") :]
        if db and db != ":memory:":
            parent = Path(db).parent
            if not parent.exists():
                raise ConfigError("run.storage", f"the folder of `{db}` does not exist")
            damage = sqlite_damage(db)
            if damage:
                raise DamagedStorageError("run.storage", sqlite_recovery(db, damage))
        # several processes on one file: wait for the lock instead of failing at once
        kwargs["engine_kwargs"] = {"connect_args": {"timeout": 60}}
    if heartbeat:
        kwargs.update(
            heartbeat_interval=heartbeat[0], grace_period=heartbeat[1], heartbeat_stale_trial_callback=callback
        )
    attempt = 0
    while True:
        attempt += 1
        try:
            with warnings.catch_warnings():  # heartbeat_interval is experimental too (see above)
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(url, **kwargs)
        except ImportError as err:
            raise ConfigError("run.storage", scrub(f"cannot open `{shown}`: {err}; {driver_hint(url)}", url)) from None
        except Exception as err:  # SQLAlchemy raises many kinds; the URL is what the user can fix
            if attempt < 3 and _creating_tables(err):
                time.sleep(0.2 * attempt)
                continue
            first = str(err).strip().splitlines()[0] if str(err).strip() else ""
            message = f"cannot open `{shown}`: {type(err).__name__}: {first}"
            raise ConfigError("run.storage", scrub(message, url)) from None


def _creating_tables(err: Exception) -> bool:
    """Two processes opening one new database at the same moment both create Optuna's tables
    and stamp its schema version; the later one fails (`table ... already exists`, a unique
    version row), and a second try finds them made."""
    text = str(err)
    return "already exists" in text or "alembic_version" in text or "duplicate key" in text


def sqlite_damage(file: str) -> str | None:
    """What SQLite's ``quick_check`` finds wrong with ``file`` (opened read-only), or ``None``
    when it is sound, missing, or cannot be opened now (the caller's own open then says why)."""
    import sqlite3
    from contextlib import closing

    path = Path(file)
    if not path.is_file():
        return None
    try:
        with closing(sqlite3.connect(path.resolve().as_uri() + "?mode=ro", uri=True, timeout=60)) as db:
            rows = db.execute("PRAGMA quick_check").fetchall()
    except sqlite3.OperationalError:  # locked, unreadable: not a verdict on the file
        return None
    except sqlite3.DatabaseError as err:  # "database disk image is malformed", "file is not a database"
        return str(err)
    found = [line for r in rows for line in str(r[0]).splitlines() if line != "ok" and not line.startswith("***")]
    return "; ".join(found[:3]) or None


def sqlite_recovery(file: str, damage: str) -> str:
    """One line: ``file`` is damaged, and how to recover its readable rows."""
    import shlex

    return (
        f"SQLite file `{file}` is damaged ({damage}); mtlsearch changed nothing. Recover its readable rows into a "
        f"new file with `sqlite3 {shlex.quote(file)} .recover | sqlite3 recovered.db` (a sqlite3 without .recover: "
        "see the README's section Damaged storage), then `mtlsearch check STUDY --storage sqlite:///recovered.db`; or, "
        "while the study still reads, copy it to a new storage with `optuna.copy_study`"
    )


def load_study(study_name: str, url: str, heartbeat: tuple[int, int] | None = None) -> optuna.Study:
    """The stored study ``study_name``; a clear error naming the studies there when it is not."""
    storage = open_storage(url, heartbeat)
    names = [s.study_name for s in optuna.get_all_study_summaries(storage, include_best_trial=False)]
    if study_name not in names:
        shown = ", ".join(f"`{n}`" for n in names[:20]) + (f" and {len(names) - 20} more" if len(names) > 20 else "")
        raise ConfigError("study", f"no study `{study_name}` in {redact(url)}; it has: {shown or 'no studies'}")
    return optuna.load_study(study_name=study_name, storage=storage)


def recover(study: optuna.Study) -> list[int]:
    """Fail the study's stale trials now and queue their retries; returns the failed numbers."""
    from optuna.storages import fail_stale_trials

    before = {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        fail_stale_trials(study)
    fail_silent_trials(study)
    after = {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
    return sorted(before - after)


def fail_silent_trials(study: optuna.Study) -> None:
    """Fail (and retry, as a stale trial is) a RUNNING trial of an ``RDBStorage`` that never
    recorded a heartbeat and started more than ``grace_period`` seconds ago: its process died
    before its first beat, and Optuna's stale check, which looks only at trials that beat, would
    leave it RUNNING for ever."""
    storage = heartbeat_storage(study)
    if storage is None or isinstance(storage, HeartbeatJournalStorage):  # the journal's check counts from the start
        return
    grace = getattr(storage, "grace_period", None)
    if not isinstance(grace, (int, float)):
        return
    get_callback = getattr(storage, "get_heartbeat_stale_trial_callback", storage.get_failed_trial_callback)
    callback = get_callback()
    now = datetime.datetime.now()
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        started = trial.datetime_start
        if started is None or (now - started).total_seconds() <= grace or rdb_heartbeat_age(study, trial) is not None:
            continue
        try:
            study.tell(trial.number, state=TrialState.FAIL)
        except (ValueError, RuntimeError):  # finished by its own process meanwhile
            continue
        if callback is not None:
            callback(study, study.trials[trial.number])


def heartbeat_age(study: optuna.Study, trial: FrozenTrial) -> float | None:
    """Seconds since ``trial`` (RUNNING) last recorded a heartbeat, on its storage's clock;
    ``None`` when it has recorded none (or the storage keeps no heartbeats)."""
    beat = trial.system_attrs.get(HEARTBEAT_ATTR)  # journal: HeartbeatJournalStorage
    if isinstance(beat, (int, float)):
        return max(time.time() - beat, 0.0)
    return rdb_heartbeat_age(study, trial)


def retried_numbers(study: optuna.Study) -> set[int]:
    """Numbers of failed trials that a later trial retries (they do not count toward the budget)."""
    out: set[int] = set()
    for t in study.get_trials(deepcopy=False):  # stored values are untrusted: numbers only
        history = t.system_attrs.get("retry_history", [])
        retry_of = t.user_attrs.get(RETRY_OF)
        for n in [*(history if isinstance(history, list) else []), retry_of]:
            if isinstance(n, int) and not isinstance(n, bool):
                out.add(n)
    return out
