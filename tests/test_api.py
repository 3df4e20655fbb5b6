"""The Python API as an Optuna user meets it: a study made by the problem, baselines as an
explicit step, a NaN trial that fails without ``catch``, resume from Python, models rebuilt
without loading data and without touching the caller's random state."""

from __future__ import annotations

import io

import optuna
import pytest
import torch
from optuna.trial import TrialState

import mtlsearch
from mtlsearch.search import results


@pytest.mark.slow
def test_native_optuna_flow(tiny_problem):
    study = tiny_problem.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    assert study.metric_names == ["delta_mtl", "params"]
    assert [d.name.lower() for d in study.directions] == ["maximize", "minimize"]

    out = io.StringIO()
    progress = mtlsearch.Progress("normal", stream=out)
    baselines = mtlsearch.ensure_baselines(study, tiny_problem, seed=0, device="cpu", progress=progress)
    assert set(baselines) == {"left", "right", "sum"}
    assert out.getvalue().count("baseline 1/3: single-task") == 1

    # a second objective on the same study reads the stored baselines: nothing is trained again
    study.enqueue_trial({"family": "hard_sharing", "weighting": "equal", "training.lr": 1.0e30})
    study.optimize(mtlsearch.Objective(tiny_problem, device="cpu", progress=progress), n_trials=2)  # no catch=
    assert out.getvalue().count("baseline 1/3: single-task") == 1
    failed, ok = study.trials
    assert failed.state == TrialState.FAIL and "became" in failed.user_attrs["fail_reason"]
    assert ok.state == TrialState.COMPLETE


def test_build_model_leaves_the_callers_random_state_alone(tiny_problem):
    params = {"family": "hard_sharing", "weighting": "equal", "training.lr": 1e-3}
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    a = mtlsearch.build_model(tiny_problem, params, seed=5)
    assert torch.equal(torch.rand(3), expected)
    b = mtlsearch.build_model(tiny_problem, params, seed=5)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    with pytest.raises(TypeError, match=r"for an exported config use mtlsearch.load_exported\(path\)"):
        mtlsearch.build_model("best.yaml", None)


@pytest.mark.slow
def test_resume_export_and_rebuild_from_python(tiny_space, tmp_path, monkeypatch):
    tiny_space["run"].update(n_trials=2, storage=f"sqlite:///{tmp_path}/api.db", study="api", sampler="random")
    problem, run = mtlsearch.load(tiny_space)
    mtlsearch.run_search(problem, run)
    study = mtlsearch.resume("api", run.storage, n_trials=3)
    assert len([t for t in study.trials if t.state.is_finished()]) == 3

    # export and rebuild read the stored signature: no dataset is loaded
    def no_data(space):
        raise AssertionError("the data was loaded")

    monkeypatch.setattr("mtlsearch.problem.load_data", no_data)
    trial = results.pick(study, "delta")
    config = results.export_config(study, trial, run.storage)
    assert config["signature"]["input_shape"] == [1, 8, 16]
    model = mtlsearch.load_exported(config)
    assert sum(p.numel() for p in model.parameters()) == trial.user_attrs["params"]
