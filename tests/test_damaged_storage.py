"""Damaged storage (issue 17, item 3): a torn journal line, `mtlsearch check [--repair]`, and a
SQLite file damaged mid-file. Each test reproduces the damage as a killed writer or a bad disk
leaves it, pins the fixed behaviour, and checks that nothing stored was lost or changed."""

from __future__ import annotations

import copy
import hashlib
import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import torch
from conftest import TINY_SPACE
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

import mtlsearch
from mtlsearch.checkpoints import CheckpointStore
from mtlsearch.cli import main
from mtlsearch.config import RunConfig
from mtlsearch.errors import cut
from mtlsearch.search import _journal
from mtlsearch.search._check import check_study
from mtlsearch.search._compat import storage_trial_id
from mtlsearch.search._optuna_backend import run_search
from mtlsearch.search._records import StudyRecord
from mtlsearch.search._storage import HEARTBEAT_ATTR, open_storage

A = b'{"op_code":1,"a":1}'
B = b'{"op_code":2,"b":{"op_code":3}}'  # a nested "op_code" key must not be taken for a record start
C = b'{"op_code":4}'


def plain_study(path: Path) -> optuna.Study:
    """The study in journal ``path`` as plain Optuna opens it."""
    storage = JournalStorage(JournalFileBackend(str(path)))
    return optuna.load_study(study_name=optuna.get_all_study_names(storage)[0], storage=storage)


def finished(study: optuna.Study) -> dict[int, tuple]:
    """Everything a finished trial stores: compared before and after damage and repair."""
    return {
        t.number: (t.state, t.values, t.params, t.user_attrs, t.datetime_start, t.datetime_complete)
        for t in study.get_trials()
        if t.state.is_finished()
    }


def tear(path: Path, keep: int = 40) -> tuple[int, bytes]:
    """Cut the journal's last line after ``keep`` bytes, as a writer killed mid-write leaves it;
    returns the line's byte offset and the torn bytes left in the file."""
    data = path.read_bytes()
    start = data.rfind(b"\n", 0, len(data) - 1) + 1
    path.write_bytes(data[: start + keep])
    return start, data[start : start + keep]


def tree(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` (and its digest): a check without --repair must change none."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.rglob("*") if p.is_file()
    }


def trial_id(study: optuna.Study, trial: optuna.Trial) -> int:
    return storage_trial_id(study.trials[trial.number])


def small_journal(path: Path, n: int = 3) -> optuna.Study:
    """A plain multi-objective journal study with ``n`` finished trials (no training: fast)."""
    study = optuna.create_study(storage=open_storage(f"journal:///{path}"), directions=["maximize", "minimize"])
    for i in range(n):
        trial = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
        trial.set_user_attr("note", f"trial {i}")
        study.tell(trial, [trial.params["x"], float(i)])
    return study


# -- journal bytes -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "dropped", "fixed"),
    [
        (A + b"\n" + B + b"\n", [], A + b"\n" + B + b"\n"),
        (A + b"\n" + B[:10], [B[:10]], A + b"\n"),  # torn tail: dropped
        (A + b"\n" + B, [b""], A + b"\n" + B + b"\n"),  # a whole record without newline: ended
        (A + b"\n" + B[:10] + C + b"\n" + A + b"\n", [B[:10]], A + b"\n" + C + b"\n" + A + b"\n"),  # appended onto
        (A + b"\n" + B[:10] + C[:5] + C + b"\n", [B[:10] + C[:5]], A + b"\n" + C + b"\n"),  # two torn writes
        (A + b"\n\n" + C + b"\n", [b""], A + b"\n" + C + b"\n"),  # an empty line
    ],
)
def test_scan_finds_torn_lines_and_repair_keeps_whole_records(data, dropped, fixed):
    torn = _journal.scan(data)
    assert [t.dropped for t in torn] == dropped
    assert all(t.repairable for t in torn)
    assert _journal.repaired(data, torn) == fixed


def test_a_damaged_line_that_is_no_torn_write_is_left_alone():
    data = A + b"\n" + b"\x00\x00\x00\n" + C + b"\n"  # disk damage: dropping it could renumber trials
    torn = _journal.scan(data)
    assert [(t.offset, t.number, t.repairable) for t in torn] == [(len(A) + 1, 2, False)]
    assert _journal.repaired(data, torn) == data


# -- a torn journal tail -------------------------------------------------------------------------


def test_torn_tail_is_ended_before_anything_appends(tmp_path):
    log = tmp_path / "s.log"
    small_journal(log)
    before = finished(plain_study(log))  # what every reader sees: trials 0-2
    trial = plain_study(log).ask()
    trial.set_user_attr("dying", True)  # the last record, torn by the kill below
    offset, torn = tear(log)
    intact = log.read_bytes()[:offset]

    # the issue, with plain Optuna: the torn line is skipped silently, the next append lands on
    # it, and from then on every read fails
    broken = tmp_path / "broken.log"
    shutil.copyfile(log, broken)
    study = plain_study(broken)
    assert "dying" not in study.trials[-1].user_attrs
    study.set_user_attr("a", 1)
    with pytest.raises(ValueError):  # JSONDecodeError
        study.set_user_attr("b", 2)
    with pytest.raises(ValueError):
        plain_study(broken)

    # fixed: opening the journal ends the torn line first, with a warning
    with pytest.warns(RuntimeWarning) as caught:
        storage = open_storage(f"journal:///{log}")
    message = str(caught[0].message)
    assert message.startswith(f"journal {log}: its last line was torn (a writer stopped mid-write); dropped 40 bytes ")
    assert f"at byte offset {offset}: {torn[:20]!r}"[:-1] in message
    assert f"(kept in {log}.torn-{offset}.bak); the records before it are intact" in message
    assert Path(f"{log}.torn-{offset}.bak").read_bytes() == torn
    study = optuna.load_study(study_name=plain_study(log).study_name, storage=storage)
    study.set_user_attr("a", 1)
    study.set_user_attr("b", 2)
    study.tell(study.ask(), [0.5, 9.0])

    after = plain_study(log)  # plain Optuna reads it, and nothing stored was lost or changed
    assert log.read_bytes().startswith(intact)
    assert after.user_attrs == {"a": 1, "b": 2}
    assert {n: v for n, v in finished(after).items() if n in before} == before
    assert [t.state for t in after.trials] == [*[TrialState.COMPLETE] * 3, TrialState.RUNNING, TrialState.COMPLETE]


def test_a_second_tear_at_the_same_offset_keeps_both_backups(tmp_path):
    log = tmp_path / "s.log"
    small_journal(log)
    whole = log.read_bytes()
    offset, first = tear(log, keep=30)
    with pytest.warns(RuntimeWarning, match=rf"kept in {re.escape(str(log))}\.torn-{offset}\.bak\)"):
        open_storage(f"journal:///{log}")
    log.write_bytes(whole)
    assert tear(log, keep=20) == (offset, first[:20])
    with pytest.warns(RuntimeWarning, match=rf"kept in {re.escape(str(log))}\.torn-{offset}\.1\.bak\)"):
        open_storage(f"journal:///{log}")
    assert Path(f"{log}.torn-{offset}.bak").read_bytes() == first
    assert Path(f"{log}.torn-{offset}.1.bak").read_bytes() == first[:20]


def test_a_record_missing_only_its_newline_is_kept(tmp_path):
    log = tmp_path / "s.log"
    small_journal(log)
    log.write_bytes(log.read_bytes()[:-1])
    offset = log.read_bytes().rfind(b"\n") + 1
    with pytest.warns(
        RuntimeWarning, match=rf"its last record \(byte offset {offset}\) lacked its newline .*nothing dropped"
    ):
        study = optuna.load_study(study_name=plain_study(log).study_name, storage=open_storage(f"journal:///{log}"))
    assert not list(tmp_path.glob("*.bak"))
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 3  # the last tell is read
    study.tell(study.ask(), [0.5, 9.0])
    assert len(plain_study(log).trials) == 4


# -- mtlsearch check -----------------------------------------------------------------------------


def test_check_changes_nothing_then_repair_ends_torn_writes_and_fails_dead_trials(tmp_path, capsys):
    log = tmp_path / "s.log"
    url = f"journal:///{log}"
    study = small_journal(log)
    name = study.study_name
    storage = open_storage(url)
    study = optuna.load_study(study_name=name, storage=storage)
    dead, live = study.ask(), study.ask()
    storage.set_trial_system_attr(trial_id(study, dead), HEARTBEAT_ATTR, time.time() - 600)  # its worker died
    storage.set_trial_system_attr(trial_id(study, live), HEARTBEAT_ATTR, time.time())
    before = finished(plain_study(log))
    # the damage, left by plain Optuna: a torn line, then appends onto it
    offset, torn = tear(log)
    plain = plain_study(log)
    plain.set_user_attr("after", 1)
    with pytest.raises(ValueError):
        plain.set_user_attr("later", 2)
    damaged = log.read_bytes()
    listing = sorted(p.name for p in tmp_path.iterdir())
    line = damaged[:offset].count(b"\n") + 1

    assert main(["check", name, "--storage", url]) == 1
    out = capsys.readouterr().out.splitlines()
    assert log.read_bytes() == damaged and sorted(p.name for p in tmp_path.iterdir()) == listing  # nothing written
    assert (
        out[0] == f"study `{name}` in {url}: 3 complete, 2 running; read 0 checkpoint file(s) and 0 weights artifact(s)"
    )
    assert out[1].startswith(f"problem: journal {log}: line {line} (byte offset {offset}): 40 bytes ")
    assert out[1].endswith(
        f", then a whole record appended onto it (Optuna cannot read the line); --repair drops the torn part (kept in "
        f"{log}.torn-{offset}.bak) and keeps the whole record"
    )
    assert re.fullmatch(
        r"problem: trial #3: RUNNING, last heartbeat 6\d\d s ago \(grace period 30 s\): its worker is gone; --repair "
        r"fails it and queues a retry with its parameters \(it continues from its last checkpoint\)",
        out[2],
    )
    assert out[3:] == ["2 problem(s); `--repair` fixes 2 of them"]

    assert main(["check", name, "--storage", url, "--repair"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[1].startswith("repaired: journal") and out[1].endswith(
        f"dropped the torn part (kept in {log}.torn-{offset}.bak) and kept the whole record"
    )
    assert out[2].startswith("repaired: trial #3: RUNNING") and out[2].endswith("failed it; its retry is trial #5")
    assert out[3] == "healthy now: 2 problem(s) repaired"
    assert Path(f"{log}.torn-{offset}.bak").read_bytes() == torn

    after = plain_study(log)  # readable again by plain Optuna; nothing stored lost or changed
    assert log.read_bytes().startswith(damaged[:offset])
    assert after.user_attrs == {"after": 1, "later": 2}
    assert {n: v for n, v in finished(after).items() if n in before} == before
    assert [t.state for t in after.trials[3:]] == [TrialState.FAIL, TrialState.RUNNING, TrialState.WAITING]
    assert main(["check", name, "--storage", url]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "healthy: nothing to repair"
    assert main(["check", name, "--storage", url, "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert (result["healthy"], result["findings"], result["trials"]) == (
        True,
        [],
        {"complete": 3, "fail": 1, "running": 1, "waiting": 1},
    )


def test_check_bad_input_is_one_line_and_exit_2(tmp_path, capsys):
    missing = tmp_path / "missing.log"
    assert main(["check", "s", "--storage", f"journal:///{missing}"]) == 2
    assert (
        capsys.readouterr().err
        == f"mtlsearch check: error: no storage at {cut(str(missing))} (from --storage): no such file; name an existing "
        "one with --storage, or create it with `mtlsearch run`\n"
    )  # a long temporary path is shortened in the middle
    assert main(["check", "s", "--storage", f"sqlite:///{tmp_path}/missing.db"]) == 2
    assert "no storage at" in capsys.readouterr().err and not list(tmp_path.iterdir())  # nothing created
    small_journal(tmp_path / "s.log")
    assert main(["check", "nope", "--storage", f"journal:///{tmp_path}/s.log"]) == 2
    assert capsys.readouterr().err.startswith("mtlsearch check: error: study: no study `nope` in journal:///")


def test_check_reads_each_seeds_checkpoints_and_refuses_a_linked_folder(tmp_path, capsys):
    log, artifacts, victim = tmp_path / "s.log", tmp_path / "art", tmp_path / "victim"
    study = small_journal(log)
    study.set_user_attr(StudyRecord.key("artifacts"), str(artifacts))
    seed = CheckpointStore(artifacts / "checkpoints" / "0123456789abcdef" / "seed-1")
    seed.directory.mkdir(parents=True)
    (seed.directory / "epoch-0001.pt").write_bytes(b"cut short")
    victim.mkdir()
    (victim / "epoch-0001.pt").write_bytes(b"not ours")
    (artifacts / "checkpoints" / "00000000deadbeef").symlink_to(victim, target_is_directory=True)
    url = f"journal:///{log}"

    result = check_study(study.study_name, url)
    assert [(f.kind, f.subject, f.repairable) for f in result.findings] == [
        ("unsafe_checkpoint", "checkpoints of no trial", False),
        ("unreadable_checkpoint", f"checkpoint {seed.directory}/epoch-0001.pt (trial no trial)", True),
    ]
    assert result.findings[1].problem.endswith("; continuing from scratch")
    assert main(["check", study.study_name, "--storage", url, "--repair"]) == 1  # the link needs a person
    assert [p.name for p in seed.directory.iterdir()] == ["epoch-0001.pt.unreadable"]
    assert [p.name for p in victim.iterdir()] == ["epoch-0001.pt"]  # never touched through the link
    assert "remove the link" in capsys.readouterr().out


# -- a real study --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real(tmp_path_factory):
    """A 2-trial study of the tiny space in a journal file, with its weights artifacts."""
    folder = tmp_path_factory.mktemp("real")
    problem, _ = mtlsearch.load(copy.deepcopy(TINY_SPACE))
    run_search(problem, RunConfig(study="tiny", storage=f"journal:///{folder}/s.log", n_trials=2, seed=0, device="cpu"))
    return folder / "s.log", folder / "s_artifacts"


def copy_real(real, tmp_path) -> tuple[str, Path, Path]:
    """A copy of the real study, moved as a user moves a study folder: its stored artifacts folder
    is the copied one (rewritten in place, so the journal's last line stays trial #1's end)."""
    log, artifacts = tmp_path / "s.log", tmp_path / "s_artifacts"
    shutil.copytree(real[1], artifacts)
    data = real[0].read_bytes()
    assert data.count(json.dumps(str(real[1])).encode()) == 1
    log.write_bytes(data.replace(json.dumps(str(real[1])).encode(), json.dumps(str(artifacts)).encode()))
    assert StudyRecord.from_attrs(plain_study(log).user_attrs).artifacts == str(artifacts)
    return f"journal:///{log}", log, artifacts


@pytest.mark.slow
def test_resume_after_a_torn_tail_warns_and_keeps_every_finished_trial(real, tmp_path, capsys):
    url, log, _ = copy_real(real, tmp_path)
    offset, torn = tear(log)  # trial #1's last record: as every reader sees it, it never finished
    before = finished(plain_study(log))
    assert list(before) == [0]
    time.sleep(max(0.0, 2.5 - (time.time() - plain_study(log).trials[1].system_attrs[HEARTBEAT_ATTR])))

    with pytest.warns(RuntimeWarning) as caught:
        code = main(["resume", "tiny", "--storage", url, "--heartbeat-interval", "1", "--grace-period", "2", "--quiet"])
    assert code == 0, capsys.readouterr().err
    torn_warnings = [str(w.message) for w in caught if str(w.message).startswith(f"journal {log}: ")]
    assert torn_warnings == [
        f"journal {log}: its last line was torn (a writer stopped mid-write); dropped {len(torn)} bytes at byte offset "
        f"{offset}: {_journal.describe_value(torn)} (kept in {log}.torn-{offset}.bak); the records before it are intact"
    ]
    after = plain_study(log)  # plain Optuna reads the study, and no finished trial changed
    assert {n: v for n, v in finished(after).items() if n in before} == before
    states = [t.state for t in after.trials]
    assert states == [TrialState.COMPLETE, TrialState.FAIL, TrialState.COMPLETE]  # #1 failed (dead), #2 its retry
    assert after.trials[2].params == after.trials[1].params


@pytest.mark.slow
def test_check_reads_checkpoints_and_artifacts_and_repairs_what_it_can(real, tmp_path, capsys):
    url, log, artifacts = copy_real(real, tmp_path)
    storage = open_storage(url)
    study = optuna.load_study(study_name="tiny", storage=storage)
    run_id = "0123456789abcdef"
    dead = study.ask()
    dead.set_user_attr("run_id", run_id)
    storage.set_trial_system_attr(trial_id(study, dead), HEARTBEAT_ATTR, time.time() - 100)
    store = CheckpointStore(artifacts / "checkpoints" / run_id)
    store.save({"epoch": 1, "x": torch.zeros(2)})
    (store.directory / "epoch-0002.pt").write_bytes(b"truncated")  # the newest, cut by a crash
    gone = study.trials[0].user_attrs["weights_artifact"]
    (artifacts / gone).unlink()
    before, files, journal = finished(plain_study(log)), tree(tmp_path), log.read_bytes()

    assert main(["check", "tiny", "--storage", url]) == 1
    out = capsys.readouterr().out.splitlines()
    assert tree(tmp_path) == files and log.read_bytes() == journal  # nothing written
    assert (
        out[0] == f"study `tiny` in {url}: 2 complete, 1 running; read 2 checkpoint file(s) and 1 weights artifact(s)"
    )
    assert out[1].startswith("problem: trial #2: RUNNING, last heartbeat 1")
    bad = store.directory / "epoch-0002.pt"
    assert out[2].startswith(f"problem: checkpoint {bad} (trial #2): unreadable (")
    assert out[2].endswith(
        "; continuing from the previous one; --repair renames it epoch-0002.pt.unreadable (kept, never read again)"
    )
    assert out[3] == (
        f"problem: trial #0 (COMPLETE): its weights artifact {gone} is not in {artifacts} (moved or deleted); export "
        "without --weights, or retrain the config with `mtlsearch train`; not repairable by mtlsearch"
    )
    assert out[4] == "3 problem(s); `--repair` fixes 2 of them, the others need you (see each line)"

    result = check_study("tiny", url, repair=True)
    assert [(f.kind, f.repaired) for f in result.findings] == [
        ("stale_trial", True),
        ("unreadable_checkpoint", True),
        ("missing_artifact", False),
    ]
    assert not result.healthy and main(["check", "tiny", "--storage", url, "--repair"]) == 1
    assert [p.name for p in sorted(store.directory.iterdir())] == ["epoch-0001.pt", "epoch-0002.pt.unreadable"]
    assert store.load()["epoch"] == 1  # what the retry continues from
    after = plain_study(log)
    assert finished(after) == {**before, 2: finished(after)[2]}  # only the dead trial changed: FAIL
    retry = after.trials[3]
    assert (after.trials[2].state, retry.state, retry.user_attrs["run_id"]) == (
        TrialState.FAIL,
        TrialState.WAITING,
        run_id,
    )


# -- a SQLite file damaged mid-file --------------------------------------------------------------


@pytest.fixture(scope="module")
def real_db(real, tmp_path_factory):
    """The real study copied into a SQLite file, and the file's pages."""
    db = tmp_path_factory.mktemp("db") / "s.db"
    optuna.copy_study(
        from_study_name="tiny", from_storage=open_storage(f"journal:///{real[0]}"), to_storage=f"sqlite:///{db}"
    )
    return db, db.stat().st_size // 4096


def damage(db: Path, page: int) -> bytes:
    """Overwrite the start of ``page`` (a bad disk); returns the damaged file's bytes."""
    with open(db, "r+b") as f:
        f.seek(page * 4096)
        f.write(b"\xff" * 512)
    return db.read_bytes()


@pytest.mark.slow
def test_damaged_sqlite_is_one_line_with_the_recovery_steps(real_db, tmp_path, capsys):
    source, pages = real_db
    db = tmp_path / "s.db"
    storage = f"sqlite:///{db}"
    misleading = []
    for page in range(1, pages):  # wherever the damage is
        shutil.copyfile(source, db)
        data = damage(db, page)
        try:  # the issue: plain Optuna ends in a traceback, most often with a misleading message
            optuna.load_study(study_name="tiny", storage=storage).get_trials()
        except optuna.exceptions.StorageInternalError as err:
            misleading.append(str(err))
        except Exception:  # sqlalchemy's DatabaseError where the damage is met on opening
            pass
        assert db.read_bytes() == data
        assert main(["report", "tiny", "--storage", storage]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith(
            f"mtlsearch report: error: run.storage: SQLite file `{db}` is damaged ("
        ), err
        assert f"sqlite3 {db} .recover | sqlite3 recovered.db" in err and "optuna.copy_study" in err
        assert db.read_bytes() == data  # nothing changed
    assert len(misleading) > pages // 2 and all("e.g. exceeding max length" in m for m in misleading)
    assert main(["check", "tiny", "--storage", storage]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[1].startswith(f"problem: {storage}: SQLite file `{db}` is damaged (") and db.read_bytes() == data


@pytest.mark.slow
@pytest.mark.process
def test_damaged_sqlite_via_the_command_line_has_no_traceback(real_db, tmp_path):
    source, pages = real_db
    db = tmp_path / "s.db"
    shutil.copyfile(source, db)
    data = damage(db, pages // 2)
    done = subprocess.run(
        [sys.executable, "-m", "mtlsearch", "report", "tiny", "--storage", f"sqlite:///{db}"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2 and "Traceback" not in done.stderr and done.stdout == ""
    assert re.fullmatch(
        rf"mtlsearch report: error: run.storage: SQLite file `{re.escape(str(db))}` is damaged \(.+\); "
        r"mtlsearch changed nothing\. Recover its readable rows into a new file with "
        r"`sqlite3 .+ \.recover \| sqlite3 recovered\.db` .+"
        r"`optuna\.copy_study`\n",
        done.stderr,
    )
    assert db.read_bytes() == data
