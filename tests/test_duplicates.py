"""Duplicate candidates: the same network trained the same way is one candidate. Its trials
pool as seeds of it (report, front, pick and export use the pooled mean), not as new candidates."""

from __future__ import annotations

import copy

import optuna
import pytest
import yaml
from optuna.distributions import CategoricalDistribution
from optuna.trial import TrialState, create_trial

import mtlsearch
from mtlsearch.cli import main
from mtlsearch.search import results


@pytest.fixture(scope="module")
def problem():
    from conftest import TINY_SPACE

    space = copy.deepcopy(TINY_SPACE)
    space["search_space"]["training"]["lr"] = 0.003
    space["search_space"]["tree"] = {"max_groups": 3}
    return mtlsearch.load(space)[0]


def key(problem, **params):
    return problem.candidate({"weighting": "equal", **params}).key()


def tree(right, total):
    return {"family": "tree", **{f"tree.right.block{b}": right[b] for b in range(3)}} | {
        f"tree.sum.block{b}": total[b] for b in range(3)
    }


def test_equal_networks_have_one_key_whatever_their_labels_or_family(problem):
    split = key(problem, **tree([1, 1, 1], [2, 2, 2]))
    assert split == key(problem, **tree([2, 2, 2], [1, 1, 1]))  # labels swapped
    assert split == key(problem, family="single_task")  # every task split from the input
    assert key(problem, family="hard_sharing") == key(problem, **tree([0, 0, 0], [0, 0, 0]))
    assert key(problem, **tree([0, 1, 1], [0, 1, 1])) == key(problem, **tree([0, 2, 2], [0, 2, 2]))
    # a different network, weighting or training is another candidate
    assert key(problem, **tree([0, 1, 1], [0, 1, 1])) != key(problem, **tree([0, 1, 1], [0, 1, 2]))
    static = {"family": "hard_sharing", "weighting": "static"} | {f"static.weight.{t}": 1.0 for t in ("left", "right", "sum")}
    assert key(problem, family="hard_sharing") != problem.candidate(static).key()
    assert problem.candidate(static).key() != problem.candidate({**static, "static.weight.sum": 2.0}).key()


def complete(number_values, key, delta, seeds=None, params=None, metrics=None):
    attrs = {"candidate": key, "delta_mtl": delta, "params": 100, "macs": 10, "architecture": {"family": "f"}}
    if seeds:
        attrs.update(seeds=list(range(len(seeds))), seed_delta_mtl=seeds)
    if metrics:
        attrs["val_metrics"] = metrics
    return create_trial(
        state=TrialState.COMPLETE,
        values=number_values,
        params=params or {"family": "f"},
        distributions={"family": CategoricalDistribution(["f", "g"])},
        user_attrs=attrs,
    )


def test_pool_weights_each_trial_by_its_seeds_and_the_front_uses_the_pooled_values():
    study = optuna.create_study(directions=["maximize", "minimize"])
    # candidate a: one lucky seed (+30), then a trial of two seeds (0 and -6): pooled (30 + 0 - 6) / 3 = 8
    study.add_trial(complete([30.0, 100], "a", 30.0, metrics={"t": {"accuracy": 0.9}}))
    study.add_trial(complete([-3.0, 100], "a", -3.0, seeds=[0.0, -6.0], metrics={"t": {"accuracy": 0.6}}))
    # candidate b: one seed at +10, same cost: it dominates a once a is pooled
    study.add_trial(complete([10.0, 100], "b", 10.0))
    pooled = results.pool(results.complete_trials(study))
    a, b = pooled
    assert a.trials == (0, 1) and a.runs == (30.0, 0.0, -6.0)
    assert a.values == pytest.approx((8.0, 100.0)) and a.delta_mtl == pytest.approx(8.0)
    assert a.delta_std == pytest.approx(19.287, abs=1e-3)  # sqrt((22² + 8² + 14²) / 2)
    assert a.val_metrics == {"t": {"accuracy": pytest.approx((0.9 + 2 * 0.6) / 3)}}
    assert [p.trials for p in results.candidates(study)] == [(2,)]
    assert [t.number for t in results.front(study)] == [2]
    assert results.pick(study, "delta").number == 2  # not trial 0, the lucky seed
    row = results.report(study)["front"][0]
    assert row["trials"] == [2] and row["seeds"] == 1


def test_a_trial_without_a_key_is_its_own_candidate():
    study = optuna.create_study(directions=["maximize", "minimize"])
    study.add_trial(complete([1.0, 100], None, 1.0))
    study.add_trial(complete([2.0, 100], None, 2.0))
    assert [p.trials for p in results.pool(results.complete_trials(study))] == [(0,), (1,)]


@pytest.mark.slow
def test_a_candidate_sampled_again_trains_another_seed_and_is_pooled(tmp_path, monkeypatch, capsys):
    from conftest import TINY_SPACE

    monkeypatch.chdir(tmp_path)
    space = copy.deepcopy(TINY_SPACE)
    space["search_space"]["training"]["lr"] = 0.003
    space["run"].update(n_trials=3, storage=f"sqlite:///{tmp_path}/d.db", study="d")
    problem, run = mtlsearch.load(space)
    from mtlsearch.search._study import open_study

    study = open_study(problem.space, run, problem.directions)
    for params in ({"family": "hard_sharing"}, {"family": "single_task"}, {"family": "hard_sharing"}):
        study.enqueue_trial({**params, "weighting": "equal"})
    study = mtlsearch.run_search(problem, run)
    first, _, again = study.trials
    assert first.user_attrs["candidate"] == again.user_attrs["candidate"]
    assert first.user_attrs["seed"] != again.user_attrs["seed"]  # another seed of the same candidate
    deltas = [first.user_attrs["delta_mtl"], again.user_attrs["delta_mtl"]]
    assert main(["report", "d", "--storage", run.storage, "--json"]) == 0
    import json

    rows = {r["trial"]: r for r in json.loads(capsys.readouterr().out)["front"]}
    if 0 in rows:  # hard sharing is on the front (fewest parameters): shown once, pooled
        assert rows[0]["trials"] == [0, 2] and rows[0]["seeds"] == 2
        assert rows[0]["delta_mtl"] == pytest.approx(sum(deltas) / 2)
        assert 2 not in rows
    assert main(["export", "d", "--storage", run.storage, "--pick", "min-cost", "--min-delta", "-1000", "-o", "x.yaml"]) == 0
    exported = yaml.safe_load((tmp_path / "x.yaml").read_text())
    assert exported["provenance"]["candidate"]["trials"] == [0, 2]
    assert exported["provenance"]["candidate"]["delta_mtl"] == pytest.approx(sum(deltas) / 2)
