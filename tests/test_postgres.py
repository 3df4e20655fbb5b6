"""Fault test on a real PostgreSQL server: two ``mtlsearch worker`` processes share a study, one is
killed (SIGKILL) in the middle of a trial, and the other one finishes the study, failing the dead
trial once its heartbeat is stale and running its retry from the dead trial's epoch checkpoint.

The server is a throw-away one that this module starts (``initdb`` + ``pg_ctl``, loopback only, a
free port) and stops afterwards. The module is skipped only when the PostgreSQL server programs
are not installed; any other problem (no driver, a server that does not start) is a failure.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState
from pgserver import postgres_server

pytestmark = [pytest.mark.slow, pytest.mark.process]  # a PostgreSQL server and worker processes

STUDY = "pgfault"
TARGET = 5  # study-wide finished trials: 1 from `mtlsearch run`, the rest from the two workers
GRACE = 3  # seconds without heartbeat before a trial is stale
SURVIVOR_TIMEOUT = 180


@pytest.fixture(scope="module")
def postgres_url():
    """A throw-away PostgreSQL server on 127.0.0.1 (trust auth), stopped afterwards."""
    with postgres_server() as url:
        yield url


# -- the test -----------------------------------------------------------------------------------

SPACE = {
    "name": STUDY,
    # 512 training samples in batches of 32: an epoch takes a noticeable fraction of a second, so
    # a worker killed right after its first epoch (of 3) is still inside that trial
    "data": {"benchmark": "multidigits", "seed": 0, "n_train": 512, "n_val": 64, "n_test": 64},
    "backbone": {"name": "mlp", "width": 16, "depth": 3},
    "search_space": {
        "families": ["hard_sharing", "tree"],
        "tree": {"max_groups": 2},
        "weightings": ["equal"],
        "training": {"epochs": 3, "batch_size": 32, "optimizer": "adam", "lr": {"low": 1.0e-3, "high": 1.0e-2, "log": True}},
    },
    "objectives": ["delta_mtl", "params"],
    "run": {"study": STUDY, "n_trials": 1, "seed": 0, "device": "cpu", "sampler": "random"},
}


def _mtlsearch(*args: str) -> list[str]:
    return [sys.executable, "-m", "mtlsearch", *args]


def _read_events(proc: subprocess.Popen, index: int, events: queue.Queue) -> None:
    """Put each JSON progress line of worker ``index`` on ``events``; ``None`` at end of output."""
    for line in proc.stdout:
        try:
            events.put((index, json.loads(line)))
        except json.JSONDecodeError:
            pass  # the final result line is JSON too; anything else is not ours to judge here
    events.put((index, None))


def test_worker_killed_mid_trial_on_postgres(postgres_url, tmp_path):
    from mtlsearch.search._storage import open_storage
    from mtlsearch.search._budget import finished_trials
    from mtlsearch.search._records import StudyRecord, write_study

    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump(SPACE, sort_keys=False))
    artifacts = tmp_path / "artifacts"
    checkpoints = artifacts / "checkpoints"
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}

    # 1. create the study on the server, train the baselines, finish one trial
    created = subprocess.run(
        _mtlsearch("run", str(space), "--storage", postgres_url, "--n-trials", "1", "--heartbeat-interval", "1",
                   "--grace-period", str(GRACE), "--artifacts", str(artifacts), "--device", "cpu", "--quiet"),
        capture_output=True, text=True, timeout=180, env=env,
    )
    assert created.returncode == 0, created.stderr[-3000:]

    # 2. raise the study-wide budget that joining workers read
    study = optuna.load_study(study_name=STUDY, storage=open_storage(postgres_url))
    settings = StudyRecord.from_attrs(study.user_attrs).run
    assert settings["heartbeat_interval"] == 1 and settings["grace_period"] == GRACE
    write_study(study, run={**settings, "n_trials": TARGET}, n_trials=TARGET)
    assert len(finished_trials(study)) == 1

    # 3. two workers; kill the first one that reports the end of a trial's first epoch (its
    # checkpoint is written before the event, and two more epochs remain in that trial)
    events: queue.Queue = queue.Queue()
    procs: list[subprocess.Popen] = []
    logs = [open(tmp_path / f"worker{i}.err", "w+") for i in (1, 2)]
    try:
        for i in (1, 2):
            proc = subprocess.Popen(
                _mtlsearch("worker", STUDY, "--storage", postgres_url, "--device", "cpu", "--threads", "1", "--json"),
                stdout=subprocess.PIPE, stderr=logs[i - 1], text=True, env=env,
            )
            procs.append(proc)
            threading.Thread(target=_read_events, args=(proc, i - 1, events), daemon=True).start()

        killed = killed_trial = None
        deadline = time.monotonic() + 120
        while killed is None:
            try:
                index, event = events.get(timeout=max(deadline - time.monotonic(), 0.01))
            except queue.Empty:
                pytest.fail("no worker finished an epoch within 120 s")
            if event is None:
                pytest.fail(f"worker {index + 1} ended (exit {procs[index].wait()}) before any trial finished an epoch: "
                            + Path(logs[index].name).read_text()[-3000:])
            if event.get("event") == "epoch" and event.get("epoch") == 1 and event.get("epochs", 0) > 1:
                os.kill(procs[index].pid, signal.SIGKILL)
                killed, killed_trial = index, event["trial"]
        assert procs[killed].wait(timeout=30) == -signal.SIGKILL

        # the dead trial is left RUNNING, with its epoch checkpoint on disk
        dead = next(t for t in study.get_trials(deepcopy=False) if t.number == killed_trial)
        assert dead.state == TrialState.RUNNING, f"trial {killed_trial} ended before the kill landed ({dead.state.name})"
        run_id = dead.user_attrs["run_id"]
        had_checkpoint = any((checkpoints / run_id).glob("epoch-*.pt"))
        assert had_checkpoint, f"no epoch checkpoint under {checkpoints / run_id}"

        # 4. the survivor fails the stale trial, runs its retry and the rest of the budget
        survivor = procs[1 - killed]
        try:
            code = survivor.wait(timeout=SURVIVOR_TIMEOUT)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the surviving worker did not finish within {SURVIVOR_TIMEOUT} s")
        assert code == 0, Path(logs[1 - killed].name).read_text()[-3000:]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        for f in logs:
            f.close()

    # 5. the study is complete and consistent
    study = optuna.load_study(study_name=STUDY, storage=open_storage(postgres_url))
    trials = study.get_trials(deepcopy=False)
    by_number = {t.number: t for t in trials}
    assert len(by_number) == len(trials), "trial numbers are not unique"
    assert len(finished_trials(study)) == TARGET
    assert not [t.number for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]

    retries = {t.system_attrs["failed_trial"]: t for t in trials if "failed_trial" in t.system_attrs}
    failed = [t for t in trials if t.state == TrialState.FAIL]
    assert failed, "the killed worker's trial was not failed"
    assert any(t.number in retries and retries[t.number].state == TrialState.COMPLETE for t in failed)

    assert by_number[killed_trial].state == TrialState.FAIL
    retry = retries.get(killed_trial)
    assert retry is not None, f"trial {killed_trial} of the killed worker was not retried"
    assert retry.number > killed_trial and retry.state == TrialState.COMPLETE
    assert retry.params == by_number[killed_trial].params
    assert retry.user_attrs["run_id"] == run_id
    if had_checkpoint:
        assert retry.user_attrs.get("resumed_from_epoch", 0) >= 1
    assert not any(checkpoints.glob("*/epoch-*.pt")), "finished trials left epoch checkpoints behind"
