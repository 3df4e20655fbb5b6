"""The only places mtlsearch relies on Optuna internals, each because no public API exists.

* :class:`BaseHeartbeat` (``optuna.storages._heartbeat``): the interface ``RDBStorage``
  implements and Optuna's heartbeat thread and stale-trial check call; the journal storage has
  no heartbeat, and implementing this interface is the only way to give it one
  (:class:`~mtlsearch.search._storage.HeartbeatJournalStorage`). Its abstract
  ``_get_stale_trial_ids`` returns storage trial ids (``FrozenTrial._trial_id``);
  :func:`stale_trial_ids` reads it without failing the trials (``mtlsearch check``).
* :func:`heartbeat_storage` (``Study._storage``): the heartbeat settings and retry callback of a
  study's storage, to fail a RUNNING trial that never beat (Optuna's stale check skips it).
* :func:`storage_trial_id` (``FrozenTrial._trial_id``): the storage id of a trial, needed to
  write to a RUNNING trial that another process asked for (``optuna.Trial(study, trial_id)``).
* :func:`rdb_heartbeat_age` (``Study._storage``, the ``_CachedStorage._backend`` it wraps, the
  ``TrialHeartbeatModel`` table of ``optuna.storages._rdb.models``): how long ago an
  ``RDBStorage`` trial last beat, on the database's clock, which no public API tells (a worker
  says what it waits for).

Checked against Optuna :data:`TESTED`; ``tests/test_compat.py`` fails on any other major version
and when one of these names changes, so a new release is looked at before it is trusted.
"""

from __future__ import annotations

import optuna
from optuna.storages._heartbeat import BaseHeartbeat
from optuna.trial import FrozenTrial

TESTED = "5"  # Optuna major version these internals were checked against

__all__ = [
    "BaseHeartbeat",
    "TESTED",
    "heartbeat_storage",
    "live_trial",
    "rdb_heartbeat_age",
    "stale_trial_ids",
    "storage_trial_id",
]


def storage_trial_id(trial: FrozenTrial) -> int:
    """The storage's id of ``trial`` (Optuna keeps it private)."""
    return trial._trial_id


def stale_trial_ids(storage: BaseHeartbeat, study_id: int) -> list[int]:
    """Storage ids of the study's RUNNING trials whose heartbeat is stale: what
    ``optuna.storages.fail_stale_trials`` would fail, read without failing them."""
    return list(storage._get_stale_trial_ids(study_id))


def heartbeat_storage(study: optuna.Study) -> BaseHeartbeat | None:
    """The heartbeat storage under ``study`` (``Study._storage``, which may wrap it in a
    ``_CachedStorage``), or ``None`` when heartbeats are off."""
    storage = getattr(study._storage, "_backend", study._storage)
    if isinstance(storage, BaseHeartbeat) and storage.get_heartbeat_interval() is not None:
        return storage
    return None


def live_trial(study: optuna.Study, trial: FrozenTrial) -> optuna.Trial:
    """A handle that writes to ``trial`` (RUNNING) of ``study``, wherever it was asked."""
    return optuna.Trial(study, storage_trial_id(trial))


def rdb_heartbeat_age(study: optuna.Study, trial: FrozenTrial) -> float | None:
    """Seconds since ``trial`` last recorded a heartbeat in ``study``'s ``RDBStorage``, on the
    database's clock; ``None`` for another storage or a trial that never beat."""
    import sqlalchemy
    from optuna.storages._rdb import models

    storage = getattr(study._storage, "_backend", study._storage)  # RDBStorage is wrapped in a _CachedStorage
    if not isinstance(storage, optuna.storages.RDBStorage):
        return None
    beat = models.TrialHeartbeatModel
    query = sqlalchemy.select(beat.heartbeat, sqlalchemy.func.now()).where(beat.trial_id == storage_trial_id(trial))
    with storage.engine.connect() as connection:
        row = connection.execute(query).first()
    if row is None:
        return None
    last, now = (value.replace(tzinfo=None) for value in row)
    return max((now - last).total_seconds(), 0.0)
