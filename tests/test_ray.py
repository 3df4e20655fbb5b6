"""The Ray Tune backend on a real local Ray cluster (one head, started once for the session):
concurrent trials with per-epoch checkpoints, a driver killed mid-experiment and resumed, ASHA's
early-stopped trials recorded as PRUNED in the Optuna study, and resource requests the cluster
cannot meet refused before any trial starts.

Ray is part of the ``dev`` extra: these tests fail, not skip, when it is missing.
"""

from __future__ import annotations

import glob
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

import ray  # noqa: F401  (the dev extra installs it; a missing Ray fails here)
from mtlsearch.cli import main
from mtlsearch.errors import MTLSearchError
from mtlsearch.search import _ray_backend as ray_backend
from mtlsearch.search import results
from mtlsearch.search import _storage as storage_module
from mtlsearch.search._budget import finished_trials

from conftest import write_process_space

EPOCHS = 4


pytestmark = pytest.mark.process  # every test here talks to a Ray cluster that the session starts


def write_space(tmp_path) -> str:
    return write_process_space(tmp_path, "r", epochs=EPOCHS, n_train=512)


def saved_trial_checkpoint(experiment: Path) -> bool:
    """The experiment state Tune last saved names a trial checkpoint: a restore has a trial to
    continue from its checkpoint."""
    for path in glob.glob(str(experiment / "experiment_state-*.json")):
        try:
            if "checkpoint_0000" in Path(path).read_text():
                return True
        except OSError:
            pass
    return False


@pytest.mark.slow
@pytest.mark.process
def test_killed_ray_driver_is_resumed_and_stopped_trials_are_pruned(ray_address, tmp_path, capsys):
    space = write_space(tmp_path)
    storage = f"sqlite:///{tmp_path}/s.db"
    experiment = tmp_path / "art" / "ray" / "r"
    # Tune saves its experiment state at most every TUNE_GLOBAL_CHECKPOINT_S seconds (10 by
    # default, longer than this whole experiment)
    env = {**os.environ, "TUNE_GLOBAL_CHECKPOINT_S": "0.5"}
    driver = subprocess.Popen(
        [sys.executable, "-m", "mtlsearch", "run", space, "--backend", "ray", "--address", ray_address, "--storage", storage,
         "--artifacts", str(tmp_path / "art"), "--n-trials", "8", "--cpus-per-trial", "1", "--quiet"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    deadline = time.monotonic() + 90
    while not saved_trial_checkpoint(experiment):
        assert driver.poll() is None, driver.communicate()
        assert time.monotonic() < deadline, "no trial checkpoint within 90 s"
        time.sleep(0.05)
    driver.send_signal(signal.SIGKILL)
    driver.communicate()
    before = results.load("r", storage)
    assert len(finished_trials(before)) < 8, "the driver finished before it was killed: nothing to resume"

    code = main(["resume", "r", "--backend", "ray", "--address", ray_address, "--storage", storage])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "restoring the interrupted Ray Tune experiment" in captured.err

    study = results.load("r", storage)
    trials = study.get_trials(deepcopy=False)
    assert len(finished_trials(study)) == 8
    assert not [t.number for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    pruned = [t for t in trials if t.state == TrialState.PRUNED]
    assert complete and pruned, [(t.number, t.state.name) for t in trials]
    for t in complete:
        assert t.values is not None and len(t.values) == 2
        for key in ("seed", "run_id", "architecture", "params", "macs", "latency_ms", "val_metrics", "delta_mtl", "train_seconds"):
            assert key in t.user_attrs, (t.number, key)
        assert len(t.user_attrs["epoch_delta_mtl"]) == EPOCHS
        assert t.values == [t.user_attrs["delta_mtl"], t.user_attrs["params"]]
    for t in pruned:
        assert t.values is None
        assert t.user_attrs["pruned_reason"].startswith("stopped by ASHA after epoch")
        assert t.user_attrs["stopped_at_epoch"] < EPOCHS
        assert len(t.user_attrs["epoch_delta_mtl"]) == t.user_attrs["stopped_at_epoch"]
        assert "delta_mtl" not in t.user_attrs and "val_metrics" not in t.user_attrs
    counted = [t for t in finished_trials(study)]
    assert len({t.user_attrs["run_id"] for t in counted}) == 8  # no trial counted twice
    front = results.front(study)
    assert front and not {t.number for t in front} & {t.number for t in pruned}


@pytest.mark.process
def test_gpu_request_on_a_gpu_less_cluster_fails_before_any_trial(ray_address, tmp_path, capsys):
    space = write_space(tmp_path)
    storage = f"sqlite:///{tmp_path}/g.db"
    code = main(["run", space, "--backend", "ray", "--address", ray_address, "--storage", storage, "--gpus-per-trial", "0.5", "--quiet"])
    assert code == 2
    assert capsys.readouterr().err.strip() == (
        "mtlsearch run: error: --gpus-per-trial: 0.5 GPU per trial asked, but the Ray cluster has no GPU (resources: CPU 2.0); "
        "use --gpus-per-trial 0 or a cluster with GPUs"
    )
    summaries = optuna.get_all_study_summaries(storage_module.open_storage(storage), include_best_trial=False)
    assert sum(s.n_trials for s in summaries) == 0


def test_resource_and_flag_errors_name_the_flag(tmp_path, capsys, monkeypatch):
    with pytest.raises(MTLSearchError) as err:
        ray_backend.check_resources({"CPU": 2.0}, {"CPU": 2.0}, 4, 0)
    assert str(err.value) == ("--cpus-per-trial: 4 CPU per trial asked, but no node of the Ray cluster has that many "
                              "(at most 2 on one node; resources: CPU 2.0); use --cpus-per-trial 2 or less")
    space = write_space(tmp_path)
    assert main(["run", space, "--storage", f"sqlite:///{tmp_path}/f.db", "--address", "auto"]) == 2
    assert capsys.readouterr().err.strip() == "mtlsearch run: error: --address: only used with --backend ray"
    monkeypatch.setattr(ray_backend, "ray", None)
    with pytest.raises(MTLSearchError, match=r"the Ray backend needs Ray Tune: pip install 'mtlsearch\[ray\]' \(or 'ray\[tune\]'\)"):
        ray_backend.run_ray(None, None)


@pytest.mark.slow
@pytest.mark.process
def test_seeds_per_trial_on_the_ray_backend(ray_address, tmp_path):
    """The per-trial feature of search/trial.py, unchanged on Ray: each Tune trial trains its
    candidate on 2 seeds and the study stores the mean and every seed's score."""
    from test_seeds_per_trial import check_seed_records

    import mtlsearch

    space = write_process_space(tmp_path, "rs", epochs=1, n_train=128, seeds_per_trial=2, n_trials=2, sampler="random")
    problem, run = mtlsearch.load(space)
    run = run.replace(storage=f"sqlite:///{tmp_path}/rs.db", artifacts=str(tmp_path / "art"))
    study = ray_backend.run_ray(problem, run.replace(confirm={"top": 1, "seeds": 1}), address=ray_address)
    confirm = [t for t in study.trials if "confirm_of" in t.user_attrs]
    assert check_seed_records(study, problem, 2) == 3  # two Tune trials and the confirmation trial
    (first,) = study.user_attrs["mtlsearch.confirm"]["chosen"]
    assert [t.user_attrs["confirm_of"] for t in confirm] == [first]
    assert confirm[0].user_attrs["candidate"] == study.trials[first].user_attrs["candidate"]
