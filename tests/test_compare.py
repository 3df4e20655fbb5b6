"""`mtlsearch compare`: studies side by side, on in-memory studies with hand-computed values."""

from __future__ import annotations

import json

import optuna
import pytest

from mtlsearch.cli import main
from mtlsearch.errors import ConfigError
from mtlsearch.search._compare import compare, format_compare
from mtlsearch.search._records import write_study

from test_hypervolume import REFERENCE, in_memory_study


def test_two_seeds_of_one_setting(tiny_problem):
    a, b = in_memory_study(tiny_problem), in_memory_study(tiny_problem)
    b.add_trial(optuna.trial.create_trial(values=[20.0, 1000], user_attrs={"delta_mtl": 20.0, "params": 1000}))
    data = compare([a, b])
    rows = {i: r for i, r in enumerate(data["studies"])}
    assert (rows[0]["trials"], rows[0]["complete"], rows[0]["best_delta_mtl"]) == (4, 3, 10.0)
    assert rows[0]["hypervolume"] == pytest.approx(1.95)
    # b adds (0.2, 1.0) scaled: its box 1.2 x 1.0 adds 0.1 x 1.0 above A's
    assert (rows[1]["best_delta_mtl"], rows[1]["hypervolume"]) == (20.0, pytest.approx(2.05))
    (group,) = data["groups"]  # one space, one sampler: seeds of one setting
    assert group["best_delta_mtl"] == {"mean": 15.0, "std": pytest.approx(50**0.5)}
    assert group["hypervolume"]["mean"] == pytest.approx(2.0)
    assert data["reference"] == REFERENCE
    text = format_compare(data)
    assert "mean of 2" in text and "+15.00 ± 7.07" in text and "2.05" in text


def test_studies_of_other_objectives_are_refused(tiny_problem):
    a, b = in_memory_study(tiny_problem), in_memory_study(tiny_problem)
    write_study(b, objectives=["delta_mtl", "macs"])
    with pytest.raises(
        ConfigError,
        match=r"has objectives \['delta_mtl', 'macs'\] \(maximize, minimize\); .* has "
        r"\['delta_mtl', 'params'\] \(maximize, minimize\): compare studies of the same objectives",
    ):
        compare([a, b])
    with pytest.raises(ConfigError, match="compare needs two studies or more, found 1"):
        compare([a])


def test_cli_compare(tmp_path, capsys):
    url = f"sqlite:///{tmp_path}/c.db"
    for name in ("a", "b"):
        study = optuna.create_study(study_name=name, storage=url, directions=["maximize", "minimize"])
        write_study(study, objectives=["delta_mtl", "params"], sampler="tpe")
        study.add_trial(optuna.trial.create_trial(values=[1.0, 10], user_attrs={"delta_mtl": 1.0, "params": 10}))
    assert main(["compare", "a", "b", "--storage", url, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [r["study"] for r in data["studies"]] == ["a", "b"] and data["reference"] is None
    page = tmp_path / "c.html"
    assert main(["compare", "a", "b", "--storage", url, "--html", str(page)]) == 0
    text = page.read_text()
    assert (
        'id="plot-fronts"' in text
        and "<h1>Comparing 2 studies</h1>" in text
        and "HTML comparison" in capsys.readouterr().err
    )
    assert main(["compare", "a", "a", "--storage", url]) == 2
    assert "STUDY: study `a` is named twice" in capsys.readouterr().err
    assert main(["compare", "a", "b", "--storage", url, "--html", str(tmp_path / "no" / "c.html")]) == 2
    assert "its folder" in capsys.readouterr().err
