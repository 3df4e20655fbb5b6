"""What a user meets first: `train`'s table, a user's own Optuna study, storage flags, the README."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import optuna
import pytest
import yaml
from conftest import TINY_SPACE

import mtlsearch
from mtlsearch.cli import main

README = Path(__file__).parents[1] / "README.md"
NO_FILE = "no such file; name an existing one with --storage, or create it with `mtlsearch run`"


def write_export(folder: Path) -> str:
    """An exported hard-sharing candidate of the tiny space (no provenance: default baselines)."""
    space = copy.deepcopy(TINY_SPACE)
    del space["run"]
    params = {"family": "hard_sharing", "weighting": "equal", "training.lr": 0.005}
    path = folder / "best.yaml"
    path.write_text(yaml.safe_dump({"format": "mtlsearch-export/1", "space": space, "params": params, "seed": 0}))
    return str(path)


def test_train_shows_single_task_metrics_beside_the_candidate_and_their_progress(tmp_path, capsys):
    assert main(["train", write_export(tmp_path), "--seeds", "1", "--device", "cpu"]) == 0
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert re.fullmatch(r"metric +candidate +single-task", lines[1])
    for metric in ("left.accuracy", "right.accuracy", "sum.mae"):
        row = next(line for line in lines if line.startswith(metric))
        assert re.fullmatch(rf"{re.escape(metric)} +\d\.\d{{4}} ± 0\.0000 +\d\.\d{{4}} ± 0\.0000", row), row
    assert all(line == line.rstrip() for line in lines)
    for task in ("left", "right", "sum"):
        assert f"  seed 0 (1/1): single-task `{task}` ..." in err.splitlines()


def test_objective_in_a_users_own_study_stores_what_report_and_export_need(tmp_path, capsys):
    space = copy.deepcopy(TINY_SPACE)
    space["search_space"]["families"] = ["single_task", "hard_sharing"]
    del space["search_space"]["tree"]
    problem, _ = mtlsearch.load(space)
    url = f"sqlite:///{tmp_path}/own.db"
    study = optuna.create_study(study_name="own", storage=url, directions=problem.directions)
    study.enqueue_trial({"family": "hard_sharing"})
    study.enqueue_trial({"family": "single_task"})
    study.optimize(mtlsearch.Objective(problem, device="cpu"), n_trials=2)
    assert main(["report", "own", "--storage", url]) == 0
    assert "objectives delta_mtl (maximize), params (minimize)" in capsys.readouterr().out
    out = tmp_path / "best.yaml"
    assert main(["export", "own", "--storage", url, "--trial", "0", "-o", str(out)]) == 0
    assert yaml.safe_load(out.read_text())["params"]["family"] == "hard_sharing"
    assert "mtlsearch.artifacts" not in study.user_attrs  # the Objective kept no weights: no folder named

    # single_task shares nothing: no weighting is drawn, and its export rebuilds it with `equal`
    assert "weighting" not in study.trials[1].params
    assert main(["export", "own", "--storage", url, "--trial", "1", "-o", str(out), "--force"]) == 0
    exported = yaml.safe_load(out.read_text())
    assert (exported["params"]["family"], "weighting" in exported["params"]) == ("single_task", False)
    assert "single_task, " in capsys.readouterr().out
    candidate = problem.candidate(study.trials[1])
    assert (candidate.family.name, candidate.weighting.name) == ("single_task", "equal")
    assert candidate.key() == problem.replay(exported["params"]).key()


@pytest.mark.parametrize("verb", [["report", "s"], ["export", "s", "-o", "x.yaml"], ["check", "s"]])
def test_read_only_verbs_never_create_a_storage(verb, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MTLSEARCH_STORAGE", raising=False)
    name = verb[0]
    assert main(verb) == 2
    assert capsys.readouterr().err == (
        f"mtlsearch {name}: error: no storage at mtlsearch.db (from the default sqlite:///mtlsearch.db): {NO_FILE}\n"
    )
    assert main([*verb, "--storage", "journal:///study.log"]) == 2
    assert capsys.readouterr().err == f"mtlsearch {name}: error: no storage at study.log (from --storage): {NO_FILE}\n"
    monkeypatch.setenv("MTLSEARCH_STORAGE", "sqlite:///env.db")
    assert main(verb) == 2
    assert f"no storage at env.db (from $MTLSEARCH_STORAGE): {NO_FILE}" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())
    # a name too long for the system: one line, cut, not an OSError traceback
    assert main([*verb, "--storage", "sqlite:///" + "a" * 5000]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"mtlsearch {name}: error: cannot read the storage aaaa")
    assert err.endswith("... (from --storage): File name too long\n") and err.count("\n") == 1


@pytest.mark.parametrize("verb", ["run", "report", "export", "check", "resume"])
def test_a_storage_flag_without_a_scheme_names_the_flag_and_the_url_meant(verb, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MTLSEARCH_STORAGE", raising=False)
    args = [verb, "space.yaml" if verb == "run" else "s", *(["-o", "x.yaml"] if verb == "export" else [])]
    expected = (
        "unknown storage scheme in `adult.db`; choose one of: sqlite://..., postgresql://..., mysql://..., "
        "journal://... (e.g. sqlite:///adult.db)\n"
    )
    assert main([*args, "--storage", "adult.db"]) == 2
    assert capsys.readouterr().err == f"mtlsearch {verb}: error: --storage: {expected}"
    monkeypatch.setenv("MTLSEARCH_STORAGE", "adult.db")
    assert main(args) == 2
    assert capsys.readouterr().err == f"mtlsearch {verb}: error: $MTLSEARCH_STORAGE: {expected}"
    assert not list(tmp_path.iterdir())


def test_the_readme_opens_a_journal_study_with_plain_optuna(tmp_path, monkeypatch):
    text = README.read_text()
    assert "`optuna.visualization` draws with plotly, which mtlsearch installs" in text
    snippet = next(b for b in re.findall(r"```python\n(.*?)```", text, re.DOTALL) if "JournalFileBackend" in b)
    monkeypatch.chdir(tmp_path)
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend("study.log"))
    optuna.create_study(study_name="demo", storage=storage).optimize(lambda t: t.suggest_float("x", 0, 1), 1)
    scope: dict = {}
    exec(snippet, scope)
    assert len(scope["study"].trials) == 1
