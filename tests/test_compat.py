"""The Optuna internals mtlsearch relies on (mtlsearch/search/_compat.py) still exist and behave:
this fails loudly on a new Optuna major version, or when one of them changes."""

from __future__ import annotations

import optuna
from optuna.trial import TrialState

from mtlsearch.search import _compat as compat
from mtlsearch.search._storage import HeartbeatJournalStorage


def test_optuna_major_version_is_the_one_checked():
    major = optuna.__version__.split(".")[0]
    assert major == compat.TESTED, (
        f"Optuna {optuna.__version__} is installed; mtlsearch/search/_compat.py was checked against {compat.TESTED}.x. "
        "Check BaseHeartbeat and FrozenTrial._trial_id on the new release, then update compat.TESTED."
    )


def test_live_trial_writes_to_a_trial_asked_elsewhere():
    study = optuna.create_study()
    asked = study.ask()
    frozen = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))[0]
    assert compat.storage_trial_id(frozen) == asked._trial_id
    compat.live_trial(study, frozen).set_user_attr("note", "written through the handle")
    assert study.trials[0].user_attrs == {"note": "written through the handle"}


def test_heartbeat_interface_is_what_the_journal_storage_implements(tmp_path):
    from optuna.storages.journal import JournalFileBackend

    abstract = set(getattr(compat.BaseHeartbeat, "__abstractmethods__", set()))
    assert abstract <= {"record_heartbeat", "_get_stale_trial_ids", "get_heartbeat_interval", "get_heartbeat_stale_trial_callback"}
    storage = HeartbeatJournalStorage(JournalFileBackend(str(tmp_path / "j.log")), heartbeat_interval=1, grace_period=2)
    assert isinstance(storage, compat.BaseHeartbeat)
    study = optuna.create_study(storage=storage)
    study.ask()
    trial_id = compat.storage_trial_id(study.trials[0])
    storage.record_heartbeat(trial_id)
    assert storage._get_stale_trial_ids(study._study_id) == []


def test_rdb_heartbeat_age_reads_optunas_heartbeat_table(tmp_path):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path}/h.db", heartbeat_interval=1, grace_period=2)
    study = optuna.create_study(storage=storage)
    study.ask()
    running = study.get_trials(deepcopy=False)[0]
    assert compat.rdb_heartbeat_age(study, running) is None  # never beat
    storage.record_heartbeat(compat.storage_trial_id(running))
    age = compat.rdb_heartbeat_age(study, running)
    assert age is not None and 0 <= age < 5
    assert compat.rdb_heartbeat_age(optuna.create_study(), running) is None  # not an RDB storage
