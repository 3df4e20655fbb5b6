"""Learning to Branch (Guo et al., ICML 2020): the supernet's hard Gumbel choices, a learned tree
that replays from its record, clear errors for bad records, and a study whose trials learn,
store and export their trees."""

from __future__ import annotations

import optuna
import pytest
import torch

import mtlsearch
from mtlsearch.errors import ConfigError
from mtlsearch.models.branching import BranchingSupernet


@pytest.fixture
def problem(tiny_space):
    tiny_space["search_space"].update(families=["learn_to_branch"], learn_to_branch={"width": [2], "learn_epochs": 1})
    del tiny_space["search_space"]["tree"]
    return mtlsearch.load(tiny_space)[0]


def params(width=2):
    return {"family": "learn_to_branch", "learn_to_branch.width": width, "weighting": "equal", "training.lr": 3e-3}


def test_supernet_reads_one_parent_per_node_and_trains_its_logits(problem):
    torch.manual_seed(0)
    net = BranchingSupernet(problem.backbone, problem.tasks, width=2)
    x = problem.data.train.inputs[:8]
    out = net(x, temperature=1.0)
    assert {t: tuple(v.shape) for t, v in out.items()} == {"left": (8, 10), "right": (8, 10), "sum": (8, 1)}
    sum(v.sum() for v in out.values()).backward()
    assert net.parent_logits.grad is not None and net.parent_logits.grad.abs().sum() > 0
    assert net.task_logits.grad is not None and net.task_logits.grad.abs().sum() > 0
    assert set(map(id, net.weight_parameters())).isdisjoint({id(net.parent_logits), id(net.task_logits)})


def test_learning_returns_a_tree_that_replays_from_its_record(problem):
    candidate = problem.replay(params(), partial=True)
    assert candidate.needs_learning
    with pytest.raises(ValueError, match="has not been learned yet"):
        candidate.build_model(0)
    arch = candidate.family.learn(candidate, torch.device("cpu"), seed=0)
    learned = arch.learned
    assert set(learned["parents"]) == {"block1", "block2"} and set(learned["task_nodes"]) == {"left", "right", "sum"}
    for t, path in arch.paths.items():  # each path follows the parents back from the task's node
        assert path[2] == str(learned["task_nodes"][t])
        assert path[1] == str(learned["parents"]["block2"][int(path[2])])
        assert path[0] == str(learned["parents"]["block1"][int(path[1])])
    replayed = problem.replay(params(), learned)
    assert replayed.architecture.paths == arch.paths
    model = replayed.build_model(0)
    assert sum(p.numel() for p in model.parameters()) > 0


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"parents": {"block1": [0, 0]}}, "learned.parents: expected one entry per block after the first (block1, block2), found `['block1']`"),
        ({"parents": {"block1": [0, 2], "block2": [0, 0]}}, "learned.parents.block1[1]: expected a node index in [0, 2), found 2"),
        ({"task_nodes": {"left": 0}}, "learned.task_nodes: expected one entry per task (left, right, sum), found `['left']`"),
        ({"task_nodes": {"left": 0, "right": True, "sum": 1}}, "learned.task_nodes.right: expected a node index in [0, 2), found True"),
    ],
)
def test_bad_learned_records_are_named(problem, change, message):
    learned = {"parents": {"block1": [0, 1], "block2": [1, 1]}, "task_nodes": {"left": 0, "right": 0, "sum": 1}}
    learned.update(change)
    with pytest.raises(ConfigError) as info:
        problem.replay(params(), learned)
    assert str(info.value) == message


def test_bad_settings_are_named(tiny_space):
    tiny_space["search_space"].update(families=["learn_to_branch"], learn_to_branch={"learn_epochs": 0})
    del tiny_space["search_space"]["tree"]
    with pytest.raises(ConfigError, match=r"search_space\.learn_to_branch\.learn_epochs: expected an integer >= 1"):
        mtlsearch.load(tiny_space)


@pytest.mark.slow
def test_study_learns_each_trials_tree_stores_and_exports_it(problem, tmp_path):
    from mtlsearch.config import RunConfig
    from mtlsearch.search import results

    run = RunConfig(study="ltb", storage=f"sqlite:///{tmp_path}/s.db", n_trials=2, seed=0, device="cpu")
    study = mtlsearch.run_search(problem, run)
    trials = study.get_trials()
    assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE] * 2
    for t in trials:
        learned, arch = t.user_attrs["learned"], t.user_attrs["architecture"]
        assert arch["learned"] == learned and set(arch["paths"]) == {"left", "right", "sum"}
        model = problem.replay(t.params, learned).build_model(0)
        assert sum(p.numel() for p in model.parameters()) == t.user_attrs["params"]
    config = results.export_config(study, trials[0])
    assert config["learned"] == trials[0].user_attrs["learned"]
    rebuilt = mtlsearch.load_exported(config)
    assert sum(p.numel() for p in rebuilt.parameters()) == trials[0].user_attrs["params"]
