"""Tree encoding, path networks and computation sharing."""

from __future__ import annotations

import itertools

import pytest
import torch
from optuna.trial import FixedTrial

from mtlsearch.families import FAMILIES
from mtlsearch.families.paths import canonical_paths
from mtlsearch.models import MLP, CNN, PathNetwork
from mtlsearch.tasks import TaskSpec

TASKS = [TaskSpec("a", "classification", num_classes=3), TaskSpec("b", "binary"), TaskSpec("c", "regression")]
NAMES = [t.name for t in TASKS]


def count_block_calls(model: PathNetwork) -> dict[str, int]:
    """Attach forward hooks to every block module; returns the live call counter."""
    calls: dict[str, int] = {}
    for block_name, modules in model.blocks.items():
        for key, module in modules.items():
            name = f"{block_name}.{key}"
            calls[name] = 0
            module.register_forward_hook(lambda *_, name=name: calls.__setitem__(name, calls[name] + 1))
    return calls


def all_tree_labellings(num_tasks: int, num_blocks: int, groups: int):
    """Every parameter assignment of the tree family (the first task is fixed to label 0)."""
    keys = [f"tree.{NAMES[t]}.block{b}" for t in range(1, num_tasks) for b in range(num_blocks)]
    for values in itertools.product(range(groups), repeat=len(keys)):
        yield dict(zip(keys, values))


def test_every_tree_labelling_decodes_to_a_valid_tree():
    backbone = MLP((6,), width=4, depth=3)
    family = FAMILIES.get("tree")(max_groups=2)
    seen = 0
    for params in all_tree_labellings(3, 3, 2):
        arch = family.sample(FixedTrial(params), NAMES, backbone)
        sharing = arch.sharing(backbone.block_names)
        # Groups only split with depth: every group at block b+1 lies inside one group at block b.
        for upper, lower in zip(sharing, sharing[1:]):
            for group in lower:
                assert any(set(group) <= set(g) for g in upper)
        # Distinct nodes per block = distinct label prefixes.
        labels = {"a": (0, 0, 0)} | {t: tuple(params[f"tree.{t}.block{b}"] for b in range(3)) for t in ("b", "c")}
        for b in range(3):
            assert len(sharing[b]) == len({lab[: b + 1] for lab in labels.values()})
        # The built model has exactly one module per node and runs each node once per forward.
        model = PathNetwork(backbone, TASKS, arch.paths)
        calls = count_block_calls(model)
        model(torch.randn(5, 6))
        assert sum(len(m) for m in model.blocks.values()) == sum(len(g) for g in sharing)
        assert all(n == 1 for n in calls.values())
        seen += 1
    assert seen == 2 ** 6


def test_canonical_paths_renumber_labels():
    assert canonical_paths({"a": (0, 0), "b": (1, 0), "c": (1, 1)}, 2) == {
        "a": ("n0", "n0_0"), "b": ("n1", "n1_0"), "c": ("n1", "n1_1"),
    }
    # Relabelling gives the same tree and so the same parameter names.
    assert canonical_paths({"a": (1, 1), "b": (0, 1), "c": (0, 0)}, 2) == canonical_paths(
        {"a": (0, 0), "b": (1, 0), "c": (1, 1)}, 2
    )


def test_hard_sharing_runs_the_trunk_once_for_all_tasks():
    backbone = CNN((1, 8, 16), channels=4, depth=3)
    arch = FAMILIES.get("hard_sharing")().sample(None, NAMES, backbone)
    model = PathNetwork(backbone, TASKS, arch.paths)
    calls = count_block_calls(model)
    out = model(torch.randn(2, 1, 8, 16))
    assert calls == {f"block{b}.shared": 1 for b in range(3)}
    assert out["a"].shape == (2, 3) and out["b"].shape == (2, 1) and out["c"].shape == (2, 1)


def test_single_task_runs_one_trunk_per_task():
    backbone = MLP((6,), width=4, depth=2)
    arch = FAMILIES.get("single_task")().sample(None, NAMES, backbone)
    model = PathNetwork(backbone, TASKS, arch.paths)
    calls = count_block_calls(model)
    model(torch.randn(2, 6))
    assert len(calls) == 6 and all(n == 1 for n in calls.values())
    assert model.distinct_prefixes() == [3, 3]


def test_tree_with_one_group_is_hard_sharing_and_asks_no_parameters():
    trial = FixedTrial({})
    arch = FAMILIES.get("tree")(max_groups=1).sample(trial, NAMES, MLP((6,), width=4, depth=2))
    assert len({p for p in arch.paths.values()}) == 1


def test_family_repr_shows_hyperparameters():
    assert repr(FAMILIES.get("tree")(max_groups=3)) == "Tree(max_groups=3)"


def test_block_that_changes_shape_cannot_be_skipped():
    from mtlsearch.errors import ConfigError

    backbone = MLP((6,), width=4, depth=2)
    with pytest.raises(ConfigError, match=r"^paths\.block0: block `block0` cannot be skipped: its input shape \(6,\) differs from its output shape \(4,\)$"):
        PathNetwork(backbone, TASKS, {"a": (None, "x"), "b": ("y", "x"), "c": ("y", "x")})


def test_same_seed_builds_same_weights(tiny_problem):
    from optuna.trial import FixedTrial

    params = {"family": "tree", "tree.right.block0": 0, "tree.right.block1": 1, "tree.right.block2": 0,
              "tree.sum.block0": 1, "tree.sum.block1": 0, "tree.sum.block2": 1, "weighting": "equal", "training.lr": 0.003}
    c = tiny_problem.sample(FixedTrial(params))
    m1, m2 = c.build_model(7), c.build_model(7)
    for (n1, p1), (n2, p2) in zip(m1.state_dict().items(), m2.state_dict().items()):
        assert n1 == n2 and torch.equal(p1, p2)
    assert not torch.equal(next(iter(c.build_model(8).state_dict().values())), next(iter(m1.state_dict().values())))
