"""Conformance suite: every registered family, on an MLP and a CNN backbone, and on a CNN over
dense (per-pixel) tasks: tiny `scenes` with segmentation, depth, normals and edges.

A family registered in :data:`mtlsearch.families.FAMILIES` is tested here the moment it exists:
the same structure from an Optuna trial, from a fixed dict and from an exported config; a forward
shape per task; determinism under a seed; no block run twice on the same input (computation
sharing); gradients reaching every parameter the tasks use, and no parameter that no task uses.
"""

from __future__ import annotations

import copy
import os

import optuna
import pytest
import torch

import mtlsearch
from mtlsearch.families import FAMILIES
from mtlsearch.models import Backbone
from mtlsearch.search.results import EXPORT_FORMAT

from conftest import TINY_SPACE

FAMILY_NAMES = FAMILIES.names()
BACKBONES = {
    "mlp": {"name": "mlp", "width": 16, "depth": 3},
    "cnn": {"name": "cnn", "channels": 6, "depth": 4},  # 8x16 input: blocks 2 and 3 keep the shape
    # 16x16 scenes: 16 -> 8 -> 4, then blocks 2 and 3 keep 4x4 features; dense heads upsample to 16x16
    "dense": {"name": "cnn", "channels": 4, "depth": 4, "min_size": 4},
}
DENSE_DATA = {"benchmark": "scenes", "seed": 0, "n_train": 24, "n_val": 4, "n_test": 4, "size": 16}
SAMPLES_PER_FAMILY = 3
DENSE_SAMPLES_PER_FAMILY = 1  # dense heads make every build and backward dearer; mlp and cnn cover the variety


def space_for(backbone: str) -> dict:
    space = copy.deepcopy(TINY_SPACE)
    space["backbone"] = dict(BACKBONES[backbone])
    space["data"].update(n_train=128, n_val=32, n_test=32)
    if backbone == "dense":
        space["data"] = dict(DENSE_DATA)
    space["search_space"] = {
        "families": FAMILY_NAMES,
        "weightings": ["equal"],
        "training": {"epochs": 1, "batch_size": 64, "optimizer": "adam", "lr": 1.0e-3},
    }
    if "adashare_learned" in FAMILY_NAMES:  # the smallest learning budget: one epoch of each phase
        space["search_space"]["adashare_learned"] = {"warmup_epochs": 1, "policy_epochs": 1}
    if "learn_to_branch" in FAMILY_NAMES:
        space["search_space"]["learn_to_branch"] = {"width": [2], "learn_epochs": 1}
    return space


@pytest.fixture(scope="module", autouse=True)
def scenes_cache(tmp_path_factory):
    """Scenes rendered once for the module (an export without a signature loads its data again)."""
    before = os.environ.get("MTLSEARCH_CACHE")
    os.environ["MTLSEARCH_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    yield
    if before is None:
        del os.environ["MTLSEARCH_CACHE"]
    else:
        os.environ["MTLSEARCH_CACHE"] = before


@pytest.fixture(scope="module", params=list(BACKBONES))
def problem(request):
    return mtlsearch.load(space_for(request.param))[0]


def samples(problem) -> int:
    return DENSE_SAMPLES_PER_FAMILY if any(t.kind.dense for t in problem.tasks) else SAMPLES_PER_FAMILY


def sampled(problem, family: str, index: int):
    """(params, learned record or None, candidate) of one trial of ``family`` drawn by Optuna."""
    study = optuna.create_study(directions=["maximize"], sampler=optuna.samplers.RandomSampler(seed=index))
    study.enqueue_trial({"family": family})
    trial = study.ask()
    candidate = problem.sample(trial)
    learned = None
    if candidate.needs_learning:
        candidate.architecture = candidate.family.learn(candidate, torch.device("cpu"), seed=index)
        learned = dict(candidate.architecture.learned)
    return dict(trial.params), learned, candidate


def signature(model: torch.nn.Module) -> dict[str, tuple]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_trial_fixed_dict_and_export_build_the_same_structure(problem, family):
    for index in range(samples(problem)):
        params, learned, candidate = sampled(problem, family, index)
        from_trial = candidate.build_model(seed=7)
        replayed = problem.replay(params, learned)
        assert replayed.architecture == candidate.architecture
        from_dict = mtlsearch.build_model(problem, {"params": params, "learned": learned}, seed=7)
        export = {"format": EXPORT_FORMAT, "space": problem.space.to_raw(), "params": params, "seed": 7}
        if learned is not None:
            export["learned"] = learned
        from_export = mtlsearch.load_exported(export)
        assert signature(from_trial) == signature(from_dict) == signature(from_export)
        assert same_weights(from_trial, from_dict) and same_weights(from_trial, from_export)
        assert candidate.describe().strip()


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_forward_gives_every_task_its_shape_and_is_deterministic(problem, family):
    _, _, candidate = sampled(problem, family, 0)
    x = torch.randn(5, *problem.input_shape)
    a, b = candidate.build_model(seed=3), candidate.build_model(seed=3)
    out_a, out_b = a(x), b(x)
    assert set(out_a) == set(problem.task_names)
    for t in problem.tasks:
        spatial = tuple(problem.input_shape[1:]) if t.kind.dense else ()
        assert out_a[t.name].shape == (5, t.kind.output_dim(t), *spatial)
        assert torch.equal(out_a[t.name], out_b[t.name])
    assert same_weights(a, b)
    assert not same_weights(a, candidate.build_model(seed=4))


def counting_calls(problem, candidate):
    """The candidate's model, with a hook on every module the backbone built: it records each
    call's module and input, so a test can tell whether one block ran twice on equal inputs."""
    backbone: Backbone = problem.backbone
    calls: list[tuple[int, torch.Tensor]] = []
    original = backbone.build_block

    def build_block(index):
        module = original(index)
        module.register_forward_hook(lambda m, inputs, _: calls.append((id(m), inputs[0].detach().clone())))
        return module

    backbone.build_block = build_block
    try:
        model = candidate.build_model(seed=0)
    finally:
        del backbone.build_block
    return model, calls


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_no_block_runs_twice_on_the_same_input(problem, family):
    for index in range(samples(problem)):
        _, _, candidate = sampled(problem, family, index)
        model, calls = counting_calls(problem, candidate)
        with torch.no_grad():  # generic weights: an identity-initialised adapter would make inputs equal by accident
            for p in model.parameters():
                p.add_(0.1 * torch.randn_like(p))
        model.eval()
        model(torch.randn(4, *problem.input_shape))
        assert calls, "the model runs no block the backbone built"
        for i, (module, x) in enumerate(calls):
            for other, y in calls[:i]:
                assert not (module == other and x.shape == y.shape and torch.equal(x, y)), (
                    f"{family}: a block ran twice on the same input; tasks that agree must share it"
                )


def test_block_calls_of_the_sharing_extremes(problem):
    """Hard sharing runs the B blocks once for all tasks; single-task runs T x B."""
    blocks, tasks = len(problem.backbone.block_names), len(problem.task_names)
    for family, expected in (("hard_sharing", blocks), ("single_task", tasks * blocks)):
        _, _, candidate = sampled(problem, family, 0)
        model, calls = counting_calls(problem, candidate)
        model(torch.randn(2, *problem.input_shape))
        assert len(calls) == expected


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_gradients_reach_every_parameter_the_tasks_use(problem, family):
    for index in range(samples(problem)):
        _, _, candidate = sampled(problem, family, index)
        model = candidate.build_model(seed=0)
        per_task = model.task_parameters()
        trainable = {id(p) for p in model.parameters() if p.requires_grad}
        used = {id(p) for ps in per_task.values() for p in ps}
        assert used == trainable, f"{family}: {len(trainable - used)} parameter tensors no task uses"
        x = torch.randn(6, *problem.input_shape)
        for t in problem.task_names:
            model.zero_grad(set_to_none=True)
            model(x)[t].pow(2).mean().backward()
            reached = {id(p) for p in model.parameters() if p.grad is not None}
            assert reached == {id(p) for p in per_task[t]}, f"{family}: task_parameters()[{t!r}] is not what {t} uses"


@pytest.mark.parametrize("source, message", [
    ({"families": ["adashare"], "adashare": {"blocks": ["block0"]}},
     "search_space.adashare.blocks[0]: block `block0` cannot be skipped: its input shape (1, 8, 16) differs from its "
     "output shape (6, 4, 8); skippable blocks: block2, block3"),
    ({"families": ["adashare"], "adashare": {"blocks": ["block9"]}},
     "search_space.adashare.blocks[0]: unknown block `block9`; the backbone's blocks are: block0, block1, block2, block3"),
    ({"families": ["routing"], "routing": {"modules": 0}},
     "search_space.routing.modules: expected an integer >= 1, found 0"),
    ({"families": ["routng"]},
     "search_space.families[0]: unknown family `routng`; choose one of: " + ", ".join(FAMILY_NAMES) + " (did you mean `routing`?)"),
])
def test_bad_family_settings_are_named(source, message):
    space = space_for("cnn")
    space["search_space"] = {**source, "weightings": ["equal"], "training": space["search_space"]["training"]}
    with pytest.raises(mtlsearch.ConfigError) as err:
        mtlsearch.load(space)
    assert str(err.value) == message


def test_backbone_without_skippable_blocks_is_refused_for_gating():
    space = space_for("cnn")
    space["backbone"]["depth"] = 2
    space["search_space"] = {"families": ["adashare"], "weightings": ["equal"]}
    with pytest.raises(mtlsearch.ConfigError) as err:
        mtlsearch.load(space)
    assert str(err.value) == (
        "search_space.adashare.blocks: backbone `cnn` has no block whose input and output shapes match, so `adashare` "
        "has nothing to skip; block shapes: block0 (1, 8, 16)->(6, 4, 8), block1 (6, 4, 8)->(6, 2, 4); "
        "use more blocks (e.g. a deeper backbone)"
    )


@pytest.mark.parametrize("method", ["pcgrad", "mgda_ub"])
@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_every_family_trains_with_aggregators_and_feature_level_weightings(problem, family, method):
    """The trainer's step works on every family's network: per-group gradient matrices for an
    aggregator (from ``task_parameters()``), ``shared_feature`` for a feature-level weighting."""
    from mtlsearch.training import make_optimizer, make_step
    from mtlsearch.weighting import METHODS

    _, _, candidate = sampled(problem, family, 1)
    model = candidate.build_model(seed=0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    weighting = METHODS.get(method).sample(optuna.trial.FixedTrial({}), {}, problem.task_names)
    step = make_step(model, problem.tasks, weighting, make_optimizer("adam", list(model.parameters()), 1e-2, 0.0))
    data = problem.data.train
    losses = step(data.inputs[:32], {k: v[:32] for k, v in data.targets.items()})
    assert torch.isfinite(losses).all() and losses.shape == (len(problem.tasks),)
    changed = [k for k, v in model.state_dict().items() if not torch.equal(v, before[k])]
    assert any(".weight" in k for k in changed)
