"""Soft-sharing families: cross-stitch, MTAN, MMoE, PLE and residual adapters."""

from __future__ import annotations

import json

import pytest
import torch
from optuna.trial import FixedTrial

import mtlsearch
from mtlsearch.errors import ConfigError
from mtlsearch.families import FAMILIES, Architecture
from mtlsearch.models import CNN, MLP
from mtlsearch.tasks import TaskSpec

TASKS = [TaskSpec("a", "classification", num_classes=3), TaskSpec("b", "binary"), TaskSpec("c", "regression")]
NAMES = [t.name for t in TASKS]
BACKBONES = {"mlp": (MLP((6,), width=4, depth=3), (6,)), "cnn": (CNN((1, 8, 16), channels=4, depth=3), (1, 8, 16))}

# One candidate per family; the expected settings, and per forward how often each built block runs
# (in the order build_block was called).
CASES = {
    "cross_stitch": ({"cross_stitch.block0": True, "cross_stitch.block1": False, "cross_stitch.block2": True},
                     {"units": ["block0", "block2"]}, [1] * 9),
    "mtan": ({"mtan.block0": True, "mtan.block1": False}, {"attended": ["block0", "block2"]}, [1] * 3),
    "mmoe": ({"mmoe.experts": 3, "mmoe.split": "block1"}, {"experts": 3, "split": "block1"}, [1] * (1 + 3 * 2)),
    "ple": ({"ple.shared_experts": 2, "ple.task_experts": 1, "ple.split": "block1"},
            {"shared_experts": 2, "task_experts": 1, "split": "block1"}, [1] * (1 + 2 * (2 + 3 * 1))),
    "adapters": ({"adapters.block0": False, "adapters.block1": True, "adapters.block2": True},
                 {"adapted": ["block1", "block2"]}, [1, 1, 3]),
}
GRID = [(f, b) for f in CASES for b in BACKBONES]


def count_built_blocks(backbone, monkeypatch) -> list[int]:
    """Make every block that ``backbone.build_block`` returns count its calls; the live counters."""
    calls: list[int] = []
    build = backbone.build_block

    def counted(b):
        module, i = build(b), len(calls)
        calls.append(0)
        module.register_forward_hook(lambda *_: calls.__setitem__(i, calls[i] + 1))
        return module

    monkeypatch.setattr(backbone, "build_block", counted)
    return calls


def build(family_name, backbone_name, seed=0, settings=None):
    backbone, shape = BACKBONES[backbone_name]
    family = FAMILIES.get(family_name)()
    if settings is None:
        arch = family.sample(FixedTrial(CASES[family_name][0]), NAMES, backbone)
    else:
        arch = Architecture(family_name, settings=settings)
    torch.manual_seed(seed)
    return family.build(arch, backbone, TASKS), arch, shape


@pytest.mark.parametrize("family_name,backbone_name", GRID)
def test_sample_build_forward_and_rebuild(family_name, backbone_name, monkeypatch):
    backbone, _ = BACKBONES[backbone_name]
    calls = count_built_blocks(backbone, monkeypatch)
    model, arch, shape = build(family_name, backbone_name)
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    assert arch.family == family_name and arch.paths is None
    assert dict(arch.settings) == CASES[family_name][1]
    json.dumps(arch.to_dict())  # settings are plain data
    assert all(isinstance(line, str) for line in FAMILIES.get(family_name)().describe(arch, backbone.block_names))

    out = model(torch.randn(4, *shape))
    assert {t: tuple(o.shape) for t, o in out.items()} == {"a": (4, 3), "b": (4, 1), "c": (4, 1)}
    assert calls == CASES[family_name][2]  # every block built once, run as often as planned

    # Every parameter is used by some task and gets a gradient from the summed task outputs.
    sum(o.sum() for o in out.values()).backward()
    used = {id(p): p for ps in model.task_parameters().values() for p in ps}
    assert set(used) == {id(p) for p in model.parameters()}
    assert all(p.grad is not None for p in used.values())
    assert model.shared_feature is not None and model.shared_feature.requires_grad

    # Same seed, same weights; a rebuild from the settings alone has the same state.
    again, _, _ = build(family_name, backbone_name)
    rebuilt, _, _ = build(family_name, backbone_name, settings=json.loads(json.dumps(dict(arch.settings))))
    for other in (again, rebuilt):
        assert list(other.state_dict()) == list(initial)
        assert all(torch.equal(p, q) for p, q in zip(other.state_dict().values(), initial.values()))
    different, _, _ = build(family_name, backbone_name, seed=1)
    assert any(not torch.equal(p, q) for p, q in zip(different.state_dict().values(), initial.values()))


@pytest.mark.parametrize("family_name", list(CASES))
def test_trial_parameter_names(family_name):
    trial = FixedTrial(CASES[family_name][0])
    FAMILIES.get(family_name)().sample(trial, NAMES, BACKBONES["mlp"][0])
    assert set(trial.params) == set(CASES[family_name][0])


# -- cross-stitch ---------------------------------------------------------------------------------


def test_cross_stitch_units_start_as_rows_summing_to_one():
    model, _, _ = build("cross_stitch", "cnn")
    alpha = model.units["block0"].alpha.detach()
    assert alpha.shape == (3, 3, 4)  # tasks x tasks x channels
    assert torch.allclose(alpha.sum(1), torch.ones(3, 4))
    assert torch.allclose(alpha[0, 0], torch.full((4,), 0.9)) and torch.allclose(alpha[0, 1], torch.full((4,), 0.05))


@pytest.mark.parametrize("units,coupled", [([], False), (["block1"], True)])
def test_cross_stitch_columns_are_independent_without_units(units, coupled):
    model, _, _ = build("cross_stitch", "mlp", settings={"units": units})
    params = {t: {id(p) for p in ps} for t, ps in model.task_parameters().items()}
    column_b = {id(p) for p in model.columns["b"].parameters()}
    assert bool(params["a"] & column_b) is coupled
    assert (params["a"] & params["b"] == set()) is not coupled
    model.eval()
    x = torch.randn(3, 6)
    before = model(x)["a"]
    with torch.no_grad():
        model.columns["b"]["block0"][1].weight.add_(1.0)
    assert torch.equal(model(x)["a"], before) is not coupled
    assert (model.shared_feature is None) is not coupled


# -- MTAN -----------------------------------------------------------------------------------------


def test_mtan_always_attends_the_last_block():
    trial = FixedTrial({"mtan.block0": False, "mtan.block1": False})
    arch = FAMILIES.get("mtan")().sample(trial, NAMES, BACKBONES["cnn"][0])
    assert arch.settings == {"attended": ["block2"]}
    model, _, shape = build("mtan", "cnn", settings=arch.settings)
    model(torch.randn(2, *shape))
    assert model.shared_feature.shape == (2, 4, 2, 4)
    assert list(model.attention["a"]) == ["block2"]
    with pytest.raises(ConfigError) as err:
        FAMILIES.get("mtan")().build(Architecture("mtan", settings={"attended": ["block0"]}), BACKBONES["cnn"][0], TASKS)
    assert str(err.value) == "settings.attended: the last block `block2` must be attended (the heads read it), found `['block0']`"


# -- mixtures of experts --------------------------------------------------------------------------


@pytest.mark.parametrize("backbone_name", list(BACKBONES))
def test_mmoe_gates_sum_to_one_and_split_at_the_input(backbone_name):
    model, _, shape = build("mmoe", backbone_name, settings={"experts": 2, "split": "block0"})
    assert len(model.bottom) == 0 and [len(e) for e in model.experts] == [3, 3]
    x = torch.randn(5, *shape)
    for t in NAMES:
        g = model.gates[t](x)  # split at block0: gates read the (pooled) raw input
        assert g.shape == (5, 2) and torch.allclose(g.sum(1), torch.ones(5))
    model(x)
    assert model.shared_feature.shape[:2] == (5, 2)


def test_ple_layers_gates_and_experts():
    model, _, shape = build("ple", "cnn")
    assert list(model.bottom) == ["block0"] and list(model.layers) == ["block1", "block2"]
    first, last = model.layers["block1"], model.layers["block2"]
    assert last.shared_gate is None and first.shared_gate.linear.out_features == 2 + 3 * 1
    assert first.task_gates["a"].linear.out_features == 1 + 2
    h = model.bottom(torch.randn(5, *shape))
    for gate in [first.shared_gate, *first.task_gates.values()]:
        assert torch.allclose(gate(h).sum(1), torch.ones(5))


# -- adapters -------------------------------------------------------------------------------------


def test_adapters_none_is_hard_sharing_and_adapters_start_as_identity(monkeypatch):
    backbone, shape = BACKBONES["cnn"]
    calls = count_built_blocks(backbone, monkeypatch)
    plain, _, _ = build("adapters", "cnn", settings={"adapted": []})
    x = torch.randn(3, *shape)
    out = plain(x)
    assert calls == [1, 1, 1]  # one trunk pass for all tasks
    assert torch.equal(plain.shared_feature, plain.trunk(x))
    trunk = {id(p) for p in plain.trunk.parameters()}
    for t, ps in plain.task_parameters().items():  # the whole trunk and the task's own head
        assert {id(p) for p in ps} == trunk | {id(p) for p in plain.heads[t].parameters()}
    adapted, _, _ = build("adapters", "cnn", settings={"adapted": ["block0"]})
    assert list(adapted.adapters["block0"]) == NAMES
    # Same seed: same trunk and heads; identity adapters give the same outputs.
    assert all(torch.allclose(adapted(x)[t], o) for t, o in out.items())


# -- hyperparameter errors ------------------------------------------------------------------------


@pytest.mark.parametrize("family,kwargs,message", [
    ("mmoe", {"experts": 0}, "experts: expected an integer >= 1 or a non-empty list of them, found 0"),
    ("mmoe", {"experts": []}, "experts: expected an integer >= 1 or a non-empty list of them, found `[]`"),
    ("mmoe", {"experts": [2, True]}, "experts: expected an integer >= 1 or a non-empty list of them, found `[2, True]`"),
    ("ple", {"task_experts": [1, 1]}, "task_experts: lists a value twice: `[1, 1]`"),
    ("ple", {"shared_experts": "two"}, "shared_experts: expected an integer >= 1 or a non-empty list of them, found `two`"),
    ("mmoe", {"split": []}, "split: expected a non-empty list of block names, found `[]`"),
    ("ple", {"split": "block1"}, "split: expected a non-empty list of block names, found `block1`"),
    ("cross_stitch", {"blocks": ["block1", "block1"]}, "blocks: lists a block twice: `['block1', 'block1']`"),
])
def test_bad_hyperparameters(family, kwargs, message):
    with pytest.raises(ConfigError) as err:
        FAMILIES.get(family)(**kwargs)
    assert str(err.value) == message


@pytest.mark.parametrize("family,kwargs,message", [
    ("mmoe", {"split": ["block1", "block9"]}, "split[1]: unknown block `block9`; the backbone's blocks are: block0, block1, block2"),
    ("ple", {"split": ["conv1"]}, "split[0]: unknown block `conv1`; the backbone's blocks are: block0, block1, block2"),
    ("cross_stitch", {"blocks": ["block3"]}, "blocks[0]: unknown block `block3`; the backbone's blocks are: block0, block1, block2"),
    ("adapters", {"blocks": ["block0", "x"]}, "blocks[1]: unknown block `x`; the backbone's blocks are: block0, block1, block2"),
    ("mtan", {"blocks": ["block1", "block2"]}, "blocks: the last block `block2` is always attended; list only earlier blocks, found `['block1', 'block2']`"),
])
def test_hyperparameters_checked_against_the_backbone(family, kwargs, message):
    with pytest.raises(ConfigError) as err:
        FAMILIES.get(family)(**kwargs).check(BACKBONES["mlp"][0], NAMES)
    assert str(err.value) == message


def test_repr_shows_hyperparameters():
    assert repr(FAMILIES.get("mmoe")(experts=3, split=["block1"])) == "MMoE(experts=[3], split=['block1'])"
    assert repr(FAMILIES.get("ple")()) == "PLE(shared_experts=[1, 2], task_experts=[1, 2], split=None)"
    assert repr(FAMILIES.get("adapters")()) == "Adapters(blocks=None)"


# -- in a search space ----------------------------------------------------------------------------


def test_soft_families_in_a_space(tiny_space):
    del tiny_space["search_space"]["tree"]
    tiny_space["search_space"].update({
        "families": ["cross_stitch", "mtan", "mmoe", "ple", "adapters"],
        "mmoe": {"experts": [2, 3], "split": ["block1", "block2"]},
        "ple": {"shared_experts": 1, "task_experts": [1, 2]},
        "adapters": {"blocks": ["block1", "block2"]},
    })
    problem, _ = mtlsearch.load(tiny_space)
    common = {"weighting": "equal", "training.lr": 0.003}
    params = {
        "cross_stitch": {"cross_stitch.block0": False, "cross_stitch.block1": True, "cross_stitch.block2": False},
        "mtan": {"mtan.block0": True, "mtan.block1": True},
        "mmoe": {"mmoe.experts": 3, "mmoe.split": "block2"},
        "ple": {"ple.shared_experts": 1, "ple.task_experts": 2, "ple.split": "block0"},
        "adapters": {"adapters.block1": True, "adapters.block2": False},
    }
    x = problem.data.train[0][0].unsqueeze(0)
    for name, own in params.items():
        candidate = problem.sample(FixedTrial({"family": name, **own, **common}))
        assert candidate.architecture.family == name
        json.dumps(candidate.summary())
        assert candidate.describe()
        out = candidate.build_model(0).eval()(x)
        assert set(out) == set(problem.task_names)
    with pytest.raises(ValueError):  # 3 is not one of the choices this space allows
        problem.sample(FixedTrial({"family": "ple", "ple.shared_experts": 1, "ple.task_experts": 3, "ple.split": "block0", **common}))


@pytest.mark.parametrize("section,message", [
    ({"mmoe": {"experts": 0}}, "search_space.mmoe.experts: expected an integer >= 1 or a non-empty list of them, found 0"),
    ({"mmoe": {"split": ["block7"]}}, "search_space.mmoe.split[0]: unknown block `block7`; the backbone's blocks are: block0, block1, block2"),
])
def test_space_errors_name_the_field(tiny_space, section, message):
    del tiny_space["search_space"]["tree"]
    tiny_space["search_space"].update({"families": ["mmoe"], **section})
    with pytest.raises(ConfigError) as err:
        mtlsearch.load(tiny_space)
    assert str(err.value) == message
