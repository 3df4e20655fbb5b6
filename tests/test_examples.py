"""The shipped spaces load, and a user's own data factory works by import path."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

import mtlsearch
from mtlsearch.search._optuna_backend import run_search

ROOT = Path(__file__).parents[1]


@pytest.mark.parametrize("space", sorted((ROOT / "search_spaces").glob("**/*.yaml")), ids=lambda p: p.name)
def test_shipped_spaces_load(space, tmp_path, monkeypatch):
    import yaml

    monkeypatch.setenv("MTLSEARCH_CACHE", str(tmp_path))  # scenes render into a fresh cache, not ~/.cache

    root = str((yaml.safe_load(space.read_text()).get("data") or {}).get("root", ""))
    if root.startswith("/path/to/"):  # data the user brings: tests/test_loaders.py runs these on tiny folders
        with pytest.raises(mtlsearch.ConfigError) as info:
            mtlsearch.load(space)
        assert str(info.value).startswith("data.root: ") and root in str(info.value)
        return
    problem, run = mtlsearch.load(space)
    assert len(problem.tasks) >= 2 and run.n_trials >= 1


def test_mmoe_space_reports_measured_correlation():
    problem, _ = mtlsearch.load(ROOT / "search_spaces" / "mmoe_synthetic.yaml")
    assert 0.2 < problem.data.info["label_correlation"] < 0.5


def test_custom_factory_by_import_path(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "examples"))
    problem, run = mtlsearch.load(ROOT / "examples" / "custom_space.yaml")
    assert [t.name for t in problem.tasks] == ["positive", "energy"]
    assert problem.metric_directions == {"positive": {"accuracy": "max"}, "energy": {"mae": "min", "rmse": "min"}}
    run = run.replace(storage=f"sqlite:///{tmp_path}/c.db", n_trials=2, device="cpu")
    space = problem.space
    import dataclasses

    space = dataclasses.replace(space, search_space=dataclasses.replace(
        space.search_space, training=dataclasses.replace(space.search_space.training, epochs=mtlsearch.config.ParamSpec("fixed", (1,)))))
    study = run_search(mtlsearch.Problem(space), run)
    assert len([t for t in study.trials if t.values]) == 2
    sys.modules.pop("custom_data", None)


@pytest.mark.slow
def test_mixed_family_example_runs_and_names_a_winner(tmp_path, monkeypatch, capsys):
    from mtlsearch.families import FAMILIES

    monkeypatch.syspath_prepend(str(ROOT / "examples"))
    import mixed_search

    winner = mixed_search.main(["--n-trials", "3", "--epochs", "1", "--quiet", "--storage", f"sqlite:///{tmp_path}/m.db"])
    assert winner in FAMILIES
    out = capsys.readouterr().out
    assert f"winner: {winner} (trial #" in out and "best trial of each family" in out
    sys.modules.pop("mixed_search", None)
