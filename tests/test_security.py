"""Values read back from a study are untrusted, and storage passwords are secrets.

* A trial's stored ``run_id`` names its checkpoint folder. A crafted one (an absolute path, a
  ``..`` path, a link planted under the checkpoint root) must delete nothing, and a finished
  trial's folder loses only mtlsearch's own checkpoint files.
* A storage password must not reach the terminal, an error, the Ctrl-C hint, an export, or the
  command line of worker processes; tested against a real password-protected PostgreSQL server.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml
from conftest import write_process_space
from optuna.trial import TrialState
from pgserver import postgres_server

from mtlsearch.checkpoints import CheckpointStore, check_run_id, new_run_id, run_id_from
from mtlsearch.cli import main
from mtlsearch.search._budget import finished_trials
from mtlsearch.storage_url import driver_hint, redact, scrub, with_installed_driver

PASSWORD = "Hunter2-s3cret"


def _snapshot(study: optuna.Study) -> dict[int, tuple]:
    """What a finished trial stores: a test compares it before and after an attack."""
    return {t.number: (t.state, t.values, t.params, t.user_attrs) for t in study.get_trials() if t.state.is_finished()}


# -- run ids -------------------------------------------------------------------------------------


def test_run_id_format_and_refusal():
    assert check_run_id(new_run_id()) and len(new_run_id()) == 16
    for bad in ("/etc", "../../x", "ABCDEF0123456789", "0123456789abcde", 123, None, "0123456789abcdef/.."):
        assert check_run_id(bad) is None
    warnings: list[str] = []
    fresh = run_id_from({"run_id": "/home"}, warnings.append)
    assert check_run_id(fresh)
    assert warnings == [f"stored run_id '/home' is not a run id (16 hex digits); refused: the trial starts from scratch as run {fresh}"]
    assert run_id_from({"run_id": "0123456789abcdef"}, warnings.append) == "0123456789abcdef"
    long = run_id_from({"run_id": "x" * 10_000}, warnings.append)
    assert check_run_id(long) and len(warnings[-1]) < 200  # the stored value is shown cut


def test_checkpoint_store_stays_in_its_root_and_clears_only_its_files(tmp_path):
    root = tmp_path / "checkpoints"
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "data.txt").write_text("keep me")
    root.mkdir()
    (root / "0123456789abcdef").symlink_to(victim, target_is_directory=True)
    with pytest.raises(ValueError, match=r"resolves outside .*; refused"):
        CheckpointStore(root / "0123456789abcdef", root=root)
    with pytest.raises(ValueError, match="resolves outside"):
        CheckpointStore(root / ".." / "victim", root=root)

    store = CheckpointStore(root / "fedcba9876543210", root=root)
    store.save({"epoch": 1, "x": 1})
    (store.directory / "notes.txt").write_text("not a checkpoint")
    store.clear()
    assert sorted(p.name for p in store.directory.iterdir()) == ["notes.txt"]
    (store.directory / "notes.txt").unlink()
    store.save({"epoch": 2})
    store.clear()
    assert not store.directory.exists()
    assert (victim / "data.txt").read_text() == "keep me"


@pytest.mark.slow
@pytest.mark.slow
def test_crafted_run_ids_in_a_stored_study_delete_nothing(tmp_path, capsys):
    space = write_process_space(tmp_path, "rid", epochs=2, n_train=128)
    storage = f"sqlite:///{tmp_path}/rid.db"
    artifacts = tmp_path / "artifacts"
    checkpoints = artifacts / "checkpoints"
    common = ["--storage", storage, "--artifacts", str(artifacts), "--sampler", "random"]
    assert main(["run", space, "--n-trials", "1", "--quiet", *common]) == 0
    study = optuna.load_study(study_name="rid", storage=storage)
    before = _snapshot(study)

    # what an attacker with write access to the storage plants: folders that must survive
    victims = {name: tmp_path / name for name in ("absolute", "dotdot", "linked")}
    for path in victims.values():
        path.mkdir()
        (path / "precious.txt").write_text(path.name)
    planted = "00000000deadbeef"  # a well-formed id whose folder is a link out of the root
    checkpoints.mkdir(parents=True, exist_ok=True)
    (checkpoints / planted).symlink_to(victims["linked"], target_is_directory=True)
    crafted = [str(victims["absolute"]), "../../dotdot", planted, {"not": "a string"}]
    for run_id in crafted:
        study.enqueue_trial({}, user_attrs={"run_id": run_id}, skip_if_exists=False)

    assert main(["resume", "rid", "--n-trials", "5", *common[:2]]) == 0
    err = capsys.readouterr().err
    for path in victims.values():
        assert (path / "precious.txt").read_text() == path.name
    assert (checkpoints / planted).is_symlink()
    assert re.search(r"warning: trial #\d+: stored run_id '/\S+ is not a run id \(16 hex digits\); refused: the trial "
                     r"starts from scratch as run [0-9a-f]{16}", err)
    assert "stored run_id '../../dotdot' is not a run id" in err
    assert "stored run_id {'not': 'a string'} is not a run id" in err
    assert f"resolves outside '{checkpoints}'; refused; the trial runs without epoch checkpoints" in err

    study = optuna.load_study(study_name="rid", storage=storage)
    trials = study.get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 5
    assert {k: v for k, v in _snapshot(study).items() if k in before} == before
    assert all(check_run_id(t.user_attrs["run_id"]) for t in trials)
    assert [t.user_attrs["run_id"] for t in trials[1:]].count(planted) == 1  # kept, never followed


@pytest.mark.slow
def test_export_refuses_a_crafted_weights_artifact(tmp_path, capsys):
    space = write_process_space(tmp_path, "art", n_train=128)
    storage = f"sqlite:///{tmp_path}/art.db"
    assert main(["run", space, "--storage", storage, "--n-trials", "1", "--quiet"]) == 0
    study = optuna.load_study(study_name="art", storage=storage)
    trial = study.trials[0]
    secret = tmp_path / "secret.txt"
    secret.write_text("not yours")
    study.add_trial(optuna.trial.create_trial(  # a copy of trial 0 whose artifact id points out of the store
        params=trial.params, distributions=trial.distributions, values=trial.values,
        user_attrs={**trial.user_attrs, "weights_artifact": f"../../{secret.name}"}))
    out = tmp_path / "w.pt"
    assert main(["export", "art", "--storage", storage, "--trial", "1", "-o", str(tmp_path / "b.yaml"), "--weights", str(out)]) == 2
    assert "error: trial #1: stored weights_artifact '../../secret.txt' is not an artifact id (a UUID); refused" in capsys.readouterr().err
    assert not out.exists() and secret.read_text() == "not yours"


# -- storage URLs --------------------------------------------------------------------------------


def test_redact_and_scrub():
    assert redact("postgresql://u:p%40ss@h:5432/db") == "postgresql://u:***@h:5432/db"
    assert redact("postgresql+psycopg2://u@h/db") == "postgresql+psycopg2://u@h/db"
    assert redact("mysql://u:pw@h/db?charset=utf8&password=x2") == "mysql://u:***@h/db?charset=utf8&password=***"
    assert redact("sqlite:///a:b@c.db") == "sqlite:///a:b@c.db"  # no user info in a file path
    assert redact("journal:///x.log") == "journal:///x.log"
    url = "postgresql://u:p%40ss@h/db"
    assert scrub("failed for postgresql://u:p%40ss@h/db with p@ss and p%40ss", url) == "failed for postgresql://u:***@h/db with *** and ***"
    assert with_installed_driver("postgresql://u@h/db") == "postgresql+psycopg2://u@h/db"  # psycopg 3 is not installed here
    assert with_installed_driver("postgresql+psycopg://u@h/db") == "postgresql+psycopg://u@h/db"
    assert driver_hint("postgresql+psycopg2://h/db") == "install its driver: `pip install 'psycopg2-binary'`"
    assert driver_hint("mysql://h/db") == "install its driver: `pip install 'mysqlclient'`"
    assert driver_hint("mysql+pymysql://h/db") == "install its driver: `pip install 'pymysql'`"
    assert driver_hint("postgresql+psycopg://h/db") == ("install its driver: `pip install 'psycopg[binary]'` (or use "
                                                        "postgresql+psycopg2:// with `pip install psycopg2-binary`)")


def test_missing_driver_names_the_right_one(capsys):
    assert main(["report", "x", "--storage", "mysql://u:Topsecret9@127.0.0.1:1/db"]) == 2
    err = capsys.readouterr().err
    assert "cannot open `mysql://u:***@127.0.0.1:1/db`" in err and "pip install 'mysqlclient'" in err
    assert "Topsecret9" not in err and "psycopg" not in err


@pytest.mark.slow
def test_storage_from_the_environment(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("MTLSEARCH_STORAGE", f"sqlite:///{tmp_path}/env.db")
    space = write_process_space(tmp_path, "envstudy", n_train=128)
    assert main(["run", space, "--n-trials", "1", "--quiet"]) == 0
    assert (tmp_path / "env.db").is_file()
    assert main(["report", "envstudy"]) == 0
    assert main(["report", "nothere"]) == 2
    assert "error: study: no study `nothere` in sqlite:///" in capsys.readouterr().err
    monkeypatch.chdir(tmp_path)
    assert main(["worker", "nothere"]) == 2  # a clear error, not a KeyError
    assert "error: study: no study `nothere`" in capsys.readouterr().err


@pytest.fixture(scope="module")
def secret_postgres():
    """A PostgreSQL server that asks for a password, reached with the plain ``postgresql://``
    form that ``--help`` shows (SQLAlchemy's default driver for it is not installed)."""
    with postgres_server(password=PASSWORD, scheme="postgresql") as url:
        yield url


def _cmdlines(pid: int) -> list[str]:
    """The command lines of ``pid`` and all its descendants."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        try:
            out.append(Path(f"/proc/{p}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"))
            children = Path(f"/proc/{p}/task/{p}/children").read_text().split()
        except OSError:
            continue
        todo += [int(c) for c in children]
    return out


def _mtlsearch(*args: str, env: dict, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "mtlsearch", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env, **kw)


@pytest.mark.slow
@pytest.mark.process
def test_a_storage_password_is_never_shown_written_or_in_argv(secret_postgres, tmp_path):
    assert PASSWORD in secret_postgres and secret_postgres.startswith("postgresql://")
    shown = secret_postgres.replace(PASSWORD, "***")
    space = write_process_space(tmp_path, "secret", epochs=2, n_train=256)
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "MTLSEARCH_STORAGE": secret_postgres}

    # run with 2 worker processes; the URL comes from the environment, and no process started
    # for the run has the password on its command line
    proc = _mtlsearch("run", space, "--n-trials", "3", "--workers", "2", "--artifacts", str(tmp_path / "art"), env=env)
    seen: list[str] = []
    while proc.poll() is None:
        seen += _cmdlines(proc.pid)
        time.sleep(0.2)
    out, err = proc.communicate()
    assert proc.returncode == 0, err[-3000:]
    workers = [c for c in seen if " worker secret" in c]
    assert workers, "no worker process was seen"
    assert not [c for c in seen if PASSWORD in c]
    assert f"study `secret` ({shown}): 0 finished trials" in err
    assert re.search(rf"\[worker 1\] worker 1 joined study `secret` \({re.escape(shown)}\)", err)
    assert PASSWORD not in out + err

    study = optuna.load_study(study_name="secret", storage=with_installed_driver(secret_postgres))
    before = _snapshot(study)
    assert len(finished_trials(study)) == 3  # a surplus trial of the second worker may also end, uncounted

    # report and export with the URL on the command line: nothing printed or written holds it
    report = subprocess.run([sys.executable, "-m", "mtlsearch", "report", "secret", "--storage", secret_postgres],
                            capture_output=True, text=True, env=env, timeout=120)
    assert report.returncode == 0 and PASSWORD not in report.stdout + report.stderr
    best = tmp_path / "best.yaml"
    export = subprocess.run([sys.executable, "-m", "mtlsearch", "export", "secret", "-o", str(best)],
                            capture_output=True, text=True, env=env, timeout=120)
    assert export.returncode == 0, export.stderr
    assert PASSWORD not in best.read_text() + export.stdout + export.stderr
    assert yaml.safe_load(best.read_text())["provenance"]["storage"] == shown

    # a wrong password: one clear line that holds neither password
    wrong = secret_postgres.replace(PASSWORD, "Wrong-guess77")
    bad = subprocess.run([sys.executable, "-m", "mtlsearch", "report", "secret", "--storage", wrong],
                         capture_output=True, text=True, env=env, timeout=120)
    assert bad.returncode == 2
    assert bad.stderr.startswith(f"mtlsearch report: error: run.storage: cannot open `{shown}`: OperationalError:")
    assert "password authentication failed" in bad.stderr
    assert "Wrong-guess77" not in bad.stderr and PASSWORD not in bad.stderr and len(bad.stderr.splitlines()) == 1

    # Ctrl-C in a resumed run: the hint shows the URL masked
    proc = _mtlsearch("resume", "secret", "--storage", secret_postgres, "--n-trials", "6", "--json", env=env)
    for line in proc.stdout:
        if '"event": "epoch"' in line:
            proc.send_signal(signal.SIGINT)
            break
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-3000:]
    assert f"interrupted; continue with `mtlsearch resume secret --storage {shown}` (with the password in place of ***" in err
    assert PASSWORD not in out + err

    study = optuna.load_study(study_name="secret", storage=with_installed_driver(secret_postgres))
    assert {k: v for k, v in _snapshot(study).items() if k in before} == before


def test_an_unwritable_artifacts_folder_is_refused_before_anything_trains(tmp_path, capsys):
    space = write_process_space(tmp_path, "unw", n_train=128)
    blocker = tmp_path / "file"
    blocker.write_text("a file where the artifacts folder should go")
    storage = f"sqlite:///{tmp_path}/u.db"
    assert main(["run", space, "--storage", storage, "--artifacts", str(blocker / "art"), "--n-trials", "1"]) == 2
    err = capsys.readouterr().err
    assert f"error: run.artifacts: cannot write to `{blocker / 'art'}`: Not a directory" in err
    assert "baseline" not in err  # nothing trained
    assert optuna.get_all_study_summaries(storage) == []  # and no study left behind


ZERO_FACTORY = """
import torch
from mtlsearch.data import MTLData, TensorMTLDataset
from mtlsearch.tasks import TaskSpec


def make(seed=0):
    g = torch.Generator().manual_seed(seed)
    def split(n, label):
        x = torch.randn(n, 8, generator=g)
        # `flip` is 0 in the train split and 1 elsewhere: its single-task baseline scores 0 on val
        return TensorMTLDataset(x, {"sign": (x[:, 0] > 0).long(), "flip": torch.full((n,), label)})
    tasks = [TaskSpec("sign", "classification", num_classes=2, metrics=("accuracy",)),
             TaskSpec("flip", "classification", num_classes=2, metrics=("accuracy",))]
    return MTLData(split(128, 0), split(32, 1), split(32, 1), tasks)
"""


@pytest.mark.slow
def test_a_baseline_of_zero_stops_the_study_before_any_trial(tmp_path, capsys, monkeypatch):
    (tmp_path / "zero_data.py").write_text(ZERO_FACTORY)
    monkeypatch.syspath_prepend(str(tmp_path))
    space = {
        "name": "zero",
        "data": {"factory": "zero_data:make", "seed": 0},
        "backbone": {"name": "mlp", "width": 8, "depth": 2},
        "search_space": {"families": ["hard_sharing"], "weightings": ["equal"],
                         "training": {"epochs": 2, "batch_size": 32, "optimizer": "adam", "lr": 1.0e-2}},
        "objectives": ["delta_mtl", "params"],
        "run": {"study": "zero", "device": "cpu", "n_trials": 2},
    }
    path = tmp_path / "zero.yaml"
    path.write_text(yaml.safe_dump(space))
    storage = f"sqlite:///{tmp_path}/z.db"
    for _ in range(2):  # a resume does not add failed trials either
        assert main(["run", str(path), "--storage", storage, "--quiet"]) == 2
        err = capsys.readouterr().err
        assert ("error: baselines.flip.accuracy: the trained single-task baseline scores exactly 0 on the validation "
                "split, and Delta-MTL divides by it; no trial was run. Give the baseline in the space "
                "(baselines: {flip: {accuracy: VALUE}}), score the task with another metric (tasks[].metrics), or give "
                "it more training (search_space.training.epochs)") in err
        assert optuna.load_study(study_name="zero", storage=storage).trials == []
