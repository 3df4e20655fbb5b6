"""Single-task baselines: tuned over the training space (the default), default settings on
several seeds, stored with their settings and spread, reused on resume, and used by `train`."""

from __future__ import annotations

import io
import json
import statistics

import optuna
import pytest
import torch
import yaml

import mtlsearch
from mtlsearch.cli import main
from mtlsearch.errors import ConfigError, MTLSearchError
from mtlsearch.scoring import mean_interval
from mtlsearch.search import results
from mtlsearch.search._baselines import train_single_task, tuning_score
from mtlsearch.training import evaluate


def test_tuning_score_is_the_signed_relative_change_and_absolute_at_zero():
    directions = {"accuracy": "max", "mae": "min"}
    # accuracy +0.1 / 0.5 = +0.2; mae -(3 - 2) / 2 = -0.5; mean -0.15
    assert tuning_score({"accuracy": 0.6, "mae": 3.0}, {"accuracy": 0.5, "mae": 2.0}, directions) == pytest.approx(-0.15)
    assert tuning_score({"accuracy": 0.25}, {"accuracy": 0.0}, {"accuracy": "max"}) == pytest.approx(0.25)


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    """A study whose baselines are tuned over 3 training settings, then trained on 2 seeds."""
    from conftest import TINY_SPACE

    space = json.loads(json.dumps(TINY_SPACE))
    space["baselines"] = {"kind": "tuned", "tune_trials": 3, "seeds": 2}
    space["search_space"]["families"] = ["single_task"]
    del space["search_space"]["tree"]
    problem, _ = mtlsearch.load(space)
    study = problem.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    out = io.StringIO()
    progress = mtlsearch.Progress("normal", stream=out)
    values = mtlsearch.ensure_baselines(study, problem, seed=7, device="cpu", progress=progress, sampler="random")
    return problem, study, values, out.getvalue()


@pytest.mark.slow
def test_tuned_baselines_are_stored_with_settings_spread_and_tuning(tuned):
    problem, study, values, printed = tuned
    record = study.user_attrs["mtlsearch.baselines"]
    assert record["source"] == "tuned" and record["tune_trials"] == 3 and record["seeds"] == [7, 8]
    assert set(record["training"]) == set(record["tuning"]) == set(record["spread"]) == {"left", "right", "sum"}
    default_lr = problem.baseline_training()["lr"]
    for task in problem.tasks:
        tried = record["tuning"][task.name]
        assert len(tried) == 3 and tried[0]["settings"]["lr"] == pytest.approx(default_lr)  # default settings first
        assert tried[0]["score"] == 0.0  # the reference of the others
        best = max((t for t in tried if "score" in t and not t.get("repeat")), key=lambda t: t["score"])
        assert record["training"][task.name] == best["settings"]
        # the value is the mean of the chosen settings' runs on seeds 7 (the tuning run) and 8
        again = train_single_task(problem, task, 8, torch.device("cpu"), best["settings"])
        second = evaluate(again, [task], problem.data.val, torch.device("cpu"))[task.name]
        for metric, value in values[task.name].items():
            runs = [best["metrics"][metric], second[metric]]
            assert value == pytest.approx(statistics.fmean(runs))
            assert record["spread"][task.name][metric] == pytest.approx(statistics.stdev(runs))
    assert printed.count("tuning over 3 training settings, then 2 seed(s)") == 3
    assert "±" in printed


@pytest.mark.slow
def test_stored_baselines_are_reused_not_trained_again(tuned):
    problem, study, values, _ = tuned
    out = io.StringIO()
    again = mtlsearch.ensure_baselines(study, problem, seed=7, device="cpu", progress=mtlsearch.Progress("normal", out))
    assert again == values and out.getvalue() == ""


def test_default_baselines_on_two_seeds_are_the_mean(tiny_space):
    tiny_space["baselines"] = {"kind": "default", "seeds": 2}
    tiny_space["tasks"] = ["left", "right"]
    problem, _ = mtlsearch.load(tiny_space)
    study = problem.create_study()
    values = mtlsearch.ensure_baselines(study, problem, seed=3, device="cpu")
    record = study.user_attrs["mtlsearch.baselines"]
    assert record["source"] == "default" and record["seeds"] == [3, 4] and "tuning" not in record
    task = problem.tasks[0]
    runs = [evaluate(train_single_task(problem, task, s, torch.device("cpu")), [task], problem.data.val, torch.device("cpu"))["left"] for s in (3, 4)]
    assert values["left"]["accuracy"] == pytest.approx(statistics.fmean(r["accuracy"] for r in runs))
    assert record["training"]["left"] == problem.baseline_training()


def test_a_training_section_with_nothing_searched_skips_the_tuning(tiny_space):
    tiny_space["search_space"]["training"]["lr"] = 0.003
    tiny_space["baselines"] = {"kind": "tuned", "tune_trials": 5, "seeds": 1}
    tiny_space["tasks"] = ["left", "right"]
    problem, _ = mtlsearch.load(tiny_space)
    out = io.StringIO()
    study = problem.create_study()
    mtlsearch.ensure_baselines(study, problem, device="cpu", progress=mtlsearch.Progress("normal", out))
    assert study.user_attrs["mtlsearch.baselines"]["source"] == "default"
    assert "default settings, 1 seed(s)" in out.getvalue() and "tuning" not in out.getvalue()


def test_repeated_settings_are_not_trained_again_and_diverging_ones_are_skipped(tiny_space):
    tiny_space["search_space"]["training"].update(optimizer="sgd", lr=[0.01, 1.0e30])
    tiny_space["baselines"] = {"kind": "tuned", "tune_trials": 6, "seeds": 1}
    tiny_space["tasks"] = ["left", "right"]
    problem, _ = mtlsearch.load(tiny_space)
    study = problem.create_study()
    mtlsearch.ensure_baselines(study, problem, device="cpu", sampler="random")
    tried = study.user_attrs["mtlsearch.baselines"]["tuning"]["left"]
    assert len(tried) == 6
    assert sum(1 for t in tried if not t.get("repeat")) <= 2  # two distinct settings: at most two trainings
    assert all("became" in t["failed"] for t in tried if t["settings"]["lr"] == 1.0e30)
    assert study.user_attrs["mtlsearch.baselines"]["training"]["left"]["lr"] == 0.01


def test_every_diverging_tuning_run_is_a_clear_error(tiny_space):
    tiny_space["search_space"]["training"].update(optimizer="sgd", lr=[1.0e30, 1.0e31])
    tiny_space["baselines"] = {"kind": "tuned", "tune_trials": 2, "seeds": 1}
    tiny_space["tasks"] = ["left", "right"]
    problem, _ = mtlsearch.load(tiny_space)
    study = problem.create_study()
    with pytest.raises(MTLSearchError, match=r"^baselines: every tuning run of task `left` diverged \(loss of task"):
        mtlsearch.ensure_baselines(study, problem, device="cpu", sampler="random")
    assert "mtlsearch.baselines" not in study.user_attrs  # nothing half-written


@pytest.mark.slow
def test_train_retrains_single_task_networks_with_the_tuned_settings(tmp_path, monkeypatch, capsys):
    from conftest import TINY_SPACE

    monkeypatch.chdir(tmp_path)
    space = json.loads(json.dumps(TINY_SPACE))
    space["baselines"] = {"kind": "tuned", "tune_trials": 3, "seeds": 1}
    space["tasks"] = ["left", "sum"]
    space["run"].update(n_trials=2, storage=f"sqlite:///{tmp_path}/b.db", study="b", sampler="random")
    (tmp_path / "space.yaml").write_text(yaml.safe_dump(space))
    assert main(["run", "space.yaml", "--quiet"]) == 0
    assert main(["report", "b", "--storage", f"sqlite:///{tmp_path}/b.db"]) == 0
    assert "single-task baselines (tuned over the training space (3 trials per task), mean of seeds [0]" in capsys.readouterr().out
    assert main(["export", "b", "--storage", f"sqlite:///{tmp_path}/b.db", "-o", "best.yaml"]) == 0
    exported = yaml.safe_load((tmp_path / "best.yaml").read_text())
    tuned_settings = exported["provenance"]["baselines"]["training"]
    capsys.readouterr()
    assert main(["train", "best.yaml", "--seeds", "2", "--json"]) == 0
    result = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert result["baseline_training"] == tuned_settings
    assert main(["train", "best.yaml", "--seeds", "2"]) == 0
    printed = capsys.readouterr().out
    assert "95 % interval of Delta-MTL" in printed and "delta left %" in printed

    # a hand-edited export with a bad baseline setting is refused, naming it
    exported["provenance"]["baselines"]["training"]["left"]["lr"] = -1
    with pytest.raises(ConfigError, match=r"^provenance\.baselines\.training\.left\.lr: expected a number > 0, found -1"):
        results.retrain(exported, [0], "cpu")


def test_delta_mtl_counts_primary_metrics_by_default_and_the_chosen_convention(tiny_space):
    tiny_space["tasks"] = [{"name": "left", "metrics": ["accuracy", "cross_entropy"]}, "sum"]
    problem, _ = mtlsearch.load(tiny_space)
    # accuracy is classification's primary metric: cross-entropy is recorded, not counted
    assert problem.delta_directions == {"left": {"accuracy": "max"}, "sum": {"mae": "min"}}
    assert problem.metric_directions["left"] == {"accuracy": "max", "cross_entropy": "min"}

    tiny_space["delta_mtl"] = {"average": "metric", "metrics": {"left": ["accuracy", "cross_entropy"]}}
    tiny_space["baselines"] = {"left": {"accuracy": 0.5, "cross_entropy": 1.0}, "sum": {"mae": 4.0}}
    problem, _ = mtlsearch.load(tiny_space)
    assert problem.delta_average == "metric"
    study = problem.create_study()
    study.enqueue_trial({"family": "hard_sharing", "weighting": "equal", "training.lr": 0.003})
    study.optimize(mtlsearch.Objective(problem, device="cpu"), n_trials=1)
    trial = study.trials[0]
    m = trial.user_attrs["val_metrics"]
    terms = [
        (m["left"]["accuracy"] - 0.5) / 0.5 * 100,
        -(m["left"]["cross_entropy"] - 1.0) / 1.0 * 100,
        -(m["sum"]["mae"] - 4.0) / 4.0 * 100,
    ]
    assert trial.user_attrs["delta_mtl"] == pytest.approx(sum(terms) / 3)  # every metric equally
    assert trial.values[0] == pytest.approx(sum(terms) / 3)


def test_report_warns_when_a_single_task_candidate_beats_its_baselines_spread():
    from optuna.distributions import CategoricalDistribution
    from optuna.trial import TrialState, create_trial

    study = optuna.create_study(directions=["maximize", "minimize"])
    baselines = {
        "source": "tuned",
        "values": {"a": {"accuracy": 0.80}, "b": {"mae": 1.0}},
        "spread": {"a": {"accuracy": 0.01}, "b": {"mae": 0.2}},
    }
    study.set_user_attr("mtlsearch.baselines", baselines)

    def single_task(accuracy, mae, architecture=None):
        return create_trial(
            state=TrialState.COMPLETE,
            values=[0.0, 10],
            params={"family": "single_task"},
            distributions={"family": CategoricalDistribution(["single_task"])},
            user_attrs={
                "architecture": architecture or {"family": "single_task"},
                "val_metrics": {"a": {"accuracy": accuracy}, "b": {"mae": mae}},
                "delta_mtl": 0.0,
                "params": 10,
                "macs": 1,
            },
        )

    study.add_trial(single_task(0.81, 0.7))  # within 2 spreads on both tasks (0.01 <= 0.02; 0.3 <= 0.4)
    assert results.report(study)["warnings"] == []
    study.add_trial(single_task(0.85, 1.5))  # accuracy 0.05 above: 5 spreads; a worse mae is not a warning
    (warning,) = results.report(study)["warnings"]
    assert warning == (
        "1 candidate(s) of separate single-task networks beat the `a` baseline on accuracy by more than 2 of its seed "
        "spreads (best: trial #1, 0.85 over 1 seed(s) vs 0.8 ± 0.01): the baselines look under-tuned, so Delta-MTL "
        "flatters every candidate; raise baselines.tune_trials or seeds"
    )
    assert f"warning: {warning}" in results.format_report(results.report(study))
    # a tree split into one branch per task at every block is the same networks; one that shares a block is not
    shared = {"family": "tree", "sharing": [[["a", "b"]], [["a"], ["b"]]]}
    study.add_trial(single_task(0.95, 1.0, shared))
    split = {"family": "tree", "sharing": [[["a"], ["b"]], [["a"], ["b"]]]}
    study.add_trial(single_task(0.90, 1.0, split))
    (warning,) = results.report(study)["warnings"]
    assert warning.startswith("2 candidate(s) of separate single-task networks beat the `a` baseline")
    assert "(best: trial #3, 0.9 over 1 seed(s)" in warning
    baselines.pop("spread")
    study.set_user_attr("mtlsearch.baselines", baselines)  # one seed: no spread, no judgement
    assert results.report(study)["warnings"] == []


def test_the_retrain_verdict_needs_a_spread():
    """Two seeds that give the same Delta-MTL make a zero-width interval: the verdict says it
    measures no noise instead of calling the candidate better; a real spread gets the usual one."""

    def result(deltas):
        interval = mean_interval(deltas)
        return {
            "seeds": list(range(len(deltas))),
            "test_metrics": {"a": {"mae": {"mean": 1.0, "std": 0.0}}},
            "task_delta": {"a": interval},
            "delta_mtl": interval,
        }

    same = results.format_retrain(result([2.5, 2.5]))
    assert "the 2 seeds gave the same Delta-MTL, so the interval has zero width and measures no noise" in same
    assert "excludes 0" not in same
    assert "excludes 0: the candidate is better" in results.format_retrain(result([2.5, 2.6, 2.55]))
    assert "includes 0" in results.format_retrain(result([2.5, -2.6, 0.1]))
