"""Stopping a run by signal loses nothing: SIGTERM is handled like Ctrl-C (the running trial is
queued again, worker processes stop, the resume hint is printed)."""

from __future__ import annotations

import json
import os
import re
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
    # one hint, from the run (not one per worker process), that keeps the workers
    assert f"mtlsearch run: interrupted; continue with `mtlsearch resume sig --storage {storage} --workers 2`" in err
    assert err.count("interrupted") == 1, err[-3000:]
    deadline = time.monotonic() + 10
    while any(alive(c) for c in children) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [c for c in children if alive(c)], "worker processes outlived the run"
    settled(storage)


# -- issue 17, item 4: a signal mid-trial, two signals 1 ms apart, a resume that waits ----------

QUIET_ENV = {**os.environ, "PYTHONWARNINGS": "ignore"}


def snapshot(storage: str) -> dict[int, tuple]:
    """Every stored trial as it is: state, params, values, user attributes."""
    study = optuna.load_study(study_name="sig", storage=open_storage(storage))
    return {t.number: (t.state, t.params, t.values, t.user_attrs) for t in study.trials}


def study_attrs(storage: str) -> dict:
    return optuna.load_study(study_name="sig", storage=open_storage(storage)).user_attrs


def checkpoint_epochs(tmp_path, storage: str, run_id: str) -> list[int]:
    stem = Path(storage.split(":///", 1)[1]).stem
    folder = tmp_path / f"{stem}_artifacts" / "checkpoints" / run_id
    return sorted(int(p.name[6:10]) for p in folder.glob("epoch-*.pt"))


def resume(storage: str, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mtlsearch", "resume", "sig", "--storage", storage, "--n-trials", "1", *extra],
        capture_output=True, text=True, env=QUIET_ENV, timeout=180,
    )


def interrupt_and_resume(tmp_path, storage: str, signals: list[signal.Signals]) -> None:
    """Stop a run mid-trial with ``signals`` (1 ms apart), then resume it: the interrupted trial
    is queued again at once, with its checkpoints, and the retry continues from them; nothing
    else stored changes."""
    proc = start_run(tmp_path, storage, "--heartbeat-interval", "1", "--grace-period", "3")
    wait_for_epoch(proc)
    for i, sig in enumerate(signals):
        if i:
            time.sleep(0.001)
        proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-3000:]
    assert f"mtlsearch run: interrupted; continue with `mtlsearch resume sig --storage {storage}`" in err
    assert not [w for w in ("Traceback", "database is locked", "did not possess lock") if w in err], err[-3000:]

    [queued] = settled(storage)
    before, record = snapshot(storage), study_attrs(storage)
    dead = before[queued.user_attrs["retry_of"]]
    assert dead[0] == TrialState.FAIL and dead[1] == queued.system_attrs["fixed_params"]
    assert dead[3]["fail_reason"].startswith("interrupted (Ctrl-C or SIGTERM); queued again")
    assert "fail_reason" not in queued.user_attrs
    assert queued.user_attrs["run_id"] == dead[3]["run_id"] and queued.user_attrs["seed"] == dead[3]["seed"]
    epochs = checkpoint_epochs(tmp_path, storage, queued.user_attrs["run_id"])
    assert epochs and epochs[-1] >= 1, "the finished epochs' checkpoints are gone"

    start = time.monotonic()
    done = resume(storage)
    assert done.returncode == 0, done.stderr[-3000:]
    assert time.monotonic() - start < 60 and "waiting up to" not in done.stderr, done.stderr[-3000:]
    assert "1 fail (1 interrupted or left by a stopped worker, and retried)" in done.stdout, done.stdout[-3000:]
    after = snapshot(storage)
    retry = after[queued.number]
    assert retry[0] == TrialState.COMPLETE and retry[1] == dead[1]
    assert retry[3]["resumed_from_epoch"] == epochs[-1] and retry[3]["run_id"] == queued.user_attrs["run_id"]
    others = [n for n in before if n != queued.number]
    assert {n: after[n] for n in others} == {n: before[n] for n in others} and len(after) == len(before)
    kept = ["mtlsearch." + k for k in ("version", "space", "fingerprint", "objectives", "seed", "sampler", "baselines")]
    assert {k: study_attrs(storage).get(k) for k in kept} == {k: record.get(k) for k in kept}
    assert checkpoint_epochs(tmp_path, storage, queued.user_attrs["run_id"]) == []  # cleared once the retry finished


def test_sigterm_mid_trial_queues_it_again_and_resume_continues_it_without_waiting(tmp_path):
    interrupt_and_resume(tmp_path, f"sqlite:///{tmp_path}/sig.db", [signal.SIGTERM])


@pytest.mark.parametrize("kind", ["sqlite", "journal"])
def test_two_sigints_1_ms_apart_lose_nothing(tmp_path, kind):
    storage = f"sqlite:///{tmp_path}/sig.db" if kind == "sqlite" else f"journal:///{tmp_path}/sig.log"
    interrupt_and_resume(tmp_path, storage, [signal.SIGINT, signal.SIGINT])


def test_resume_says_what_it_waits_for_when_a_killed_trial_is_still_running(tmp_path):
    """A SIGKILL leaves the trial RUNNING (no handler runs); resume waits for it to go stale and
    says so, then what happened."""
    storage = f"sqlite:///{tmp_path}/sig.db"
    proc = start_run(tmp_path, storage, "--heartbeat-interval", "1", "--grace-period", "20")  # > a loaded resume's start
    wait_for_epoch(proc)
    proc.kill()
    proc.wait()
    before = snapshot(storage)
    [(number, (state, params, _, attrs))] = [(n, t) for n, t in before.items() if t[0] == TrialState.RUNNING]
    epochs = checkpoint_epochs(tmp_path, storage, attrs["run_id"])

    done = resume(storage)
    assert done.returncode == 0, done.stderr[-3000:]
    waiting = re.search(
        rf"waiting up to (\d+) s for trial #{number} \(RUNNING, last heartbeat (\d+) s ago\) to go stale: "
        r"its process may still be alive \(grace_period 20 s\)",
        done.stderr,
    )
    assert waiting and int(waiting[1]) < 20 and 19 <= int(waiting[1]) + int(waiting[2]) <= 21, done.stderr[-3000:]
    assert f"trial(s) #{number} of a stopped worker failed (no heartbeat); queued again" in done.stderr
    assert re.search(rf"trial #{number} went stale and was queued again after \d+ s of waiting", done.stderr)
    after = snapshot(storage)
    assert after[number][0] == TrialState.FAIL and after[number][1:] == (params, None, attrs)
    [retry] = [t for n, t in after.items() if n not in before]
    assert retry[0] == TrialState.COMPLETE and retry[1] == params and retry[3]["run_id"] == attrs["run_id"]
    assert retry[3]["resumed_from_epoch"] == epochs[-1]
    assert {n: t for n, t in after.items() if n in before and n != number} == {
        n: t for n, t in before.items() if n != number
    }
