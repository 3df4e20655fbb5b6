"""``run.seeds_per_trial``: a per-trial feature written once (search/trial.py) that both backends
run. Each candidate trains on k seeds; its score is the mean, and every seed's score is the one
a separate training run with that seed gives."""

from __future__ import annotations

import copy
import math
import statistics

import pytest
from conftest import TINY_SPACE
from optuna.trial import TrialState

import mtlsearch
from mtlsearch.scoring import delta_mtl
from mtlsearch.search._trial import trial_seeds
from mtlsearch.training import evaluate, resolve_device, train


def check_seed_records(study, problem: mtlsearch.Problem, k: int, replay: bool = True) -> int:
    """Every complete trial of ``study`` trained on ``k`` seeds and scores their mean; with
    ``replay``, each seed's Delta-MTL is what training that seed alone gives. Returns the
    number of complete trials."""
    baselines = study.user_attrs["mtlsearch.baselines"]["values"]
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    for t in complete:
        a = t.user_attrs
        assert a["seeds"] == trial_seeds(a["seed"], k) and len(set(a["seeds"])) == k
        assert len(a["seed_delta_mtl"]) == k
        assert math.isclose(a["delta_mtl"], statistics.fmean(a["seed_delta_mtl"]), rel_tol=1e-9, abs_tol=1e-9)
        assert math.isclose(a["delta_mtl_std"], statistics.stdev(a["seed_delta_mtl"]), rel_tol=1e-9)
        assert math.isclose(t.values[0], a["delta_mtl"], rel_tol=1e-12)
        if replay:
            candidate = problem.replay(t.params, a.get("learned"))
            for seed, expected in zip(a["seeds"], a["seed_delta_mtl"]):
                model = candidate.build_model(seed)
                train(model, problem.tasks, candidate.new_weighting(), problem.data.train, candidate.training,
                      resolve_device("cpu"), seed)
                metrics = evaluate(model, problem.tasks, problem.data.val, resolve_device("cpu"))
                assert math.isclose(delta_mtl(metrics, baselines, problem.metric_directions), expected, rel_tol=1e-6,
                                    abs_tol=1e-6)
    return len(complete)


@pytest.mark.slow
def test_seeds_per_trial_on_the_optuna_backend(tmp_path):
    space = copy.deepcopy(TINY_SPACE)
    space["search_space"]["training"]["epochs"] = 2
    space["run"].update(n_trials=2, storage=f"sqlite:///{tmp_path}/s.db", study="seeds", sampler="random", seeds_per_trial=2)
    problem, run = mtlsearch.load(space)
    study = mtlsearch.run_search(problem, run)
    assert check_seed_records(study, problem, 2) == 2
    assert study.user_attrs["mtlsearch.run"]["seeds_per_trial"] == 2  # what workers and resume read
    assert not list((tmp_path / "s_artifacts" / "checkpoints").glob("*/*"))  # every seed's checkpoints cleared


def test_seeds_per_trial_is_checked():
    space = copy.deepcopy(TINY_SPACE)
    for bad, message in ((0, "expected an integer >= 1, found 0"), (101, "expected at most 100"), ("2", 'found the string "2"')):
        space["run"]["seeds_per_trial"] = bad
        with pytest.raises(mtlsearch.ConfigError, match=rf"^run\.seeds_per_trial: .*{message}"):
            mtlsearch.load(space)
