"""Several workers on one study, killed workers, resume, early stopping: real processes and real
journal / SQLite storages on this machine."""

from __future__ import annotations

import glob
import os
import signal
import subprocess
import sys
import time

import optuna
import pytest
from optuna.trial import TrialState

import mtlsearch
from mtlsearch.cli import main
from mtlsearch.search import results
from mtlsearch.search._budget import finished_trials
from mtlsearch.search._study import open_study

from conftest import write_process_space

# every test trains a study of several trials; all but the early-stopping one start mtlsearch processes
pytestmark = pytest.mark.slow


def write_space(tmp_path, epochs: int = 1, n_train: int = 256, **run) -> str:
    return write_process_space(tmp_path, "w", epochs, n_train, **run)


def mtlsearch_process(*args: str, cwd) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "mtlsearch", *args], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def assert_settled(study: optuna.Study, n_trials: int) -> None:
    """The budget is met exactly, nothing is left running or queued, numbers are unique."""
    trials = study.get_trials(deepcopy=False)
    assert len(finished_trials(study)) == n_trials
    assert not [t.number for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    numbers = [t.number for t in trials]
    assert len(numbers) == len(set(numbers))


@pytest.mark.process
def test_four_local_workers_share_one_study_without_storage_errors(tmp_path):
    space = write_space(tmp_path)
    storage = f"journal:///{tmp_path}/w.log"
    proc = mtlsearch_process("run", space, "--storage", storage, "--workers", "4", "--n-trials", "40", "--quiet", cwd=tmp_path)
    out, err = proc.communicate(timeout=400)
    assert proc.returncode == 0, err
    assert "Error" not in err and "Traceback" not in err, err
    study = results.load("w", storage)
    assert_settled(study, 40)
    trained = [t for t in study.trials if t.state == TrialState.COMPLETE]
    surplus = [t for t in study.trials if "surplus" in t.user_attrs]
    assert len(trained) == 40 and len(study.trials) == 40 + len(surplus)
    assert len({t.user_attrs["run_id"] for t in trained}) == 40


def kill_after_a_checkpoint(tmp_path, name: str, grace: int) -> str:
    """Run a 2-trial study of 4-epoch trials, SIGKILL it once a trial has written an epoch
    checkpoint, and return the glob pattern of that study's checkpoint files."""
    space = write_space(tmp_path, epochs=4, n_train=1024)
    proc = mtlsearch_process("run", space, "--storage", f"journal:///{tmp_path}/{name}.log", "--n-trials", "2",
                             "--heartbeat-interval", "1", "--grace-period", str(grace), "--quiet", cwd=tmp_path)
    pattern = str(tmp_path / f"{name}_artifacts" / "checkpoints" / "*" / "epoch-*.pt")
    deadline = time.monotonic() + 120
    while not glob.glob(pattern):
        assert proc.poll() is None, proc.communicate()[1]
        assert time.monotonic() < deadline, "no epoch checkpoint appeared"
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    return pattern


@pytest.mark.process
def test_killed_worker_trial_is_retried_from_its_epoch_checkpoint(tmp_path):
    pattern = kill_after_a_checkpoint(tmp_path, "k", grace=3)
    storage = f"journal:///{tmp_path}/k.log"
    run_dir = os.path.dirname(glob.glob(pattern)[0])
    saved = max(int(os.path.basename(p)[6:10]) for p in glob.glob(os.path.join(run_dir, "epoch-*.pt")))

    study = results.load("w", storage)
    killed = [t for t in study.trials if t.state == TrialState.RUNNING]
    assert len(killed) == 1 and killed[0].user_attrs["run_id"] == os.path.basename(run_dir)
    time.sleep(3.5)  # the dead worker's heartbeat goes stale
    assert main(["resume", "w", "--storage", storage, "--quiet"]) == 0

    study = results.load("w", storage)
    assert_settled(study, 2)
    dead = study.trials[killed[0].number]
    assert dead.state == TrialState.FAIL
    retry = [t for t in study.trials if t.system_attrs.get("failed_trial") == dead.number]
    assert len(retry) == 1 and retry[0].state == TrialState.COMPLETE
    assert retry[0].params == dead.params and retry[0].user_attrs["run_id"] == dead.user_attrs["run_id"]
    assert retry[0].user_attrs["seed"] == dead.user_attrs["seed"]
    assert retry[0].user_attrs["resumed_from_epoch"] == saved
    assert not os.path.exists(run_dir), "checkpoints of a finished trial are removed"


@pytest.mark.process
def test_truncated_checkpoint_restarts_one_trial_with_a_warning(tmp_path):
    pattern = kill_after_a_checkpoint(tmp_path, "t", grace=2)
    storage = f"journal:///{tmp_path}/t.log"
    for path in glob.glob(pattern):  # every checkpoint damaged: the retry starts from scratch
        with open(path, "r+b") as f:
            f.truncate(os.path.getsize(path) // 3)
    time.sleep(2.5)
    resumed = mtlsearch_process("resume", "w", "--storage", storage, cwd=tmp_path)
    _, err = resumed.communicate(timeout=180)
    assert resumed.returncode == 0, err
    assert "is unreadable (" in err and "continuing from scratch" in err
    study = results.load("w", storage)
    assert_settled(study, 2)
    retry = [t for t in study.trials if "failed_trial" in t.system_attrs]
    assert len(retry) == 1 and retry[0].state == TrialState.COMPLETE and "resumed_from_epoch" not in retry[0].user_attrs


def test_early_stopping_prunes_on_the_validation_proxy_and_keeps_pruned_trials_off_the_front(tmp_path):
    space = write_space(tmp_path, epochs=3)
    problem, run = mtlsearch.load(space)
    run = run.replace(storage=f"sqlite:///{tmp_path}/e.db", n_trials=12, early_stopping="median", min_trials=2)
    study = mtlsearch.run_search(problem, run)
    pruned = [t for t in study.trials if t.state == TrialState.PRUNED]
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert pruned, "no trial was stopped early"
    for t in pruned:
        assert t.values is None
        assert t.user_attrs["pruned_reason"].startswith("early stopped after epoch ")
        assert len(t.user_attrs["epoch_delta_mtl"]) < 3
    for t in complete:
        assert len(t.user_attrs["epoch_delta_mtl"]) == 3
        assert t.user_attrs["epoch_delta_mtl"][-1] == pytest.approx(t.user_attrs["delta_mtl"])
    assert {t.number for t in results.front(study)} <= {t.number for t in complete}
    assert len(finished_trials(study)) == 12


@pytest.mark.process
def test_nan_loss_fails_one_trial_and_the_workers_go_on(tmp_path):
    space = write_space(tmp_path)
    problem, run = mtlsearch.load(space)
    storage = f"journal:///{tmp_path}/n.log"
    run = run.replace(storage=storage, n_trials=4)
    study = open_study(problem.space, run, problem.directions)
    study.enqueue_trial({"family": "hard_sharing", "weighting": "equal", "training.lr": 1.0e30})
    proc = mtlsearch_process("run", space, "--storage", storage, "--workers", "2", "--n-trials", "4", "--quiet", cwd=tmp_path)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    study = results.load("w", storage)
    failed = [t for t in study.trials if t.state == TrialState.FAIL]
    assert len(failed) == 1 and failed[0].user_attrs["fail_reason"].startswith("loss of task `")
    assert_settled(study, 4)


@pytest.mark.process
def test_study_wide_timeout_stops_every_worker_and_leaves_nothing_running(tmp_path):
    space = write_space(tmp_path)
    storage = f"journal:///{tmp_path}/to.log"
    start = time.monotonic()
    proc = mtlsearch_process("run", space, "--storage", storage, "--workers", "2", "--n-trials", "1000", "--timeout", "20",
                             "--quiet", cwd=tmp_path)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert time.monotonic() - start < 120
    study = results.load("w", storage)
    done = len(finished_trials(study))
    assert 0 < done < 1000
    assert not [t for t in study.trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
