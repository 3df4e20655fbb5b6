"""``run --warm-start affinity`` on a real SQLite study: the affinity-proposed trees are the
study's first trials, marked ``warm_start``, enqueued once per study, read from a stored affinity
when there is one, and shown by ``report``; bad settings are refused with pinned errors."""

from __future__ import annotations

import copy
import json

import optuna
import pytest
from conftest import TINY_SPACE
from optuna.trial import FixedTrial

import mtlsearch
from mtlsearch.cli import parser
from mtlsearch.config import RunConfig
from mtlsearch.errors import ConfigError
from mtlsearch.grouping import proposals
from mtlsearch.search import Progress
from mtlsearch.search._records import study_record, write_study
from mtlsearch.search._study import resumed_run
from mtlsearch.search._warm_start import warm_params, warm_start_trials
from mtlsearch.search.results import format_report, report


class Recorder(Progress):
    """Keeps every event (kind, message, data)."""

    def __init__(self) -> None:
        super().__init__("quiet")
        self.events: list[tuple[str, str, dict]] = []

    def event(self, kind: str, message: str = "", transient: bool = False, **data) -> None:
        self.events.append((kind, message, data))

    def of(self, kind: str) -> list[tuple[str, str, dict]]:
        return [e for e in self.events if e[0] == kind]


def space(tmp_path, families=("hard_sharing", "tree"), **run) -> dict:
    raw = copy.deepcopy(TINY_SPACE)
    raw["search_space"]["families"] = list(families)
    if "tree" not in families:
        del raw["search_space"]["tree"]
    raw["search_space"]["weightings"] = ["equal"]
    raw["run"].update({"storage": f"sqlite:///{tmp_path}/ws.db", "artifacts": str(tmp_path / "art"), **run})
    return raw


@pytest.mark.slow
def test_warm_start_trials_come_first_once_per_study(tmp_path):
    problem, run = mtlsearch.load(space(tmp_path, n_trials=3, warm_start="affinity", save_weights=False))
    progress = Recorder()
    study = mtlsearch.run_search(problem, run, progress)

    record = study_record(study)
    assert record.affinity is not None and record.affinity["tasks"] == ["left", "right", "sum"]
    warm = record.warm_start
    assert warm["method"] == "lookahead" and warm["measured"] is True
    labels = [p["label"] for p in warm["proposals"]]
    assert len(labels) == 2  # 3 tasks, max_groups 2: the best 2-group split, at blocks 2 and 1
    assert [p["split_block"] for p in warm["proposals"]] == [2, 1]
    assert all(label.startswith("affinity lookahead k=2 split@") for label in labels)

    trials = sorted(study.trials, key=lambda t: t.number)
    assert [t.user_attrs.get("warm_start") for t in trials] == [*labels, None]  # the first trials
    for t, proposal in zip(trials, warm["proposals"]):
        # the tree is tested at the baselines' settings: equal weights, the lr range's default
        tree = {k: v for k, v in proposal["params"].items() if k.startswith("tree.")}
        assert tree and proposal["params"] == {
            "family": "tree",
            **tree,
            "weighting": "equal",
            "training.lr": problem.baseline_training()["lr"],
        }
        assert t.params == proposal["params"]
        assert problem.baseline_training()["lr"] == pytest.approx(10**-2.5)
        assert t.state == optuna.trial.TrialState.COMPLETE
    # the tree really splits where the label says
    first = problem.candidate(trials[0])
    sharing = first.architecture.sharing(problem.backbone.block_names)
    assert len(sharing[1]) == 1 and len(sharing[2]) == 2

    (kind, message, data) = progress.of("warm_start")[0]
    assert message.startswith("warm start: 2 tree candidates from lookahead affinity enqueued (measured affinity ")
    assert "x one candidate)" in message and data["proposals"] == labels

    # a second run of the same study (more trials) does not enqueue again, and keeps the setting
    again = Recorder()
    study = mtlsearch.run_search(problem, run.replace(n_trials=4), again)
    assert not again.of("warm_start")
    assert len(warm_start_trials(study)) == 2
    assert study_record(study).run["warm_start"] == "affinity"
    assert resumed_run(study, run.storage).warm_start == "affinity"  # `resume` keeps it, and enqueues nothing
    assert len(study.trials) == 4

    # report: the JSON trial entries, the summary line, the marker on the front
    data = report(study)
    assert data["warm_start"]["trials"] == [0, 1] and data["warm_start"]["method"] == "lookahead"
    assert all("warm_start" in r for r in data["front"])
    text = format_report(data)
    assert "warm start: 2 trials (lookahead affinity; marked w)" in text
    for r in data["front"]:
        row = next(line for line in text.splitlines() if line.startswith(f"#{r['trial']} "))
        assert row.split()[1:2] == (["w"] if r["warm_start"] else [row.split()[1]])
    json.dumps(data, default=str)

    from mtlsearch.search._html import render, scatter_data

    page = render(study)
    assert "diamonds are warm-start trials" in page and "<th>warm start</th>" in page

    points = scatter_data(study, data)["points"]
    assert {p["trial"]: p["warm_start"] for p in points} == {
        t.number: t.number in (0, 1) for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE
    }


@pytest.mark.slow
def test_a_stored_affinity_is_used_and_not_measured_again(tmp_path):
    raw = space(tmp_path, n_trials=2, warm_start="affinity", save_weights=False)
    problem, run = mtlsearch.load(raw)
    study = problem.create_study(study_name=run.study, storage=run.storage)
    from mtlsearch.search._study import write_record

    write_record(study, problem.space, run.seed, run.sampler, None)
    # left and sum help each other; right is hurt by both (row: effect on the column task)
    matrix = [[0.0, -0.5, 0.9], [-0.5, 0.0, -0.5], [0.8, -0.4, 0.0]]
    write_study(
        study,
        affinity={
            "tasks": ["left", "right", "sum"],
            "methods": {"cosine": matrix},
            "seed": 0,
            "epochs": 1,
            "steps": 4,
            "seconds": 1.5,
            "candidate_seconds": 3.0,
            "cost_ratio": 0.5,
        },
    )
    progress = Recorder()
    study = mtlsearch.run_search(problem, run, progress)
    (_, message, data) = progress.of("warm_start")[0]
    assert message == (
        "warm start: 2 tree candidates from cosine affinity enqueued (stored affinity 1.50 s, 0.5x one candidate)"
    )
    assert data["proposals"] == [
        "affinity cosine k=2 split@2: {left,sum} {right}",
        "affinity cosine k=2 split@1: {left,sum} {right}",
    ]
    assert study_record(study).warm_start["measured"] is False
    first = sorted(study.trials, key=lambda t: t.number)[0]
    assert first.params["tree.right.block2"] == 1 and first.params["tree.sum.block2"] == 0


def test_one_enqueued_tree_is_singular(tmp_path):
    """An open budget of one trial enqueues one tree: `1 tree candidate`, and the ratio keeps its
    digits (0.018x, not 0.0x)."""
    from mtlsearch.search._study import write_record
    from mtlsearch.search._warm_start import enqueue_warm_start

    problem, run = mtlsearch.load(space(tmp_path, n_trials=1, warm_start="affinity", save_weights=False))
    study = problem.create_study(study_name=run.study, storage=run.storage)
    write_record(study, problem.space, run.seed, run.sampler, None)
    matrix = [[0.0, -0.5, 0.9], [-0.5, 0.0, -0.5], [0.8, -0.4, 0.0]]
    record = {"tasks": ["left", "right", "sum"], "methods": {"cosine": matrix}, "seed": 0, "epochs": 1, "steps": 4}
    write_study(study, affinity={**record, "seconds": 0.034, "candidate_seconds": 1.9, "cost_ratio": 0.0179})
    progress = Recorder()
    enqueue_warm_start(study, problem, run, progress, "cpu")
    assert progress.of("warm_start")[0][1] == (
        "warm start: 1 tree candidate from cosine affinity enqueued (1 more than the open budget left out) "
        "(stored affinity 0.03 s, 0.018x one candidate)"
    )
    assert len(study.get_trials(deepcopy=False)) == 1


def aux_problem(**search_space):
    """The tiny space with `sum` auxiliary and searched (`aux.sum`), batch size a choice, and
    strategies and schedules searched."""
    raw = copy.deepcopy(TINY_SPACE)
    raw["tasks"] = ["left", "right", {"name": "sum", "role": "auxiliary"}]
    raw["search_space"].update(
        {
            "auxiliary": "search",
            "strategies": ["none", "great"],
            "great": {"lam": {"low": 0.01, "high": 1.0, "log": True}},
            "schedules": ["all", "round_robin"],
            **search_space,
        }
    )
    raw["search_space"]["training"]["batch_size"] = [32, 64]
    problem, _ = mtlsearch.load(raw)
    return problem


def test_warm_params_fix_the_baseline_settings_and_include_every_auxiliary_task():
    problem = aux_problem()
    assert problem.auxiliary_names == ["sum"]
    # left and right help each other, sum is apart: {left,right} {sum}
    matrix = [[0.0, 0.5, -0.5], [0.5, 0.0, -0.5], [-0.5, -0.5, 0.0]]
    found = proposals(matrix, problem.task_names, 2, problem.backbone.block_names, source="cosine")
    assert found[0].label == "affinity cosine k=2 split@2: {left,right} {sum}"
    params = warm_params(problem, found[0].params)
    assert params == {
        "family": "tree",
        **found[0].params,
        "weighting": "equal",
        "strategy": "none",
        "schedule": "all",
        "training.batch_size": 32,  # a fixed setting (epochs, optimizer) is no trial parameter
        "training.lr": pytest.approx(10**-2.5),
        "aux.sum": True,
    }
    # they replay exactly: every parameter the space asks for, none that it does not
    trial = FixedTrial(params)
    candidate = problem.sample(trial)
    assert trial.params == params
    assert candidate.task_names == ["left", "right", "sum"]
    assert candidate.strategy is None and candidate.schedule is None
    assert candidate.training == {**problem.baseline_training()}
    sharing = problem.replay(params).architecture.sharing(problem.backbone.block_names)
    assert [len(groups) for groups in sharing] == [1, 1, 2]


def test_warm_params_leave_a_weighting_the_space_does_not_list_to_the_sampler():
    problem = aux_problem(weightings=["static"], strategies=["great"], schedules=["round_robin"])
    matrix = [[0.0, 0.5, -0.5], [0.5, 0.0, -0.5], [-0.5, -0.5, 0.0]]
    found = proposals(matrix, problem.task_names, 2, problem.backbone.block_names)
    params = warm_params(problem, found[0].params)
    assert params == {
        "family": "tree",
        **found[0].params,
        "training.batch_size": 32,
        "training.lr": pytest.approx(10**-2.5),
        "aux.sum": True,
    }


def test_warm_start_needs_the_tree_family(tmp_path):
    problem, run = mtlsearch.load(space(tmp_path, families=("hard_sharing",), warm_start="affinity"))
    with pytest.raises(ConfigError) as err:
        mtlsearch.run_search(problem, run)
    assert str(err.value) == (
        "run.warm_start: `affinity` enqueues trees of the `tree` family, which search_space.families does not "
        "list (it lists: hard_sharing); add `tree` there, or use warm_start: none"
    )
    assert not (tmp_path / "ws.db").exists() or not optuna.get_all_study_summaries(f"sqlite:///{tmp_path}/ws.db")


def test_bad_warm_start_values_are_refused():
    with pytest.raises(ConfigError) as err:
        RunConfig(warm_start="tag")
    assert str(err.value) == (
        "run.warm_start: unknown warm start `tag`; choose one of: none, affinity (enqueue the trees that task "
        "affinity proposes as the study's first trials)"
    )
    with pytest.raises(ConfigError) as err:
        RunConfig.parse({"warm_start": True})  # what YAML makes of `warm_start: yes`
    assert str(err.value).startswith(
        "run.warm_start: unknown warm start True (YAML reads an unquoted yes, no, on or off as a boolean); choose"
    )
    assert RunConfig.parse({"warm_start": "affinity"}).warm_start == "affinity"
    assert parser().parse_args(["run", "s.yaml", "--warm-start", "affinity"]).warm_start == "affinity"
    assert parser().parse_args(["run", "s.yaml"]).warm_start is None
    with pytest.raises(SystemExit):
        parser().parse_args(["run", "s.yaml", "--warm-start", "tag"])


@pytest.mark.slow
@pytest.mark.process
def test_the_ray_backend_runs_the_warm_start_trials_first(tmp_path, monkeypatch, ray_address):
    # the Ray searcher asks the study for each trial, and study.ask() hands out queued trials first
    from mtlsearch.search._ray_backend import run_ray

    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    problem, run = mtlsearch.load(space(tmp_path, n_trials=3, warm_start="affinity", save_weights=False))
    study = run_ray(problem, run, Recorder(), address=ray_address, cpus_per_trial=1, max_concurrent=1)
    trials = sorted(study.trials, key=lambda t: t.number)
    labels = [p["label"] for p in study_record(study).warm_start["proposals"]]
    assert [t.user_attrs.get("warm_start") for t in trials] == [*labels, None]
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    assert trials[0].params["family"] == "tree"
