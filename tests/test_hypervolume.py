"""Hypervolume (moocore) on hand-computed sets, the stored reference point, and what `report`
shows of it, on in-memory studies built with `optuna.trial.create_trial`."""

from __future__ import annotations

import json

import optuna
import pytest

from mtlsearch.errors import MTLSearchError
from mtlsearch.scoring import count_params, hypervolume, hypervolume_2d, hypervolume_contributions
from mtlsearch.search import _hypervolume, results
from mtlsearch.search._hypervolume import RULE, derive_reference, study_reference
from mtlsearch.search._records import STUDY_PREFIX, write_study
from mtlsearch.search._study import write_record

MAX_MIN = ["maximize", "minimize"]


def test_hypervolume_2d_and_3d_by_hand():
    # a staircase under (4, 4): columns of height 1, 2, 3 (the point (5, 0) lies beyond the reference)
    assert hypervolume([(1, 3), (2, 2), (3, 1), (5, 0)], ["minimize"] * 2, (4, 4)) == pytest.approx(6.0)
    assert hypervolume_2d([(-1, 3)], MAX_MIN, (-4, 4)) == pytest.approx(3.0)
    # two boxes under (4, 4, 4): 3*3*1 + 1*1*3 - their 1*1*1 intersection
    assert hypervolume([(1, 1, 3), (3, 3, 1)], ["minimize"] * 3, (4, 4, 4)) == pytest.approx(11.0)
    assert hypervolume_contributions([(1, 1, 3), (3, 3, 1)], ["minimize"] * 3, (4, 4, 4)) == pytest.approx([8, 2])
    # a dominated point and a duplicate contribute nothing; a point beyond the reference adds nothing
    shares = hypervolume_contributions([(1, 3), (2, 2), (2, 2), (3, 3), (5, 0)], ["minimize"] * 2, (4, 4))
    assert shares == pytest.approx([1, 0, 0, 0, 0])
    assert hypervolume([], MAX_MIN, (0, 1)) == 0.0 and hypervolume_contributions([], MAX_MIN, (0, 1)) == []


def test_hypervolume_refuses_bad_input():
    with pytest.raises(ValueError, match="reference has 1 values for 2 objectives"):
        hypervolume([(1, 2)], MAX_MIN, (0,))
    with pytest.raises(ValueError, match="finite"):
        hypervolume([(float("nan"), 2)], MAX_MIN, (0, 3))
    with pytest.raises(ValueError, match="exactly two"):
        hypervolume_2d([(1, 2, 3)], ["minimize"] * 3, (4, 4, 4))


def test_reference_rule_by_hand():
    ref = derive_reference(
        ["delta_mtl", "left.accuracy", "sum.mae", "macs"],
        {"left": {"accuracy": 0.8}, "sum": {"mae": 2.0}},
        lambda objective: {"macs": 1000.0}[objective],
        {"left": {"accuracy": "max"}, "sum": {"mae": "min"}},
    )
    assert ref == {
        "objectives": ["delta_mtl", "left.accuracy", "sum.mae", "macs"],
        "point": [-100.0, 0.0, 4.0, 2000.0],
        "scale": [100.0, 0.8, 2.0, 1000.0],
        "rule": RULE,
    }


def test_reference_rule_reads_a_user_metrics_direction():
    """A metric of the user's own class (not in the registry) takes the direction the problem
    records for it; one with no direction is a clear error, not a registry lookup."""
    ref = derive_reference(
        ["left.my_recall", "sum.my_error"],
        {"left": {"my_recall": 0.5}, "sum": {"my_error": 3.0}},
        lambda objective: 0.0,
        {"left": {"my_recall": "max"}, "sum": {"my_error": "min"}},
    )
    assert ref["point"] == [0.0, 6.0] and ref["scale"] == [0.5, 3.0]
    with pytest.raises(MTLSearchError, match="objective `sum.my_error`: no direction known for metric `my_error`"):
        derive_reference(["sum.my_error"], {"sum": {"my_error": 3.0}}, lambda objective: 0.0, {"sum": {}})


REFERENCE = {"objectives": ["delta_mtl", "params"], "point": [-100.0, 2000.0], "scale": [100.0, 1000.0], "rule": "r"}


def in_memory_study(problem, reference=REFERENCE):
    """A study of the tiny problem with three complete trials and a failed one:
    A (+10 %, 500), B (0 %, 200) on the front, C (-50 %, 1500) dominated by B."""
    study = problem.create_study()
    write_record(study, problem.space, 0, "tpe", None)
    write_study(study, signature=problem.signature(), baselines={"values": {"left": {"accuracy": 0.5}}})
    if reference is not None:
        write_study(study, hypervolume=reference)
    for row in [(10.0, 500), (0.0, 200), None, (-50.0, 1500)]:
        if row is None:
            study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.FAIL))
            continue
        delta, params = row
        attrs = {"delta_mtl": delta, "params": params, "macs": 10 * params, "val_metrics": {"left": {"accuracy": 0.5}}}
        study.add_trial(optuna.trial.create_trial(values=[delta, params], user_attrs=attrs))
    return study


def test_report_carries_the_front_hypervolume_contributions_and_curve(tiny_problem):
    data = results.report(in_memory_study(tiny_problem))
    # scaled: A (0.1, 0.5), B (0, 0.2); reference (-1, 2). A's box 1.1 * 1.5, B's 1.0 * 1.8, overlap 1.0 * 1.5
    volume = data["hypervolume"]
    assert volume["value"] == pytest.approx(1.95)
    assert {r["trial"]: r["hv_contribution"] for r in data["front"]} == pytest.approx({0: 0.15, 1: 0.3})
    assert volume["reference"] == REFERENCE
    assert [(c["trial"], c["finished"]) for c in volume["curve"]] == [(0, 1), (1, 2), (2, 3), (3, 4)]
    assert [c["hypervolume"] for c in volume["curve"]] == pytest.approx([1.65, 1.95, 1.95, 1.95])
    json.dumps(data)  # what `report --json` prints
    text = results.format_report(data)
    assert "hypervolume 1.95 " in text and "HV contrib." in text and "params 2000" in text


def test_reference_is_derived_once_and_stored(tiny_problem, monkeypatch):
    study = in_memory_study(tiny_problem, reference=None)
    single = sum(count_params(tiny_problem.single_task_model(t, 0)) for t in tiny_problem.tasks)
    ref = study_reference(study)
    assert ref is not None and ref["point"] == [-100.0, 2.0 * single] and ref["scale"] == [100.0, float(single)]
    assert study.user_attrs[STUDY_PREFIX + "hypervolume"] == ref

    def fail(*args):
        raise AssertionError("derived again")

    monkeypatch.setattr(_hypervolume, "_derive", fail)
    assert study_reference(study) == ref  # read back, not derived again


def test_no_reference_without_baselines(tiny_problem):
    study = tiny_problem.create_study()
    write_record(study, tiny_problem.space, 0, "tpe", None)
    assert study_reference(study) is None
    assert results.report(study)["hypervolume"] is None


def test_a_reference_that_cannot_be_derived_leaves_the_rest_of_the_report(tiny_problem, monkeypatch):
    from mtlsearch.errors import ConfigError

    def broken(study, progress=None):
        raise ConfigError("search_space.families[0]", "unknown family `gone`")

    monkeypatch.setattr(results, "study_reference", broken)
    data = results.report(in_memory_study(tiny_problem, reference=None))
    assert data["hypervolume"] is None and len(data["front"]) == 2
    assert any(w.startswith("no hypervolume: search_space.families[0]") for w in data["warnings"])
    assert "hypervolume" not in results.format_report(data).split("warning")[0]


def test_one_objective_is_the_length_to_the_best_point():
    from mtlsearch.scoring import hypervolume, hypervolume_contributions

    assert hypervolume([[5.0], [3.0]], ["maximize"], [0.0]) == 5.0
    assert hypervolume([[1.0]], ["minimize"], [0.0]) == 0.0  # not better than the reference
    assert hypervolume_contributions([[5.0], [3.0], [5.5]], ["maximize"], [0.0]) == [0.0, 0.0, 0.5]
