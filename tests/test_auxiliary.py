"""Auxiliary tasks: `role: auxiliary` in a space, Delta-MTL and the front on primary tasks only, and
each auxiliary task's inclusion as a trial parameter `aux.<task>` (docs/tasks.md#auxiliary-tasks)."""

from __future__ import annotations

import copy

import optuna
import pytest
import torch
import yaml
from conftest import TINY_SPACE

import mtlsearch
from mtlsearch.cli import main
from mtlsearch.config import RunConfig, SearchSpace
from mtlsearch.scoring import delta_mtl
from mtlsearch.search import results
from mtlsearch.search._optuna_backend import run_search
from mtlsearch.search._records import STUDY_PREFIX as ATTR
from mtlsearch.tasks import TaskSpec
from mtlsearch.training import evaluate

AUX_TASKS = ["left", "right", {"name": "sum", "role": "auxiliary"}]  # the tiny data's tasks: left, right, sum


def aux_space(**changes) -> dict:
    space = copy.deepcopy(TINY_SPACE)
    space["tasks"] = copy.deepcopy(AUX_TASKS)
    space.update(changes)
    return space


def load_error(space: dict) -> str:
    with pytest.raises(mtlsearch.ConfigError) as info:
        mtlsearch.load(space)
    return str(info.value)


# -- configuration ------------------------------------------------------------------------------


def test_roles_are_read_and_kept_in_the_signature_and_canonical_space():
    problem, _ = mtlsearch.load(aux_space())
    assert problem.task_names == ["left", "right", "sum"]
    assert problem.primary_names == ["left", "right"] and problem.auxiliary_names == ["sum"]
    assert [t.role for t in problem.tasks] == ["primary", "primary", "auxiliary"]
    assert problem.space.to_raw()["tasks"] == ["left", "right", {"name": "sum", "role": "auxiliary"}]
    signature = problem.signature()
    assert signature["tasks"][2]["role"] == "auxiliary" and "role" not in signature["tasks"][0]
    rebuilt = mtlsearch.Problem(problem.space, signature)
    assert rebuilt.auxiliary_names == ["sum"] and rebuilt.tasks == problem.tasks


def test_primary_roles_leave_the_fingerprint_as_it_was():
    plain = SearchSpace.parse(aux_space(tasks=["left", "right", "sum"]))
    spelled = SearchSpace.parse(aux_space(tasks=[{"name": "left", "role": "primary"}, "right", "sum"]))
    assert spelled.to_raw() == plain.to_raw() and spelled.fingerprint() == plain.fingerprint()
    assert SearchSpace.parse(aux_space()).fingerprint() != plain.fingerprint()
    assert TaskSpec("t", "binary").to_dict() == {"name": "t", "type": "binary", "metrics": ["accuracy"]}


def test_a_full_task_spec_takes_a_role():
    space = aux_space(tasks=["left", "right", {"name": "sum", "type": "regression", "role": "auxiliary"}])
    problem, _ = mtlsearch.load(space)
    assert problem.auxiliary_names == ["sum"]
    assert problem.space.to_raw()["tasks"][2] == {
        "name": "sum",
        "type": "regression",
        "output_dim": 1,
        "metrics": ["mae"],
        "role": "auxiliary",
    }


@pytest.mark.parametrize(
    "changes, message",
    [
        (
            {"tasks": ["left", {"name": "sum", "role": "helper"}]},
            "tasks[1].role: unknown role `helper`; choose one of: primary, auxiliary",
        ),
        (
            {"tasks": ["left", {"name": "sum", "role": "auxilary"}]},
            "tasks[1].role: unknown role `auxilary`; choose one of: primary, auxiliary (did you mean `auxiliary`?)",
        ),
        (
            {"tasks": [{"name": "left", "role": "auxiliary"}, {"name": "sum", "role": "auxiliary"}]},
            "tasks: expected at least one primary task (Delta-MTL and the front score primary tasks), found only "
            "auxiliary ones: left, sum",
        ),
        (
            {"objectives": ["delta_mtl", "sum.mae"]},
            "objectives[1]: objectives count primary tasks only; `sum` is auxiliary",
        ),
        (
            {"delta_mtl": {"metrics": {"sum": ["mae"]}}},
            "delta_mtl.metrics.sum: Delta-MTL counts primary tasks only; `sum` is auxiliary",
        ),
        (
            {"baselines": {"left": {"accuracy": 0.5}}},
            "baselines.right: missing: given baselines need every primary task (left, right)",
        ),
        (
            {"baselines": {"left": {"accuracy": 0.5}, "right": {"accuracy": 0.5}, "sum": {"rmse": 1.0}}},
            "baselines.sum.rmse: task `sum` is not scored by `rmse`; its metrics are: mae",
        ),
    ],
    ids=[
        "bad-role",
        "misspelt-role",
        "no-primary",
        "objective-on-aux",
        "delta-metrics-on-aux",
        "missing-primary-baseline",
        "bad-aux-baseline-metric",
    ],
)
def test_pinned_errors(changes, message):
    assert load_error(aux_space(**changes)) == message


def test_auxiliary_mode_is_validated_and_kept_only_when_not_default():
    space = aux_space()
    space["search_space"]["auxiliary"] = "sometimes"
    assert load_error(space) == (
        "search_space.auxiliary: unknown value `sometimes`; choose one of: search (each auxiliary task is "
        "included or not, a trial parameter), always (every candidate trains every auxiliary task)"
    )
    space["search_space"]["auxiliary"] = "search"
    assert "auxiliary" not in SearchSpace.parse(space).to_raw()["search_space"]
    space["search_space"]["auxiliary"] = "always"
    assert SearchSpace.parse(space).to_raw()["search_space"]["auxiliary"] == "always"
    with pytest.raises(mtlsearch.ConfigError) as info:  # tasks a data factory declares are checked too
        TaskSpec("t", "binary", role="x")
    assert str(info.value) == "role: unknown role `x`; choose one of: primary, auxiliary"


# -- Delta-MTL ----------------------------------------------------------------------------------


def test_delta_mtl_counts_primary_tasks_only():
    given = {"left": {"accuracy": 0.5}, "right": {"accuracy": 0.25}, "sum": {"mae": 2.0}}
    problem, _ = mtlsearch.load(aux_space(baselines=given))
    assert problem.delta_directions == {"left": {"accuracy": "max"}, "right": {"accuracy": "max"}}
    assert problem.given_baselines == {"left": {"accuracy": 0.5}, "right": {"accuracy": 0.25}}  # sum's: ignored
    metrics = {"left": {"accuracy": 0.6}, "right": {"accuracy": 0.3}, "sum": {"mae": 100.0}}
    # (0.6 - 0.5) / 0.5 = +20 %, (0.3 - 0.25) / 0.25 = +20 %; sum's mae, however bad, does not count
    assert delta_mtl(metrics, given, problem.delta_directions) == pytest.approx(20.0)
    assert delta_mtl({k: v for k, v in metrics.items() if k != "sum"}, given, problem.delta_directions) == (
        pytest.approx(20.0)
    )
    # an auxiliary task needs no given baseline
    problem, _ = mtlsearch.load(aux_space(baselines={"left": {"accuracy": 0.5}, "right": {"accuracy": 0.25}}))
    assert problem.given_baselines == {"left": {"accuracy": 0.5}, "right": {"accuracy": 0.25}}


# -- sampling -----------------------------------------------------------------------------------


def test_inclusion_is_a_trial_parameter_and_shapes_the_candidate():
    problem, _ = mtlsearch.load(aux_space())
    base = {"family": "hard_sharing", "weighting": "equal", "training.lr": 1e-3}
    out = problem.replay({"aux.sum": False, **base})
    into = problem.replay({"aux.sum": True, **base})
    assert out.task_names == ["left", "right"] and into.task_names == ["left", "right", "sum"]
    assert out.summary()["tasks"] == ["left", "right"] and into.summary()["tasks"] == ["left", "right", "sum"]
    assert out.key() != into.key()
    assert sorted(out.build_model(0).heads) == ["left", "right"]
    assert sorted(into.build_model(0).heads) == ["left", "right", "sum"]
    with pytest.raises(mtlsearch.ConfigError, match="aux.sum"):  # a space with auxiliary tasks needs it
        problem.replay(base)
    # `always`: no parameter, every auxiliary task in
    space = aux_space()
    space["search_space"]["auxiliary"] = "always"
    always, _ = mtlsearch.load(space)
    assert always.replay(base).task_names == ["left", "right", "sum"]


def test_without_auxiliary_tasks_nothing_changes(tiny_problem):
    params = {"family": "hard_sharing", "weighting": "equal", "training.lr": 1e-3}
    candidate = tiny_problem.replay(params)
    assert candidate.task_names == ["left", "right", "sum"] and "tasks" not in candidate.summary()
    assert tiny_problem.auxiliary_names == [] and tiny_problem.primary_names == ["left", "right", "sum"]


def test_one_primary_task_always_trains_with_an_auxiliary_one():
    """With one primary task, every non-empty set of auxiliary tasks is drawn, each by one set of
    parameters, and never none (a candidate of one task would be that task's baseline)."""
    space = aux_space(tasks=["left", {"name": "right", "role": "auxiliary"}, {"name": "sum", "role": "auxiliary"}])
    problem, _ = mtlsearch.load(space)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = {}
    for _ in range(40):
        trial = study.ask()
        tasks = tuple(t.name for t in problem.sample_tasks(trial))
        seen.setdefault(tasks, set()).add(tuple(sorted(trial.params.items())))
        study.tell(trial, 0.0)
    assert set(seen) == {("left", "right"), ("left", "sum"), ("left", "right", "sum")}
    assert seen[("left", "sum")] == {(("aux.right", False),)}  # sum's inclusion follows: no parameter
    assert all(len(params) == 1 for params in seen.values())


def test_tree_labels_keep_their_choices_when_a_candidate_leaves_a_task_out():
    """Optuna refuses one parameter name with two sets of choices: a tree of 2 tasks draws its
    labels from as many groups as one of the space's 3 tasks."""
    space = aux_space()
    space["search_space"]["tree"] = {"max_groups": 3}
    problem, _ = mtlsearch.load(space)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for included in (True, False, True):
        study.enqueue_trial({"aux.sum": included, "family": "tree"})
        trial = study.ask()
        candidate = problem.sample(trial)
        assert ("sum" in candidate.task_names) is included
        assert trial.distributions["tree.right.block0"].choices == (0, 1, 2)
        study.tell(trial, 0.0)
    assert candidate.build_model(0)(torch.zeros(2, *problem.input_shape)).keys() == {"left", "right", "sum"}


# -- a real search ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def aux_study(tmp_path_factory):
    """A SQLite study of the tiny space with `sum` auxiliary: hard sharing and tree, 1 epoch,
    5 trials, of which two are queued to include and to leave out `sum`."""
    tmp = tmp_path_factory.mktemp("aux")
    space = aux_space()
    space["search_space"]["families"] = ["hard_sharing", "tree"]
    space["search_space"]["weightings"] = ["equal"]
    problem, _ = mtlsearch.load(space)
    run = RunConfig(study="aux", storage=f"sqlite:///{tmp}/aux.db", n_trials=1, seed=0, device="cpu")
    study = run_search(problem, run)
    study.enqueue_trial({"aux.sum": False, "family": "tree", "training.lr": 3e-3})
    study.enqueue_trial({"aux.sum": True, "family": "hard_sharing", "training.lr": 3e-3})
    study = run_search(problem, run.replace(n_trials=5))
    return study, run, problem, tmp


@pytest.mark.slow
def test_search_trains_and_scores_the_included_tasks(aux_study):
    study, _, problem, _ = aux_study
    trials = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert len(trials) == 5
    assert {t.params["aux.sum"] for t in trials} == {True, False}
    record = study.user_attrs
    assert set(record[ATTR + "baselines"]["values"]) == {"left", "right"}  # primary tasks only
    assert [t.get("role") for t in record[ATTR + "signature"]["tasks"]] == [None, None, "auxiliary"]
    baselines = record[ATTR + "baselines"]["values"]
    for t in trials:
        a = t.user_attrs
        included = ["left", "right", "sum"] if t.params["aux.sum"] else ["left", "right"]
        assert list(a["val_metrics"]) == included and a["architecture"]["tasks"] == included
        by_hand = (
            sum(
                (a["val_metrics"][k]["accuracy"] - baselines[k]["accuracy"]) / baselines[k]["accuracy"]
                for k in ("left", "right")
            )
            / 2
            * 100
        )
        assert a["delta_mtl"] == pytest.approx(by_hand) and t.values[0] == pytest.approx(by_hand)
        model = mtlsearch.build_model(problem, t, seed=t.user_attrs["seed"])
        assert sorted(model.heads) == included
        assert t.values[1] == a["params"] == sum(p.numel() for p in model.parameters())
    text = results.format_report(results.report(study))
    assert "Pareto front" in text and "left.accuracy" in text and "  tasks: left, right" in text
    assert results.metric_cell({"left": {"accuracy": 0.5}}, "sum", "mae") == "-"  # a task the candidate left out


@pytest.mark.slow
def test_export_of_a_candidate_without_the_auxiliary_task_rebuilds_it(aux_study):
    study, run, problem, tmp = aux_study
    trial = next(t for t in study.trials if t.params.get("aux.sum") is False and t.params["family"] == "tree")
    out, weights = tmp / "best.yaml", tmp / "best.pt"
    assert (
        main(
            [
                "export",
                "aux",
                "--storage",
                run.storage,
                "--trial",
                str(trial.number),
                "-o",
                str(out),
                "--weights",
                str(weights),
            ]
        )
        == 0
    )
    config = yaml.safe_load(out.read_text())
    assert config["params"]["aux.sum"] is False and config["architecture"]["tasks"] == ["left", "right"]
    assert config["signature"]["tasks"][2]["role"] == "auxiliary"
    model = mtlsearch.load_exported(out)
    state = torch.load(weights, weights_only=True)
    assert list(model.state_dict()) == list(state)
    assert not any(k.startswith("heads.sum") for k in state)
    model.load_state_dict(state)
    model.eval()
    metrics = evaluate(model, [t for t in problem.tasks if t.name != "sum"], problem.data.val, torch.device("cpu"))
    assert metrics.keys() == trial.user_attrs["val_metrics"].keys()
    for task, values in trial.user_attrs["val_metrics"].items():
        assert metrics[task] == pytest.approx(values, rel=1e-6)
    again = mtlsearch.build_model(problem, trial, seed=trial.user_attrs["seed"])
    again.load_state_dict(state)
    again.eval()
    x = problem.data.test.inputs[:8]
    first, second = model(x), again(x)
    assert first.keys() == second.keys() == {"left", "right"}
    assert all(torch.equal(first[k], second[k]) for k in first)


@pytest.mark.slow
def test_retrain_scores_primary_tasks_against_their_single_task_networks(aux_study):
    study, _, _, _ = aux_study
    trial = next(t for t in study.trials if t.params.get("aux.sum") is True)
    config = results.export_config(study, trial)
    result = results.retrain(config, seeds=[0], device="cpu")
    assert set(result["test_metrics"]) == {"left", "right", "sum"}
    assert set(result["single_task_test_metrics"]) == set(result["task_delta"]) == {"left", "right"}
    assert "sum.mae" in results.format_retrain(result)


def test_html_charts_cover_a_task_that_the_first_front_member_left_out():
    from mtlsearch.search._html import metric_figures

    front = [
        {"trial": 0, "family": "tree", "val_metrics": {"left": {"accuracy": 0.5}}},
        {"trial": 1, "family": "tree", "val_metrics": {"left": {"accuracy": 0.6}, "sum": {"mae": 2.0}}},
    ]
    figures = metric_figures({"front": front, "baselines": {"values": {"left": {"accuracy": 0.55}}}})
    assert list(figures) == ["left.accuracy", "sum.mae"]
    assert figures["sum.mae"]["data"][0]["y"] == [None, 2.0]  # no bar for the member without `sum`
    assert figures["sum.mae"]["layout"]["shapes"] == []  # an auxiliary task has no baseline
