"""Two `mtlsearch run` processes on one new study at the same instant (issue 17, item 4): neither
fails, neither takes the study for a foreign one, and they sample no configuration twice."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import optuna
import pytest
from conftest import write_process_space
from optuna.trial import TrialState

import mtlsearch
from mtlsearch.errors import StudyMismatchError
from mtlsearch.search import _study
from mtlsearch.search._records import study_record
from mtlsearch.search._storage import open_storage

# Imports first (torch, optuna: seconds), then wait for the barrier file, then `python -m mtlsearch`.
AT_BARRIER = (
    "import os, runpy, sys, time\n"
    "import mtlsearch.cli, mtlsearch.search._optuna_backend\n"
    "barrier = sys.argv.pop(1)\n"
    "open(barrier + '.' + str(os.getpid()), 'w').close()\n"
    "while not os.path.exists(barrier):\n"
    "    time.sleep(0.0005)\n"
    "sys.argv[0] = 'mtlsearch'\n"
    "runpy.run_module('mtlsearch', run_name='__main__')\n"
)


def run_together(tmp_path, storage: str, n: int = 2) -> list[subprocess.CompletedProcess]:
    space = write_process_space(tmp_path, "race")
    barrier = str(tmp_path / "go")
    cmd = [sys.executable, "-c", AT_BARRIER, barrier, "run", space, "--study", "s", "--storage", storage,
           "--n-trials", "4", "--quiet"]
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(n)]
    deadline = time.monotonic() + 60
    while len([p for p in tmp_path.iterdir() if p.name.startswith("go.")]) < n:  # every process is at the barrier
        assert time.monotonic() < deadline and all(p.poll() is None for p in procs), [p.communicate() for p in procs]
        time.sleep(0.01)
    (tmp_path / "go").touch()
    out = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=240)
        out.append(subprocess.CompletedProcess(p.args, p.returncode, stdout, stderr))
    return out


@pytest.mark.slow
@pytest.mark.process
@pytest.mark.parametrize("kind", ["sqlite", "journal"])
def test_two_runs_start_one_new_study_at_the_same_instant(tmp_path, kind):
    storage = f"sqlite:///{tmp_path}/race.db" if kind == "sqlite" else f"journal:///{tmp_path}/race.log"
    done = run_together(tmp_path, storage)
    for p in done:
        assert p.returncode == 0, p.stderr[-3000:]
        assert "not created by mtlsearch" not in p.stderr and "Traceback" not in p.stderr, p.stderr[-3000:]

    study = optuna.load_study(study_name="s", storage=open_storage(storage))
    record = study_record(study)
    assert record.fingerprint and record.space and record.objectives == ["delta_mtl", "params"]
    assert record.baselines is not None and record.run is not None
    trials = study.get_trials(deepcopy=False)
    assert not [t.number for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) == 4, [(t.number, t.state.name, t.user_attrs) for t in trials]
    workers = {t.user_attrs["worker"] for t in complete}
    params = [tuple(sorted(t.params.items())) for t in complete]
    # lr is continuous: a repeated configuration means the two processes drew the same stream
    assert len(set(params)) == len(params), f"duplicate configurations from {workers}: {params}"
    assert len({t.user_attrs["run_id"] for t in complete}) == 4
    assert all(t.values is not None and t.user_attrs.get("delta_mtl") is not None for t in complete)


def lost_the_race(tmp_path, tiny_space, kind: str):
    """The moment a second process sees: the study exists, its creator has not stored its record yet."""
    problem, run = mtlsearch.load(tiny_space)
    storage = f"sqlite:///{tmp_path}/r.db" if kind == "sqlite" else f"journal:///{tmp_path}/r.log"
    run = run.replace(storage=storage, study="r")
    study = optuna.create_study(study_name="r", storage=open_storage(storage), directions=problem.directions)
    return problem, run, study


@pytest.mark.parametrize("kind", ["sqlite", "journal"])
def test_a_process_that_finds_a_study_being_created_waits_for_its_record(tmp_path, tiny_space, kind):
    problem, run, created = lost_the_race(tmp_path, tiny_space, kind)
    winner = threading.Timer(0.5, _study._write_record, (created, problem.space, run))
    winner.start()
    study = _study.open_study(problem.space, run, problem.directions)
    winner.join()
    record = study_record(study)
    assert record.fingerprint == problem.space.fingerprint() and record.space == problem.space.to_raw()
    assert record.objectives == list(problem.space.objectives) and study.get_trials() == []


def test_a_study_whose_record_never_appears_is_refused_with_a_clear_message(tmp_path, tiny_space, monkeypatch):
    problem, run, created = lost_the_race(tmp_path, tiny_space, "sqlite")
    monkeypatch.setattr(_study, "RECORD_WAIT", 0.3)
    with pytest.raises(StudyMismatchError) as err:
        _study.open_study(problem.space, run, problem.directions)
    assert str(err.value) == (
        f"study `r` in sqlite:///{tmp_path}/r.db holds no mtlsearch record after 0.3 s: it was not created by "
        "mtlsearch, or the process creating it stopped before storing its space; choose another --study name"
    )
    assert created.user_attrs == {} and created.get_trials() == []  # nothing was written to it


@pytest.mark.parametrize("name", ["tpe", "nsga2", "random"])
def test_two_processes_samplers_with_one_seed_draw_apart_and_each_trial_number_alike(name):
    from mtlsearch.search._sampler import make_sampler

    def draws(samplers: list) -> list[float]:
        study = optuna.create_study(directions=["maximize", "minimize"])
        out = []
        for sampler in samplers:  # each asks the next trial, as two processes do
            study.sampler = sampler
            out.append(study.ask().suggest_float("lr", 1e-4, 1.0, log=True))
        return out

    two = draws([make_sampler(name, 0), make_sampler(name, 0)])
    assert two[0] != two[1]  # the old seeding drew the same value in both
    assert draws([make_sampler(name, 0)] * 2) == two  # which process asks does not matter


def test_opening_a_new_sqlite_file_that_another_process_is_creating_tries_again(tmp_path, monkeypatch):
    """Two processes opening one new SQLite file both create Optuna's tables; the later one's
    CREATE TABLE fails (seen: `table trial_user_attributes already exists`, `UNIQUE constraint
    failed: alembic_version.version_num`); a second try finds them made."""
    import sqlalchemy

    calls = []

    class Racing(optuna.storages.RDBStorage):
        def __init__(self, url, **kwargs):
            calls.append(url)
            super().__init__(url, **kwargs)  # the first time: the other process's tables
            if len(calls) == 1:
                raise sqlalchemy.exc.OperationalError("CREATE TABLE", {}, Exception("table studies already exists"))

    monkeypatch.setattr(optuna.storages, "RDBStorage", Racing)
    storage = open_storage(f"sqlite:///{tmp_path}/new.db")
    assert len(calls) == 2 and optuna.get_all_study_summaries(storage) == []
