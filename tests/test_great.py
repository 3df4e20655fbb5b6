"""GREAT and the training-strategy extension point: the adversary's inputs and loss by hand, the
gradient reversal against autograd, composition with weightings and aggregators, checkpoints,
and a searched study whose pick exports and rebuilds with its strategy."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from optuna.trial import FixedTrial
from method_helpers import check_resume_equals_uninterrupted
from torch import nn

import mtlsearch
from mtlsearch.config import RunConfig
from mtlsearch.errors import ConfigError
from mtlsearch.tasks import TaskSpec
from mtlsearch.training import make_optimizer, make_step
from mtlsearch.weighting import METHODS, STRATEGIES
from mtlsearch.weighting.great import GREAT, gradient_features

F64 = torch.float64
TASKS = [TaskSpec("a", "regression"), TaskSpec("b", "regression")]


class Shared(nn.Module):
    """A trunk shared by two regression heads, exposing ``shared_feature`` like mtlsearch's networks."""

    def __init__(self, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.input_shape = (3,)
        self.trunk = nn.Linear(3, 4)
        # non-linear heads: with a linear one-output head, each sample's gradient of the feature is
        # a multiple of the head's weights, which the normalisation makes independent of the trunk
        self.heads = nn.ModuleDict({t: nn.Sequential(nn.Linear(4, 4), nn.Tanh(), nn.Linear(4, 1)) for t in "ab"})
        self.shared_feature = None

    def forward(self, x):
        h = torch.tanh(self.trunk(x))
        self.shared_feature = h
        return {t: head(h) for t, head in self.heads.items()}

    def task_parameters(self):
        return {t: list(self.trunk.parameters()) + list(self.heads[t].parameters()) for t in ("a", "b")}


def batch(seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(8, 3, generator=g), {"a": torch.randn(8, generator=g), "b": torch.randn(8, generator=g)}


def test_registered_with_the_plain_step_as_none():
    assert STRATEGIES.get("great") is GREAT and GREAT.name == "great"
    assert {"great", "none"} <= set(STRATEGIES.names()) and not STRATEGIES.get("none").acts
    assert "great" not in METHODS  # a strategy, not a weighting or aggregator
    assert repr(GREAT(["a", "b"], lam=0.5)) == "GREAT(lam=0.5, lr=0.001, hidden=32)"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"lam": -1}, "Parameter `lam` of GREAT should be a number >= 0. Found `lam = -1.0`."),
        ({"lr": 0}, "Parameter `lr` of GREAT should be a number > 0. Found `lr = 0.0`."),
        ({"hidden": 0.5}, "Parameter `hidden` of GREAT should be an integer >= 1. Found `hidden = 0.5`."),
    ],
)
def test_bad_hyperparameters_get_exact_errors(kwargs, message):
    with pytest.raises(ConfigError) as info:
        GREAT(["a", "b"], **kwargs)
    assert str(info.value) == message


def test_gradient_features_pool_image_gradients_and_normalise_each_sample():
    g_image = torch.zeros(2, 3, 2, 2, dtype=F64)
    g_image[0, 0] = 4.0  # sample 0: pooled [4, 0, 0] -> [1, 0, 0]
    g_image[1, 1] = 1.0
    g_image[1, 2] = -1.0  # sample 1: pooled [0, 1, -1] -> [0, 1, -1] / sqrt(2)
    out = gradient_features([g_image, torch.zeros_like(g_image)])
    s = 2**-0.5
    assert torch.allclose(out, torch.tensor([[1, 0, 0], [0, s, -s], [0, 0, 0], [0, 0, 0]], dtype=F64))


def test_the_network_gets_the_reversed_adversarial_gradient_and_the_adversary_its_own():
    x, y = batch()
    lam = 0.3
    model = Shared()
    reference = Shared()
    strategy = GREAT(["a", "b"], lam=lam, lr=0.1)
    opt = make_optimizer("sgd", list(model.parameters()), 0.0, 0.0)  # lr 0: the gradients stay readable
    step = make_step(model, TASKS, METHODS.get("equal")(["a", "b"]), opt, strategy)
    adversary = [p.detach().clone() for p in strategy.adversary.parameters()]
    # by hand, on the reference copy: L = L_a + L_b - lam * CE(D(normalised dL_t/dh), t)
    out = reference(x)
    losses = torch.stack([F.mse_loss(out[t].reshape(-1), y[t]) for t in ("a", "b")])
    h = reference.shared_feature
    grads = [torch.autograd.grad(losses[i], h, create_graph=True)[0] for i in range(2)]
    inputs = torch.cat([g / g.norm(dim=1, keepdim=True) for g in grads])
    w1, b1, w2, b2 = adversary
    logits = torch.relu(inputs @ w1.T + b1) @ w2.T + b2
    adv = F.cross_entropy(logits, torch.tensor([0] * 8 + [1] * 8))
    total = losses.sum() - lam * adv
    plain = torch.autograd.grad(losses.sum(), list(reference.trunk.parameters()), retain_graph=True)
    expected = torch.autograd.grad(total, list(reference.parameters()), retain_graph=True)
    params_adv = [p.clone().requires_grad_() for p in adversary]
    logits = torch.relu(inputs.detach() @ params_adv[0].T + params_adv[1]) @ params_adv[2].T + params_adv[3]
    adv_grads = torch.autograd.grad(F.cross_entropy(logits, torch.tensor([0] * 8 + [1] * 8)), params_adv)

    assert max(float((a - b).abs().max()) for a, b in zip(plain, expected[:2])) > 1e-4  # the term matters
    step(x, y)
    for p, g in zip(model.parameters(), expected):
        assert torch.allclose(p.grad, g, atol=1e-6)
    assert strategy.last_adversary_loss == pytest.approx(float(adv.detach()), rel=1e-6)
    for p, g in zip(strategy.adversary.parameters(), adv_grads):
        assert torch.allclose(p.grad, g, atol=1e-6)  # its own gradient, not the reversed one
    moved = [float((p.detach() - a).abs().max()) for p, a in zip(strategy.adversary.parameters(), adversary)]
    assert max(moved) > 0  # the adversary took its Adam step


@pytest.mark.parametrize("method", ["uncertainty", "pcgrad", "upgrad"])
def test_composes_with_weightings_and_aggregators(method):
    x, y = batch()

    def grads(strategy):
        model = Shared()
        m = METHODS.get(method)
        opt = make_optimizer("sgd", list(model.parameters()), 0.0, 0.0)
        instance = m(["a", "b"]) if method == "uncertainty" else m()
        torch.manual_seed(0)
        step = make_step(model, TASKS, instance, opt, strategy)
        step(x, y)
        return [p.grad.clone() for p in model.trunk.parameters()]

    plain = grads(None)
    off = grads(GREAT(["a", "b"], lam=0.0))
    on = grads(GREAT(["a", "b"], lam=1.0))
    assert all(torch.allclose(a, b, atol=1e-7) for a, b in zip(plain, off))  # lam = 0: the network's step is unchanged
    assert any(not torch.allclose(a, b, atol=1e-6) for a, b in zip(plain, on))


def test_without_a_shared_feature_it_does_nothing():
    model = Shared()
    strategy = GREAT(["a", "b"])
    strategy.setup(None, torch.device("cpu"))
    assert strategy.adversary is None and strategy.loss(torch.ones(2), None) == 0.0 and strategy.checkpoint_state() == {}


def test_a_space_searches_strategies_and_names_bad_ones(tiny_space):
    tiny_space["search_space"].update(strategies=["none", "great"], great={"lam": {"low": 0.01, "high": 1.0, "log": True}})
    problem, _ = mtlsearch.load(tiny_space)
    params = {"family": "hard_sharing", "weighting": "equal", "strategy": "great", "great.lam": 0.2, "training.lr": 3e-3}
    candidate = problem.sample(FixedTrial(params))
    assert repr(candidate.strategy) == "GREAT(lam=0.2, lr=0.001, hidden=32)"
    assert candidate.summary()["strategy"] == {"name": "great", "lam": 0.2, "lr": 0.001, "hidden": 32}
    plain = problem.sample(FixedTrial({**params, "strategy": "none"}))
    assert plain.strategy is None and plain.key() != candidate.key()
    single = problem.sample(FixedTrial({"family": "single_task", "training.lr": 3e-3}))
    assert single.strategy is None  # nothing shared: no strategy drawn, as no weighting is
    tiny_space["search_space"]["strategies"] = ["grat"]
    with pytest.raises(ConfigError) as info:
        mtlsearch.load(tiny_space)
    assert str(info.value).startswith("search_space.strategies[0]: unknown training strategy `grat`")
    tiny_space["search_space"]["strategies"] = ["none"]
    with pytest.raises(ConfigError, match=r"search_space\.great: unknown key; .*strategies"):
        mtlsearch.load(tiny_space)


@pytest.mark.slow
def test_training_resumed_from_a_checkpoint_equals_uninterrupted(tiny_space, tmp_path):
    tiny_space["search_space"].update(strategies=["great"], weightings=["equal"])
    problem, _ = mtlsearch.load(tiny_space)
    candidate = problem.replay({"family": "hard_sharing", "weighting": "equal", "strategy": "great", "training.lr": 3e-3})
    check_resume_equals_uninterrupted(candidate, tmp_path / "run")


@pytest.mark.slow
def test_a_study_searches_great_and_its_export_rebuilds_it(tiny_space, tmp_path):
    from mtlsearch.search import results

    tiny_space["search_space"].update(
        families=["hard_sharing"], weightings=["equal", "pcgrad"], strategies=["great"], great={"lam": [0.5]}
    )
    del tiny_space["search_space"]["tree"]
    problem, _ = mtlsearch.load(tiny_space)
    run = RunConfig(study="g", storage=f"sqlite:///{tmp_path}/s.db", n_trials=2, seed=0, device="cpu")
    study = mtlsearch.run_search(problem, run)
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"]
    trial = study.trials[0]
    assert trial.params["strategy"] == "great"
    assert trial.user_attrs["architecture"]["strategy"] == {"name": "great", "lam": 0.5, "lr": 0.001, "hidden": 32}
    config = results.export_config(study, trial)
    rebuilt = problem.replay(config["params"])
    assert repr(rebuilt.strategy) == "GREAT(lam=0.5, lr=0.001, hidden=32)"


@pytest.mark.parametrize("method", ["equal", "upgrad"])
def test_each_task_gradient_of_the_feature_starts_from_that_task_loss(method):
    """GREAT differentiates each task's own loss (``loss_of``), not the stacked losses: a pass from
    ``losses[t]`` would also run through the other task's head (with zeros). Each head's output
    gets its gradient once in its task's pass to the feature, then once in the weighted step's
    backward, or twice in the aggregated step's (its task's pass, then the strategy's term)."""
    x, y = batch()
    model = Shared()
    computed = {t: 0 for t in "ab"}

    def count(module, args, output, task):
        if output.requires_grad:  # not in the strategy's set-up pass, which runs without gradients
            output.register_hook(lambda grad: computed.__setitem__(task, computed[task] + 1))

    for t, head in model.heads.items():
        head.register_forward_hook(lambda m, a, o, t=t: count(m, a, o, t))
    m = METHODS.get(method)
    step = make_step(model, TASKS, m(["a", "b"]) if method == "equal" else m(),
                     make_optimizer("sgd", list(model.parameters()), 0.0, 0.0), GREAT(["a", "b"], lam=0.5))  # fmt: skip
    step(x, y)
    expected = 2 if method == "equal" else 3
    assert computed == {"a": expected, "b": expected}
