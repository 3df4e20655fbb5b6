"""Conformance suite: every registered weighting and aggregator, with default hyperparameters.

A method is tested here the moment it is registered: shapes, dtype and device kept, determinism
under a seed, no NaN on zero or exactly opposite gradients, and a short real training run.
Paper-specific properties and hand-computed cases live in each method's own test module.
"""

from __future__ import annotations

import copy

import pytest
import torch
from optuna.trial import FixedTrial

import mtlsearch
from mtlsearch.training import make_optimizer, make_step, parameter_groups, task_parameters, train
from mtlsearch.weighting import AGGREGATORS, METHODS, WEIGHTINGS, Aggregator, StepContext

AGGREGATOR_NAMES = AGGREGATORS.names()
WEIGHTING_NAMES = WEIGHTINGS.names()


def matrices(dtype=torch.float64):
    g = torch.Generator().manual_seed(0)
    yield "random T=2", torch.randn(2, 7, generator=g, dtype=dtype)
    yield "random T=4", torch.randn(4, 11, generator=g, dtype=dtype)
    v = torch.randn(5, generator=g, dtype=dtype)
    yield "opposite", torch.stack([v, -v])
    yield "zero row", torch.stack([v, torch.zeros_like(v)])
    yield "all zero", torch.zeros(3, 5, dtype=dtype)
    yield "equal rows", torch.stack([v, v, v])


@pytest.mark.parametrize("name", AGGREGATOR_NAMES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_aggregator_shapes_dtype_and_no_nan(name, dtype):
    for label, m in matrices(dtype):
        out = AGGREGATORS.get(name)()(m.clone())
        assert out.shape == (m.shape[1],), label
        assert out.dtype == dtype and out.device == m.device, label
        assert torch.isfinite(out).all(), f"{name} gives a non-finite update on {label}"


@pytest.mark.parametrize("name", AGGREGATOR_NAMES)
def test_aggregator_is_deterministic_under_a_seed(name):
    m = torch.randn(3, 9, generator=torch.Generator().manual_seed(1))
    a, b = AGGREGATORS.get(name)(), AGGREGATORS.get(name)()
    outs = []
    for agg in (a, b):
        torch.manual_seed(5)
        outs.append(torch.stack([agg(m), agg(m * 0.5 + 0.1)]))
    assert torch.equal(outs[0], outs[1])


@pytest.mark.parametrize("name", AGGREGATOR_NAMES)
def test_aggregator_of_identical_rows_is_their_sum(name):
    """Scale convention: like equal weighting (the sum of task gradients) when nothing conflicts."""
    g = torch.randn(6, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    out = AGGREGATORS.get(name)()(torch.stack([g, g]))
    # CAGrad keeps its paper's rescaling d / (1 + c^2): identical rows give T (1 + c) / (1 + c^2) g.
    scale = {"cagrad": (1 + 0.4) / (1 + 0.4**2)}.get(name, 1.0)
    assert torch.allclose(out, 2 * scale * g, atol=1e-6), f"{name}: {out} vs {2 * scale * g}"


@pytest.mark.parametrize("name", AGGREGATOR_NAMES + WEIGHTING_NAMES)
def test_repr_names_the_class(name):
    cls = METHODS.get(name)
    obj = cls() if issubclass(cls, Aggregator) else cls(["a", "b"])
    assert type(obj).__name__ in repr(obj)


def tiny_model(problem, family: str):
    params = {"family": family, "weighting": "equal", "training.lr": 0.003}
    if family == "tree":
        params.update({f"tree.{t}.block{b}": (1 if (t == "sum" and b > 0) else 0) for t in ("right", "sum") for b in range(3)})
    candidate = problem.sample(FixedTrial(params))
    return candidate.build_model(0), candidate


@pytest.mark.parametrize("name", WEIGHTING_NAMES)
def test_weighting_returns_finite_weights_of_the_losses_shape(name, tiny_problem):
    model, _ = tiny_model(tiny_problem, "hard_sharing")
    names = tiny_problem.task_names
    method = WEIGHTINGS.get(name)(names)
    x, y = tiny_problem.data.train[:8]
    out = model(x)
    losses = torch.stack([t.kind.loss(out[t.name], y[t.name]) for t in tiny_problem.tasks])
    context = StepContext(task_parameters(model, names), [p for u, ps in parameter_groups(task_parameters(model, names)) if len(u) > 1 for p in ps], model.shared_feature)
    torch.manual_seed(0)
    w = method(losses, context)
    assert w.shape == losses.shape and w.dtype == losses.dtype and torch.isfinite(w).all()
    zero = method(torch.zeros_like(losses), context)
    assert torch.isfinite(zero).all()


@pytest.mark.parametrize("family", ["hard_sharing", "tree", "single_task"])
@pytest.mark.parametrize("name", AGGREGATOR_NAMES + WEIGHTING_NAMES)
def test_one_epoch_of_real_training_with_every_method(name, family, tiny_problem):
    model, candidate = tiny_model(tiny_problem, family)
    method = METHODS.get(name)(**({} if issubclass(METHODS.get(name), Aggregator) else {"tasks": tiny_problem.task_names}))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    training = dict(candidate.training, epochs=1, batch_size=64)
    torch.manual_seed(0)
    result = train(model, tiny_problem.tasks, method, tiny_problem.data.train, training, torch.device("cpu"), seed=0)
    assert result.train_loss == result.train_loss  # finite (NaN would have raised)
    changed = [n for n, p in model.named_parameters() if not torch.equal(p, before[n])]
    assert len(changed) == len(before), f"{name}: parameters never updated: {set(before) - set(changed)}"


class SumOfRows(Aggregator):
    """Not registered: the aggregator that equals equal weighting, to check the trainer."""

    name = "sum_of_rows"
    label = "sum"

    def __call__(self, matrix):
        return matrix.sum(0)


@pytest.mark.parametrize("family", ["hard_sharing", "tree"])
def test_aggregated_step_with_sum_equals_equal_weighting(family, tiny_problem):
    grads = []
    for method in (SumOfRows(), METHODS.get("equal")(tiny_problem.task_names)):
        model, _ = tiny_model(tiny_problem, family)
        optimizer = make_optimizer("sgd", list(model.parameters()), 0.0, 0.0)  # lr 0: keep weights, read grads
        step = make_step(model, tiny_problem.tasks, method, optimizer)
        x, y = tiny_problem.data.train[:32]
        step(x, y)
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
    assert grads[0].keys() == grads[1].keys()
    for n in grads[0]:
        assert torch.allclose(grads[0][n], grads[1][n], atol=1e-6), n


def test_parameter_groups_of_a_tree_are_its_nodes(tiny_problem):
    model, _ = tiny_model(tiny_problem, "tree")
    groups = dict(parameter_groups(task_parameters(model, tiny_problem.task_names)))
    # block0 shared by all; block1..2: left+right share one node, sum has its own; one head each
    assert set(groups) == {("left", "right", "sum"), ("left", "right"), ("sum",), ("left",), ("right",)}
    sizes = {users: sum(p.numel() for p in ps) for users, ps in groups.items()}
    block = 24 * 24 + 24
    assert sizes[("left", "right")] == 2 * block
    assert sizes[("sum",)] == 2 * block + 24 + 1


def test_method_hyperparameters_are_conditional_trial_parameters(tiny_space):
    tiny_space["search_space"]["weightings"] = ["equal", "static"]
    tiny_space["search_space"]["static"] = {"weight": [0.5, 2.0]}
    problem, _ = mtlsearch.load(tiny_space)
    c = problem.sample(FixedTrial({"family": "hard_sharing", "weighting": "static", "training.lr": 0.003,
                                   "static.weight.left": 0.5, "static.weight.right": 2.0, "static.weight.sum": 0.5}))
    assert c.summary()["weighting"] == {"name": "static", "weights": {"left": 0.5, "right": 2.0, "sum": 0.5}}
    c = problem.sample(FixedTrial({"family": "hard_sharing", "weighting": "equal", "training.lr": 0.003}))
    assert c.summary()["weighting"] == {"name": "equal"}
