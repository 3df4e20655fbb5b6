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
