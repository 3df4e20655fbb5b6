"""The only places mtlsearch relies on Optuna internals, each because no public API exists.

* :class:`BaseHeartbeat` (``optuna.storages._heartbeat``): the interface ``RDBStorage``
  implements and Optuna's heartbeat thread and stale-trial check call; the journal storage has
  no heartbeat, and implementing this interface is the only way to give it one
  (:class:`~mtlsearch.search._storage.HeartbeatJournalStorage`). Its abstract
  ``_get_stale_trial_ids`` returns storage trial ids (``FrozenTrial._trial_id``);
  :func:`stale_trial_ids` reads it without failing the trials (``mtlsearch check``).
* :func:`storage_trial_id` (``FrozenTrial._trial_id``): the storage id of a trial, needed to
  write to a RUNNING trial that another process asked for (``optuna.Trial(study, trial_id)``).

Checked against Optuna :data:`TESTED`; ``tests/test_compat.py`` fails on any other major version
and when one of these names changes, so a new release is looked at before it is trusted.
"""

from __future__ import annotations

import optuna
from optuna.storages._heartbeat import BaseHeartbeat
from optuna.trial import FrozenTrial

TESTED = "5"  # Optuna major version these internals were checked against

__all__ = ["BaseHeartbeat", "TESTED", "live_trial", "stale_trial_ids", "storage_trial_id"]


def storage_trial_id(trial: FrozenTrial) -> int:
    """The storage's id of ``trial`` (Optuna keeps it private)."""
    return trial._trial_id


def stale_trial_ids(storage: BaseHeartbeat, study_id: int) -> list[int]:
    """Storage ids of the study's RUNNING trials whose heartbeat is stale: what
    ``optuna.storages.fail_stale_trials`` would fail, read without failing them."""
    return list(storage._get_stale_trial_ids(study_id))


def live_trial(study: optuna.Study, trial: FrozenTrial) -> optuna.Trial:
    """A handle that writes to ``trial`` (RUNNING) of ``study``, wherever it was asked."""
    return optuna.Trial(study, storage_trial_id(trial))
