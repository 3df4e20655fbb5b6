"""End-to-end studies on real SQLite files: run, report, export -> rebuild, resume, failures."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import optuna
import pytest
import torch
import yaml

import mtlsearch
from mtlsearch.cli import main
from mtlsearch.config import RunConfig
from mtlsearch.search import results
from mtlsearch.search._optuna_backend import run_search
from mtlsearch.search._records import STUDY_PREFIX as ATTR

from conftest import TINY_SPACE


def run_config(tmp_path, **kw) -> RunConfig:
    base = dict(study="tiny", storage=f"sqlite:///{tmp_path}/s.db", n_trials=4, seed=0, device="cpu")
    base.update(kw)
    return RunConfig(**base)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A 4-trial study of the tiny space, run once per module for the tests that only read it."""
    problem, _ = mtlsearch.load(copy.deepcopy(TINY_SPACE))
    run = run_config(tmp_path_factory.mktemp("finished"))
    study = run_search(problem, run)
    return study, run


@pytest.fixture
def finished_copy(finished, tmp_path):
    """A copy of the finished study (its SQLite file and the artifacts beside it) for a test that
    adds trials to it; the shared one stays as it is."""
    _, run = finished
    source = Path(run.storage.removeprefix("sqlite:///"))
    shutil.copyfile(source, tmp_path / source.name)
    artifacts = source.parent / f"{source.stem}_artifacts"
    if artifacts.exists():
        shutil.copytree(artifacts, tmp_path / artifacts.name)
    run = run_config(tmp_path)
    return optuna.load_study(study_name=run.study, storage=run.storage), run


def test_study_stores_everything_plain_optuna_can_read(finished):
    study, run = finished
    loaded = optuna.load_study(study_name="tiny", storage=run.storage)
    trials = loaded.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert len(trials) == 4
    attrs = loaded.user_attrs
    assert attrs[ATTR + "objectives"] == ["delta_mtl", "params"]
    assert set(attrs[ATTR + "baselines"]["values"]) == {"left", "right", "sum"}
    assert attrs[ATTR + "data"]["sizes"] == {"train": 256, "val": 64, "test": 64}
    for t in trials:
        a = t.user_attrs
        assert set(a["val_metrics"]) == {"left", "right", "sum"}
        assert t.values[0] == pytest.approx(a["delta_mtl"]) and t.values[1] == a["params"]
        assert a["macs"] > 0 and a["seed"] == t.number
        assert a["architecture"]["family"] == t.params["family"]
        assert a["weights_artifact"]
    # the front is non-dominated and sorted by Delta-MTL
    data = results.report(loaded)
    deltas = [r["delta_mtl"] for r in data["front"]]
    assert deltas == sorted(deltas, reverse=True) and len(deltas) >= 1


def test_export_rebuilds_the_exact_model_and_weights(finished, tmp_path):
    study, run = finished
    trial = results.pick(study, "delta")
    config = results.export_config(study, trial, run.storage)
    path = tmp_path / "best.yaml"
    results.write_yaml(config, path)
    weights = tmp_path / "best.pt"
    results.save_weights(study, trial, weights)

    model = mtlsearch.load_exported(path)
    state = torch.load(weights, weights_only=True)
    assert list(model.state_dict()) == list(state)
    assert sum(p.numel() for p in model.parameters()) == trial.user_attrs["params"]
    model.load_state_dict(state)
    model.eval()
    # the trained weights reproduce the trial's validation metrics exactly
    problem = mtlsearch.Problem(mtlsearch.SearchSpace.parse(yaml.safe_load(path.read_text())["space"]))
    from mtlsearch.training import evaluate

    metrics = evaluate(model, problem.tasks, problem.data.val, torch.device("cpu"))
    for task, values in trial.user_attrs["val_metrics"].items():
        assert metrics[task] == pytest.approx(values, rel=1e-6)
    # two rebuilds with the trial's weights give identical outputs
    again = mtlsearch.load_exported(yaml.safe_load(path.read_text()))
    again.load_state_dict(state)
    again.eval()
    x = problem.data.test.inputs[:16]
    out1, out2 = model(x), again(x)
    assert all(torch.equal(out1[t], out2[t]) for t in out1)


def test_build_model_from_trial_and_from_dict_agree(finished, tiny_problem):
    study, _ = finished
    frozen = study.trials[0]
    a = mtlsearch.build_model(tiny_problem, frozen, seed=3)
    b = mtlsearch.build_model(tiny_problem, dict(frozen.params), seed=3)
    assert [(n, p.shape) for n, p in a.named_parameters()] == [(n, p.shape) for n, p in b.named_parameters()]
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


def test_resume_keeps_counting_and_does_not_repeat_configurations(finished_copy, tiny_problem):
    study, run = finished_copy
    first = [dict(t.params) for t in study.trials]
    study = run_search(tiny_problem, run.replace(n_trials=7))
    assert [t.number for t in study.trials] == list(range(7))
    params = [dict(t.params) for t in study.trials]
    assert params[:4] == first
    # lr is continuous: a repeated configuration would mean the sampler replayed its seed
    assert len({json.dumps(p, sort_keys=True) for p in params}) == 7
    # at the target already: nothing more runs
    assert len(run_search(tiny_problem, run.replace(n_trials=7)).trials) == 7


def test_continuing_with_another_space_or_objectives_is_refused(finished, tiny_space):
    _, run = finished
    tiny_space["search_space"]["training"]["epochs"] = 2
    problem, _ = mtlsearch.load(tiny_space)
    with pytest.raises(mtlsearch.StudyMismatchError, match=r"was created with a different search space \(first difference at `search_space\.training\.epochs`\)"):
        run_search(problem, run)
    tiny_space["search_space"]["training"]["epochs"] = 1
    tiny_space["objectives"] = ["delta_mtl", "macs"]
    problem, _ = mtlsearch.load(tiny_space)
    with pytest.raises(mtlsearch.StudyMismatchError, match=r"optimises \['delta_mtl', 'params'\] \(maximize, minimize\), but this space asks for \['delta_mtl', 'macs'\]"):
        run_search(problem, run)
    # nothing stored was lost
    assert len(optuna.load_study(study_name="tiny", storage=run.storage).trials) == 4


def test_a_nan_trial_fails_alone(tmp_path, tiny_space):
    tiny_space["search_space"]["families"] = ["hard_sharing"]
    del tiny_space["search_space"]["tree"]
    tiny_space["search_space"]["weightings"] = ["equal"]
    tiny_space["search_space"]["training"].update(optimizer="sgd", lr=[0.01, 1.0e30])
    problem, _ = mtlsearch.load(tiny_space)
    run = run_config(tmp_path, n_trials=3)
    from mtlsearch.search._study import open_study

    study = open_study(problem.space, run, problem.directions)
    for lr in (0.01, 1.0e30, 0.01):  # the bad trial in the middle: the study must go on after it
        study.enqueue_trial({"family": "hard_sharing", "weighting": "equal", "training.lr": lr})
    study = run_search(problem, run)
    states = [t.state for t in study.trials]
    assert states.count(optuna.trial.TrialState.FAIL) == 1 and states.count(optuna.trial.TrialState.COMPLETE) == 2
    failed = study.trials[1]
    assert failed.state == optuna.trial.TrialState.FAIL
    assert failed.params["training.lr"] == 1.0e30
    assert failed.user_attrs["fail_reason"].startswith("loss of task `")
    assert "in epoch 1 (lr = 1e+30, optimizer = sgd)" in failed.user_attrs["fail_reason"]


def test_plugin_objective_in_the_users_own_study(tiny_problem):
    study = optuna.create_study(directions=tiny_problem.directions, sampler=optuna.samplers.RandomSampler(seed=1))
    study.optimize(mtlsearch.Objective(tiny_problem, device="cpu"), n_trials=2)
    assert len(study.best_trials) >= 1
    assert set(study.user_attrs[ATTR + "baselines"]["values"]) == {"left", "right", "sum"}
    model = mtlsearch.build_model(tiny_problem, study.trials[0])
    assert set(model(torch.zeros(2, 1, 8, 16))) == {"left", "right", "sum"}


def test_cli_run_resume_report_export_train(tmp_path, tiny_space, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    tiny_space["run"]["n_trials"] = 2
    (tmp_path / "space.yaml").write_text(yaml.safe_dump(tiny_space))
    storage = "sqlite:///cli.db"
    assert main(["run", "space.yaml", "--study", "c", "--storage", storage, "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "Pareto front" in out and "Delta-MTL %" in out
    assert main(["resume", "c", "--storage", storage, "--n-trials", "3", "--json"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [e["finished"] for e in lines if e["event"] == "trial"] == [3]
    assert lines[-1]["event"] == "result" and lines[-1]["trials"]["complete"] == 3
    assert main(["report", "c", "--storage", storage, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["objectives"] == ["delta_mtl", "params"]
    assert main(["export", "c", "--storage", storage, "--pick", "min-cost", "--min-delta", "-1000", "-o", "best.yaml", "--weights", "best.pt"]) == 0
    assert "exported --pick min-cost" in capsys.readouterr().out
    exported = yaml.safe_load((tmp_path / "best.yaml").read_text())
    assert exported["provenance"]["params"] == min(r["params"] for r in report["front"])
    assert main(["train", "best.yaml", "--seeds", "2", "--json"]) == 0
    result = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert result["seeds"] == [0, 1] and set(result["test_metrics"]) == {"left", "right", "sum"}
    assert set(result["delta_mtl"]) == {"mean", "std", "low", "high"}
    assert result["delta_mtl"]["low"] < result["delta_mtl"]["mean"] < result["delta_mtl"]["high"]
    assert set(result["task_delta"]) == {"left", "right", "sum"}
    assert result["baseline_training"]["left"] == {"epochs": 1, "batch_size": 64, "optimizer": "adam", "lr": pytest.approx(0.1 ** 2.5), "weight_decay": 0.0}


def test_cli_errors_are_one_clear_line(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    optuna.create_study(study_name="other", storage="sqlite:///x.db")
    assert main(["report", "nope", "--storage", "sqlite:///x.db"]) == 2
    assert capsys.readouterr().err == "mtlsearch report: error: study: no study `nope` in sqlite:///x.db; it has: `other`\n"
    assert main(["run", "missing.yaml"]) == 2
    assert capsys.readouterr().err == "mtlsearch run: error: missing.yaml: no such file\n"
    assert main(["train", "missing.yaml", "--seeds", "0"]) == 2
    assert capsys.readouterr().err == "mtlsearch train: error: --seeds: expected an integer >= 1, found 0\n"


@pytest.mark.slow
@pytest.mark.process
def test_console_entry_point_help():
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "mtlsearch", "--help"], capture_output=True, text=True, check=True).stdout
    for verb in ("run", "resume", "report", "export", "train"):
        assert verb in out
    out = subprocess.run([sys.executable, "-m", "mtlsearch", "run", "--help"], capture_output=True, text=True, check=True).stdout
    for flag in ("--study", "--storage", "--n-trials", "--sampler", "--seed", "--device", "--quiet", "--json"):
        assert flag in out


def test_study_over_methods_exports_and_retrains_the_method(tmp_path, tiny_space):
    tiny_space["search_space"].update(families=["hard_sharing", "tree"], weightings=["pcgrad", "gradvac"], gradvac={"beta": [0.05, 0.2]})
    problem, _ = mtlsearch.load(tiny_space)
    run = run_config(tmp_path, n_trials=3)
    from mtlsearch.search._study import open_study

    study = open_study(problem.space, run, problem.directions)
    study.enqueue_trial({"family": "tree", "weighting": "gradvac", "gradvac.beta": 0.2, "training.lr": 0.003,
                         **{f"tree.{t}.block{b}": int(t == "sum" and b > 0) for t in ("right", "sum") for b in range(3)}})
    study = run_search(problem, run)
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    first = study.trials[0]
    assert first.user_attrs["architecture"]["weighting"] == {"name": "gradvac", "beta": 0.2}
    config = results.export_config(study, first, run.storage)
    assert config["params"]["gradvac.beta"] == 0.2
    assert config["architecture"]["weighting"] == {"name": "gradvac", "beta": 0.2}
    _, candidate = results.candidate_of(config)
    assert repr(candidate.weighting) == "GradVac(beta=0.2)"
    out = mtlsearch.retrain(config, seeds=[0], device="cpu", baselines=False)
    assert set(out["test_metrics"]) == {"left", "right", "sum"}
