"""The two ways an aggregated step gets its per-task gradients give the same step."""

from __future__ import annotations

import pytest
import torch

from mtlsearch.training import make_optimizer, make_step
from mtlsearch.weighting import AGGREGATORS

TREE = {f"tree.right.block{b}": 0 for b in range(3)} | {f"tree.sum.block{b}": int(b > 0) for b in range(3)}


@pytest.mark.parametrize("family", ["hard_sharing", "tree"])
@pytest.mark.parametrize("method", ["upgrad", "moco", "pcgrad"])
def test_batched_jacobian_equals_the_per_task_loop(tiny_problem, family, method):
    params = {"family": family, "weighting": "equal", "training.lr": 3e-3} | (TREE if family == "tree" else {})
    candidate = tiny_problem.replay(params)
    x = tiny_problem.data.train.inputs[:32]
    y = {k: v[:32] for k, v in tiny_problem.data.train.targets.items()}
    grads = []
    for mode in ("loop", "batched"):
        model = candidate.build_model(0)
        step = make_step(model, tiny_problem.tasks, AGGREGATORS.get(method)(), make_optimizer("sgd", list(model.parameters()), 0.0, 0.0), jacobian=mode)
        torch.manual_seed(0)
        for _ in range(2):  # twice: the stateful aggregator's second step too
            step(x, y)
        grads.append([p.grad.clone() for p in model.parameters()])
    assert all(torch.allclose(a, b, atol=1e-6, rtol=1e-5) for a, b in zip(*grads))


def test_an_unknown_mode_is_refused(tiny_problem):
    model = tiny_problem.replay({"family": "hard_sharing", "weighting": "equal", "training.lr": 3e-3}).build_model(0)
    with pytest.raises(ValueError, match="jacobian: expected one of auto, loop, batched, found 'vmap'"):
        make_step(model, tiny_problem.tasks, AGGREGATORS.get("upgrad")(), make_optimizer("sgd", list(model.parameters()), 0.0, 0.0), jacobian="vmap")


@pytest.mark.parametrize("method", ["upgrad", "pcgrad"])
def test_batched_jacobian_equals_the_loop_on_scheduled_subsets(tiny_problem, method):
    """Two tasks of three per step on a tree: a group's rows are a strict subset of the batched
    call's (dropped from its one concatenation), or one task (a plain gradient); both as the loop."""
    from mtlsearch.weighting.schedule import RoundRobin

    candidate = tiny_problem.replay({"family": "tree", "weighting": "equal", "training.lr": 3e-3} | TREE)
    names = [t.name for t in tiny_problem.tasks]
    x = tiny_problem.data.train.inputs[:32]
    y = {k: v[:32] for k, v in tiny_problem.data.train.targets.items()}
    steps = {}
    for mode in ("loop", "batched"):
        model = candidate.build_model(0)
        optimizer = make_optimizer("sgd", list(model.parameters()), 0.0, 0.0)
        step = make_step(model, tiny_problem.tasks, AGGREGATORS.get(method)(), optimizer, jacobian=mode,
                         schedule=RoundRobin(names, k=2))  # fmt: skip
        steps[mode] = (model, step)
    for _ in range(3):  # (left, right), (sum, left), (right, sum)
        grads = []
        for model, step in steps.values():
            step(x, y)
            grads.append([None if p.grad is None else p.grad.clone() for p in model.parameters()])
        for a, b in zip(*grads):
            assert (a is None) == (b is None) and (a is None or torch.allclose(a, b, atol=1e-6, rtol=1e-5))


def count_head_backwards(model) -> dict[str, int]:
    """``{head: how many times its backward has run}``, kept up to date by hooks on the heads."""
    runs = {name: 0 for name in model.heads}
    for name, head in model.heads.items():
        head.register_full_backward_hook(lambda *_, name=name: runs.__setitem__(name, runs[name] + 1))
    return runs


@pytest.mark.parametrize("family", ["hard_sharing", "tree"])
def test_each_task_pass_of_the_loop_runs_through_its_own_subgraph_only(tiny_problem, family):
    """Task t's pass starts from t's own loss, not from the stacked losses: a pass from one of
    those would also run (with zeros) through every other task's head and branch. Each head's
    backward runs once per step, in its own task's pass."""
    params = {"family": family, "weighting": "equal", "training.lr": 3e-3} | (TREE if family == "tree" else {})
    model = tiny_problem.replay(params).build_model(0)
    runs = count_head_backwards(model)
    step = make_step(model, tiny_problem.tasks, AGGREGATORS.get("upgrad")(),
                     make_optimizer("sgd", list(model.parameters()), 0.0, 0.0), jacobian="loop")  # fmt: skip
    step(tiny_problem.data.train.inputs[:16], {k: v[:16] for k, v in tiny_problem.data.train.targets.items()})
    assert runs == {name: 1 for name in model.heads}


@pytest.mark.parametrize("method", ["db_mtl", "excess_mtl", "gradnorm", "mgda_ub"])
def test_weightings_that_take_per_task_gradients_start_from_each_task_loss(tiny_problem, method):
    """The same for the weightings that differentiate each loss (``StepContext.loss_of``): each
    head's backward runs twice per step, once in its task's pass and once in the weighted total's."""
    from mtlsearch.weighting import WEIGHTINGS

    model = tiny_problem.replay({"family": "tree", "weighting": "equal", "training.lr": 3e-3} | TREE).build_model(0)
    runs = count_head_backwards(model)
    weighting = WEIGHTINGS.get(method)([t.name for t in tiny_problem.tasks])
    params = list(model.parameters()) + list(weighting.parameters())
    step = make_step(model, tiny_problem.tasks, weighting, make_optimizer("sgd", params, 0.0, 0.0))
    step(tiny_problem.data.train.inputs[:16], {k: v[:16] for k, v in tiny_problem.data.train.targets.items()})
    assert runs == {name: 2 for name in model.heads}
