"""Stopping a run by signal loses nothing: SIGTERM is handled like Ctrl-C (the running trial is
queued again, worker processes stop, the resume hint is printed)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from conftest import write_process_space
from optuna.trial import TrialState

from mtlsearch.search._storage import open_storage

pytestmark = [pytest.mark.slow, pytest.mark.process]


def descendants(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        try:
            children = [int(c) for c in Path(f"/proc/{p}/task/{p}/children").read_text().split()]
        except OSError:
            continue
        out += children
        todo += children
    return out


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def start_run(tmp_path, storage: str, *extra: str) -> subprocess.Popen:
    space = write_process_space(tmp_path, "sig", epochs=3, n_train=512)
    return subprocess.Popen(
        [sys.executable, "-m", "mtlsearch", "run", space, "--storage", storage, "--n-trials", "50", "--json", *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )


def wait_for_epoch(proc: subprocess.Popen) -> None:
    """Until a trial ends its first epoch of several: the signal then lands mid-trial, which is
    what these tests are about (a signal between two trials is recovered by heartbeats)."""
    for line in proc.stdout:
        if '"event": "epoch"' in line:
            event = json.loads(line)
            if event.get("epoch") == 1 and event.get("epochs", 0) > 1:
                return
    pytest.fail(f"the run ended before an epoch (exit {proc.wait()}): {proc.stderr.read()[-3000:]}")


def settled(storage: str) -> list[optuna.trial.FrozenTrial]:
    """No trial is left RUNNING; the interrupted ones wait, queued again (`retry_of`)."""
    study = optuna.load_study(study_name="sig", storage=open_storage(storage))
    assert not [t.number for t in study.trials if t.state == TrialState.RUNNING]
    queued = [t for t in study.trials if t.state == TrialState.WAITING]
    assert queued and all("retry_of" in t.user_attrs and "run_id" in t.user_attrs for t in queued)
    return queued


def test_sigterm_stops_a_run_and_its_workers(tmp_path):
    storage = f"journal:///{tmp_path}/sig.log"
    proc = start_run(tmp_path, storage, "--workers", "2")
    wait_for_epoch(proc)
    children = descendants(proc.pid)
    assert len(children) >= 2
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-3000:]
    assert f"mtlsearch run: interrupted; continue with `mtlsearch resume sig --storage {storage}`" in err
    deadline = time.monotonic() + 10
    while any(alive(c) for c in children) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [c for c in children if alive(c)], "worker processes outlived the run"
    settled(storage)
