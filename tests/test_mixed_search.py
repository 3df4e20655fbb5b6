"""A mixed-family study from the CLI: every family trains in one study, the front mixes families,
each family's winner exports and retrains; cost objectives and constraints."""

from __future__ import annotations

import copy
import json

import optuna
import pytest
import yaml

import mtlsearch
from mtlsearch.cli import main
from mtlsearch.families import FAMILIES
from mtlsearch.search import results
from mtlsearch.search._study import open_study

from conftest import TINY_SPACE


def mixed_space() -> dict:
    space = copy.deepcopy(TINY_SPACE)
    space["name"] = "mix"
    space["data"].update(n_train=128, n_val=48, n_test=48)
    space["backbone"] = {"name": "mlp", "width": 16, "depth": 3}
    space["search_space"] = {
        "families": FAMILIES.names(),
        "adashare_learned": {"warmup_epochs": 1, "policy_epochs": 1},
        "weightings": ["equal"],
        "training": {"epochs": 1, "batch_size": 64, "optimizer": "adam", "lr": 3.0e-3},
    }
    space["constraints"] = {"max_latency_ms": 1000.0}
    space["run"] = {"study": "mix", "seed": 0, "device": "cpu"}
    return space


def problem_directions(study) -> list[str]:
    return [d.name.lower() for d in study.directions]


def dominates(a, b, signs) -> bool:
    a, b = [s * v for s, v in zip(signs, a)], [s * v for s, v in zip(signs, b)]
    return all(x <= y for x, y in zip(a, b)) and any(x < y for x, y in zip(a, b))


def start_with_each_family(space: dict, storage: str, families) -> None:
    """Create the study and queue one trial per family, so every family is trained."""
    problem, run = mtlsearch.load(space)
    study = open_study(problem.space, run.replace(storage=storage), problem.directions)
    for family in families:
        study.enqueue_trial({"family": family})


@pytest.mark.slow
def test_mixed_family_search_from_the_cli_exports_and_retrains_each_winner(tmp_path, capsys):
    space = mixed_space()
    path = tmp_path / "mixed.yaml"
    path.write_text(yaml.safe_dump(space))
    storage = f"sqlite:///{tmp_path}/mixed.db"
    families = FAMILIES.names()
    start_with_each_family(space, storage, families)
    assert main(["run", str(path), "--storage", storage, "--n-trials", str(len(families)), "--quiet"]) == 0

    study = results.load("mix", storage)
    trained = {t.user_attrs["architecture"]["family"] for t in results.complete_trials(study)}
    assert trained == set(families)
    for t in results.complete_trials(study):
        a = t.user_attrs
        assert a["latency_ms"] > 0 and a["params"] > 0 and a["macs"] > 0
        assert a["architecture"]["description"], a["architecture"]["family"]
        assert t.constraints["max_latency_ms"] == pytest.approx(a["latency_ms"] / 1000.0 - 1.0)
    # one front over every family: each trial off it is dominated by a trial of the front,
    # whatever its family (which families win depends on the run; examples/mixed_search.py shows it)
    front = results.front(study)
    front_families = {t.user_attrs["architecture"]["family"] for t in front}
    signs = [1 if d == "minimize" else -1 for d in problem_directions(study)]
    for t in results.complete_trials(study):
        if t not in front:
            assert any(dominates(f.values, t.values, signs) for f in front), t.number

    capsys.readouterr()
    assert main(["report", "mix", "--storage", storage]) == 0
    shown = capsys.readouterr().out
    assert "families on it: " + ", ".join(sorted(front_families)) in shown
    assert "architectures on the front:" in shown

    for family in families:
        out = tmp_path / f"{family}.yaml"
        assert main(["export", "mix", "--storage", storage, "--family", family, "-o", str(out)]) == 0
        exported = yaml.safe_load(out.read_text())
        assert exported["architecture"]["family"] == family
        assert ("learned" in exported) == FAMILIES.get(family).learned
        capsys.readouterr()
        assert main(["train", str(out), "--seeds", "1", "--no-baselines", "--json"]) == 0
        result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert set(result["test_metrics"]) == {"left", "right", "sum"}, family


def test_export_of_a_family_the_study_did_not_search_is_refused(tmp_path, capsys):
    space = mixed_space()
    space["search_space"]["families"] = ["hard_sharing", "routing"]
    del space["search_space"]["adashare_learned"]
    storage = f"sqlite:///{tmp_path}/two.db"
    path = tmp_path / "two.yaml"
    path.write_text(yaml.safe_dump(space))
    assert main(["run", str(path), "--storage", storage, "--n-trials", "2", "--quiet"]) == 0
    capsys.readouterr()
    assert main(["export", "mix", "--storage", storage, "--family", "mmoe", "-o", str(tmp_path / "x.yaml")]) == 2
    assert capsys.readouterr().err.strip() == (
        "mtlsearch export: error: --family: study `mix` did not search family `mmoe`; it searched: hard_sharing, routing"
    )


def test_infeasible_candidates_are_pruned_untrained_and_never_on_the_front(tmp_path):
    space = mixed_space()
    space["search_space"]["families"] = ["single_task", "hard_sharing"]
    del space["search_space"]["adashare_learned"]
    space["objectives"] = ["delta_mtl", "latency_ms"]
    problem, _ = mtlsearch.load(space)
    hard = problem.replay({"family": "hard_sharing", "weighting": "equal"}).build_model(0)
    bound = int(mtlsearch.scoring.count_params(hard) * 1.5)  # single-task (3 trunks) is over it
    space["constraints"] = {"max_params": bound}
    storage = f"sqlite:///{tmp_path}/c.db"
    start_with_each_family(space, storage, ["single_task", "hard_sharing"])
    problem, run = mtlsearch.load(space)
    study = mtlsearch.run_search(problem, run.replace(storage=storage, n_trials=2))

    by_family = {t.params["family"]: t for t in study.trials}
    pruned, kept = by_family["single_task"], by_family["hard_sharing"]
    assert pruned.state == optuna.trial.TrialState.PRUNED
    assert pruned.user_attrs["pruned_reason"] == f"infeasible: params {pruned.user_attrs['params']} > max_params {bound}"
    assert pruned.constraints["max_params"] > 0 and "val_metrics" not in pruned.user_attrs
    assert kept.state == optuna.trial.TrialState.COMPLETE and kept.constraints["max_params"] <= 0
    assert kept.values[1] == kept.user_attrs["latency_ms"]
    assert [t.number for t in results.front(study)] == [kept.number]


@pytest.mark.parametrize("constraints, message", [
    ({"max_params": 0}, "constraints.max_params: expected an integer >= 1, found 0"),
    ({"max_latency_ms": -1}, "constraints.max_latency_ms: expected a number > 0, found -1"),
    ({"max_flops": 10}, "constraints.max_flops: unknown key; allowed keys are: max_params, max_macs, max_latency_ms (did you mean `max_params`?)"),
])
def test_bad_constraints_are_named(constraints, message):
    space = mixed_space()
    space["constraints"] = constraints
    with pytest.raises(mtlsearch.ConfigError) as err:
        mtlsearch.load(space)
    assert str(err.value) == message
