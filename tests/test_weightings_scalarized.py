"""Scalarizations and loss-based weightings: GLS, STCH, FAMO, DB-MTL (hand-computed cases in
float64, gradients of the scalarized objective, state in checkpoints, pinned errors, and a short
real study over all of them)."""

from __future__ import annotations

import math

import optuna
import pytest
import torch
from method_helpers import TwoHeads
from optuna.trial import FixedTrial
from torch import nn

import mtlsearch
from mtlsearch.checkpoints import CheckpointStore
from mtlsearch.errors import ConfigError
from mtlsearch.training import make_optimizer, make_step, train
from mtlsearch.weighting import WEIGHTINGS, StepContext
from mtlsearch.weighting.db_mtl import max_norm_update

EPS = 1e-8
NEW = ["gls", "stch", "famo", "db_mtl", "excess_mtl"]
F64 = torch.float64


def t64(values):
    return torch.tensor(values, dtype=F64)


def close(actual, expected, rel=1e-12):
    actual = actual.tolist() if isinstance(actual, torch.Tensor) else list(actual)
    assert actual == pytest.approx(list(expected), rel=rel, abs=0), f"{actual} vs {expected}"


def batch(seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(16, 3, generator=g, dtype=F64)
    return x, [torch.randn(16, generator=g, dtype=F64), 3 * torch.randn(16, generator=g, dtype=F64)]


def objective_gradient(objective, losses):
    """d objective / d L_t by autograd, the reference the detached weights must equal."""
    x = losses.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(objective(x), x)
    return grad


# -- GLS -----------------------------------------------------------------------------------------


def test_gls_weights_by_hand():
    """T = 3, L = (2, 8, 0.5): prod = 8, G = 2, weights G / L = (1, 1/4, 4) (up to the 1e-8 shift)."""
    method = WEIGHTINGS.get("gls")(["a", "b", "c"])
    losses = t64([2.0, 8.0, 0.5])
    g = ((2 + EPS) * (8 + EPS) * (0.5 + EPS)) ** (1 / 3)
    close(method(losses), [g / (2 + EPS), g / (8 + EPS), g / (0.5 + EPS)])
    close(method(losses), [1.0, 0.25, 4.0], rel=1e-7)
    two = WEIGHTINGS.get("gls")(["a", "b"])(t64([1.0, 4.0]))  # sqrt(4) / L = (2, 1/2)
    close(two, [math.sqrt((1 + EPS) * (4 + EPS)) / (1 + EPS), math.sqrt((1 + EPS) * (4 + EPS)) / (4 + EPS)])


def test_gls_weights_are_the_gradient_of_t_times_the_geometric_mean():
    losses = t64([0.3, 1.7, 5.0, 0.9])
    w = WEIGHTINGS.get("gls")(list("abcd"))(losses)
    expected = objective_gradient(lambda l: 4 * torch.exp(torch.log(l + EPS).mean()), losses)
    close(w, expected.tolist())
    assert not w.requires_grad and w.dtype == F64


def test_gls_equal_losses_weigh_one_and_zero_losses_stay_finite():
    method = WEIGHTINGS.get("gls")(["a", "b"])
    close(method(t64([0.7, 0.7])), [1.0, 1.0])
    for losses in ([0.0, 1.0], [0.0, 0.0], [1e-30, 3.0]):
        for dtype in (torch.float32, F64):
            w = method(torch.tensor(losses, dtype=dtype))
            assert torch.isfinite(w).all() and (w > 0).all() and w.dtype == dtype
    close(method(t64([0.0, 1.0])), [math.sqrt(EPS * (1 + EPS)) / EPS, math.sqrt(EPS * (1 + EPS)) / (1 + EPS)])


# -- STCH ----------------------------------------------------------------------------------------


def test_stch_warmup_then_smooth_tchebycheff_by_hand():
    """Warm-up of 2 steps: the reference is the mean loss (3, 6); then L = (3, 12) gives log ratios
    (0, log 2), softmax (1/3, 2/3) at mu = 1, and weights 2 (1/3 / 3, 2/3 / 12) = (2/9, 1/9)."""
    method = WEIGHTINGS.get("stch")(["a", "b"], mu=1.0, warmup=2).double()
    close(method(t64([2.0, 4.0])), [1 / (2 + EPS), 1 / (4 + EPS)])  # the sum of the log losses
    close(method(t64([4.0, 8.0])), [1 / (4 + EPS), 1 / (8 + EPS)])
    close(method.reference, [3.0, 6.0])
    r = [math.log((3 + EPS) / (3 + EPS)), math.log((12 + EPS) / (6 + EPS))]
    e = [math.exp(v) for v in r]
    expected = [2 * e[0] / sum(e) / (3 + EPS), 2 * e[1] / sum(e) / (12 + EPS)]
    close(method(t64([3.0, 12.0])), expected)
    close(expected, [2 / 9, 1 / 9], rel=1e-7)
    assert method.steps == 3


@pytest.mark.parametrize("mu", [0.05, 0.5, 1.0, 7.0])
def test_stch_weights_are_the_gradient_of_the_smooth_tchebycheff_objective(mu):
    method = WEIGHTINGS.get("stch")(list("abc"), mu=mu, warmup=0).double()
    with torch.no_grad():
        method.reference.copy_(t64([0.5, 2.0, 1.0]))
    losses = t64([0.8, 1.5, 2.5])

    def objective(l):
        logs = torch.log(l + EPS) - torch.log(method.reference + EPS)
        return 3 * mu * torch.logsumexp(logs / mu, dim=0)

    close(method(losses), objective_gradient(objective, losses).tolist())


def test_stch_small_mu_is_the_tchebycheff_max_and_zero_warmup_uses_a_reference_of_one():
    method = WEIGHTINGS.get("stch")(["a", "b", "c"], mu=1e-4, warmup=0).double()
    w = method(t64([1.0, 4.0, 2.0]))  # the largest log loss takes all the weight: T / L_max
    close(w, [0.0, 3 / (4 + EPS), 0.0], rel=1e-9)
    assert w[0].item() < 1e-300 and w[2].item() < 1e-300
    assert method.reference.tolist() == [1.0, 1.0, 1.0]


def test_stch_zero_losses_stay_finite():
    for warmup in (0, 1):
        method = WEIGHTINGS.get("stch")(["a", "b"], mu=0.01, warmup=warmup)
        for losses in ([0.0, 0.0], [0.0, 5.0], [3.0, 0.0]):
            assert torch.isfinite(method(torch.tensor(losses))).all()


# -- FAMO ----------------------------------------------------------------------------------------


def softmax(values):
    e = [math.exp(v - max(values)) for v in values]
    return [v / sum(e) for v in e]


def famo_by_hand(z, losses):
    scaled = [zi / (li + EPS) for zi, li in zip(z, losses)]
    return [len(z) * s / sum(scaled) for s in scaled]


def test_famo_first_two_steps_by_hand():
    """Step 1: z uniform, weights 2 (1/L) / sum(1/L) = (1.5, 0.5) for L = (1, 3). Step 2: the log
    losses fell by delta = (log 2, log(10/9)); the logits' gradient is z * (delta - z . delta) and
    the first Adam step moves them by -lr * g / (|g| + 1e-8)."""
    lr, decay = 0.025, 0.001
    method = WEIGHTINGS.get("famo")(["a", "b"], lr=lr, decay=decay).double()
    first = [1.0, 3.0]
    close(method(t64(first)), famo_by_hand([0.5, 0.5], first))
    close(famo_by_hand([0.5, 0.5], first), [1.5, 0.5], rel=1e-7)
    assert method.logits.tolist() == [0.0, 0.0]

    second = [0.5, 2.7]
    delta = [math.log(a + EPS) - math.log(b + EPS) for a, b in zip(first, second)]
    mean = 0.5 * delta[0] + 0.5 * delta[1]
    grad = [0.5 * (d - mean) + decay * 0.0 for d in delta]  # the logits are still 0
    # Adam, step 1: m_hat = g, v_hat = g^2 (bias-corrected), so the step is lr * g / (|g| + eps)
    logits = [-lr * g / (math.sqrt((1 - 0.999) * g * g / (1 - 0.999)) + 1e-8) for g in grad]
    w = method(t64(second))
    close(method.logits, logits)
    assert logits[0] < 0 < logits[1]  # task a fell faster: its weight goes down
    close(w, famo_by_hand(softmax(logits), second))
    assert w.sum().item() == pytest.approx(2.0, rel=1e-15)


def test_famo_logits_follow_torch_adam_with_weight_decay():
    lr, decay = 0.1, 0.05
    method = WEIGHTINGS.get("famo")(list("abc"), lr=lr, decay=decay).double()
    xi = nn.Parameter(torch.zeros(3, dtype=F64))
    adam = torch.optim.Adam([xi], lr=lr, weight_decay=decay)
    gen = torch.Generator().manual_seed(0)
    history = [torch.rand(3, generator=gen, dtype=F64) * 3 + 0.1 for _ in range(8)]
    previous = None
    for losses in history:
        w = method(losses)
        now = torch.log(losses + EPS)
        if previous is not None:
            z = torch.softmax(xi.detach(), 0)
            jac = torch.diag(z) - torch.outer(z, z)
            xi.grad = jac.T @ (previous - now)  # Adam adds decay * xi itself
            adam.step()
        previous = now
        assert torch.allclose(method.logits, xi.detach(), rtol=1e-12, atol=1e-15)
        close(w, famo_by_hand(torch.softmax(xi.detach(), 0).tolist(), losses.tolist()))
    assert method.steps == len(history) - 1


def test_famo_state_round_trips_through_the_state_dict():
    a = WEIGHTINGS.get("famo")(["a", "b"])
    for losses in ([1.0, 2.0], [0.5, 1.9], [0.4, 1.0]):
        a(torch.tensor(losses))
    b = WEIGHTINGS.get("famo")(["a", "b"])
    b.load_state_dict(a.state_dict())
    assert (b.steps, b.started) == (a.steps, a.started) == (2, True)
    nxt = torch.tensor([0.3, 0.9])
    assert torch.equal(a(nxt), b(nxt)) and torch.equal(a.logits, b.logits)


# -- DB-MTL --------------------------------------------------------------------------------------


class ScalarTasks(nn.Module):
    """Shared theta (2,), one scalar head per task: L_a = h_a theta_0^2, L_b = h_b theta_1^2."""

    def __init__(self, theta=(1.0, 2.0), heads=(3.0, 0.5)):
        super().__init__()
        self.theta = nn.Parameter(t64(list(theta)))
        self.ha = nn.Parameter(t64(heads[0]))
        self.hb = nn.Parameter(t64(heads[1]))

    def losses(self):
        return torch.stack([self.ha * self.theta[0] ** 2, self.hb * self.theta[1] ** 2])

    def context(self):
        return StepContext({"a": [self.theta, self.ha], "b": [self.theta, self.hb]}, [self.theta])


def db_mtl_step(method, model):
    """The trainer's weighted step: sum_t w_t L_t + regularizer, one backward."""
    for p in model.parameters():
        p.grad = None
    losses = model.losses()
    total = (method(losses, model.context()) * losses).sum()
    reg = method.regularizer()
    assert isinstance(reg, torch.Tensor) and reg.item() == 0.0  # value 0: only its gradient counts
    (total + reg).backward()


def test_max_norm_update_by_hand():
    close(max_norm_update(t64([[3.0, 4.0], [0.0, 1.0]])), [3.0, 9.0])  # norms 5, 1: (3, 4) + 5 (0, 1)
    close(max_norm_update(t64([[3.0, 4.0], [0.0, 0.0]])), [3.0, 4.0])  # a zero row adds nothing
    assert max_norm_update(torch.zeros(3, 4, dtype=F64)).tolist() == [0.0] * 4
    g = t64([1.0, -2.0, 0.5])
    close(max_norm_update(torch.stack([g, g])), (2 * g).tolist())
    close(max_norm_update(torch.stack([g, -g])), [0.0, 0.0, 0.0])


def test_db_mtl_two_steps_by_hand():
    """Step 1 at theta = (1, 2), h = (3, 1/2): L = (3, 2); grad_theta log L = (6, 0)/3 = (2, 0) and
    (0, 2)/2 = (0, 1); norms 2 and 1, so the shared update is (2, 0) + 2 (0, 1) = (2, 2). The heads
    get grad log L_t: theta_0^2 / L_a = 1/3 and theta_1^2 / L_b = 2.
    Step 2 at theta = (2, 2): grad log L = (12, 0)/12 = (1, 0) and (0, 1); with b = 0.9 / sqrt(2),
    the averages are (b 2 + (1 - b) 1, 0) = (1 + b, 0) and (0, 1): update (1 + b) (1, 1)."""
    model = ScalarTasks()
    method = WEIGHTINGS.get("db_mtl")(["a", "b"], beta=0.9, sigma=0.5)
    db_mtl_step(method, model)
    ga, gb = 6 / (3 + EPS), 2 / (2 + EPS)
    close(model.theta.grad, [ga, ga])  # row b rescaled to row a's (larger) norm
    close(model.theta.grad, [2.0, 2.0], rel=1e-7)
    close([model.ha.grad.item(), model.hb.grad.item()], [1 / (3 + EPS), 4 / (2 + EPS)])

    with torch.no_grad():
        model.theta.copy_(t64([2.0, 2.0]))
    db_mtl_step(method, model)
    b = 0.9 / math.sqrt(2)
    ha = b * ga + (1 - b) * 12 / (12 + EPS)  # the moving average of task a's gradient
    hb = b * gb + (1 - b) * 2 / (2 + EPS)
    close(model.theta.grad, [max(ha, hb), max(ha, hb)])
    close(model.theta.grad, [1 + b, 1 + b], rel=1e-7)
    close([model.ha.grad.item(), model.hb.grad.item()], [4 / (12 + EPS), 4 / (2 + EPS)])
    assert method.steps == 2 and set(method.averages) == {"a+b"}


def test_db_mtl_with_beta_zero_is_the_max_norm_rescaling_of_the_current_log_gradients():
    model = ScalarTasks(theta=(0.5, -1.5), heads=(2.0, 0.25))
    method = WEIGHTINGS.get("db_mtl")(["a", "b"], beta=0.0)
    for _ in range(2):
        db_mtl_step(method, model)
        losses = model.losses()
        rows = torch.stack([torch.autograd.grad(torch.log(losses[i] + EPS), model.theta, retain_graph=True)[0] for i in range(2)])
        assert torch.allclose(model.theta.grad, max_norm_update(rows), rtol=1e-12, atol=0)
        with torch.no_grad():
            model.theta.add_(t64([0.3, 0.7]))  # a new point: no memory of the last one


def test_db_mtl_groups_a_trees_shared_parameters_by_node(tiny_problem):
    params = {"family": "tree", "weighting": "equal", "training.lr": 0.003}
    params.update({f"tree.{t}.block{b}": int(t == "sum" and b > 0) for t in ("right", "sum") for b in range(3)})
    candidate = tiny_problem.sample(FixedTrial(params))
    model = candidate.build_model(0)
    method = WEIGHTINGS.get("db_mtl")(tiny_problem.task_names)
    step = make_step(model, tiny_problem.tasks, method, make_optimizer("sgd", list(model.parameters()), 0.0, 0.0))
    x, y = tiny_problem.data.train[:16]
    step(x, y)
    assert set(method.averages) == {"left+right+sum", "left+right"}
    assert method.averages["left+right"].shape[0] == 2


def test_db_mtl_needs_a_context_and_handles_no_shared_parameters():
    method = WEIGHTINGS.get("db_mtl")(["a", "b"])
    with pytest.raises(ValueError, match="StepContext"):
        method(torch.ones(2))
    w = method(t64([2.0, 0.0]), StepContext())
    close(w, [1 / (2 + EPS), 1 / EPS])
    assert method.regularizer() == 0.0 and method.steps == 0


# -- ExcessMTL -----------------------------------------------------------------------------------


def test_excess_mtl_two_steps_by_hand():
    """Step 1 at theta = (1, 2), h = (3, 1/2): g_a = (6, 0), g_b = (0, 2); e = g^2 / sqrt(g^2) per
    coordinate, so e = (6, 2) (up to eps): the baselines; weights stay 1. Step 2 at theta = (2, 2):
    g_a = (12, 0), g_b = (0, 2), sums (180, 0) and (0, 8); e = (144 / sqrt(180), 4 / sqrt(8)),
    r = e / (6, 2), and the weights are 2 softmax(eta r)."""
    eta = 0.5
    model = ScalarTasks()
    method = WEIGHTINGS.get("excess_mtl")(["a", "b"], step_size=eta).double()
    close(method(model.losses(), model.context()), [1.0, 1.0])
    base = [36 / math.sqrt(36 + EPS), 4 / math.sqrt(4 + EPS)]
    close(method.baseline, base)
    close(base, [6.0, 2.0], rel=1e-8)
    with torch.no_grad():
        model.theta.copy_(t64([2.0, 2.0]))
    w = method(model.losses(), model.context())
    r = [144 / math.sqrt(180 + EPS) / base[0], 4 / math.sqrt(8 + EPS) / base[1]]
    close(w, [2 * v for v in softmax([eta * r[0], eta * r[1]])])
    assert w[0] > 1 > w[1]  # task a moved farther from convergence relative to its start
    close(method.squares["a"], [180.0, 0.0])
    close(method.squares["b"], [0.0, 8.0])


def test_excess_mtl_weights_are_the_normalised_exponentiated_sum_of_ratios():
    model = TwoHeads()
    method = WEIGHTINGS.get("excess_mtl")(["a", "b"], step_size=0.3).double()
    squares = [torch.zeros(sum(p.numel() for p in model.shared.parameters()), dtype=F64) for _ in range(2)]
    baseline, total = None, torch.zeros(2, dtype=F64)
    for seed in range(4):
        losses = model.losses(*batch(seed))
        e = []
        for i in range(2):
            g = torch.cat([x.reshape(-1) for x in torch.autograd.grad(losses[i], list(model.shared.parameters()), retain_graph=True)])
            squares[i] += g * g
            e.append((g * g / (squares[i] + EPS).sqrt()).sum())
        e = torch.stack(e)
        if baseline is None:
            baseline = e
        else:
            total += 0.3 * e / baseline
        w = method(losses, model.context())
        assert torch.allclose(w, 2 * torch.softmax(total, 0), rtol=1e-12, atol=0)


def test_excess_mtl_without_shared_parameters_or_gradients_keeps_equal_weights():
    method = WEIGHTINGS.get("excess_mtl")(["a", "b"])
    assert method(t64([1.0, 2.0]), StepContext()).tolist() == [1.0, 1.0]
    model = ScalarTasks()
    assert method(torch.zeros(2), model.context()).tolist() == [1.0, 1.0]  # no graph: no gradient
    with pytest.raises(ValueError, match="StepContext"):
        method(torch.ones(2))


# -- shared: errors, repr, space, checkpoints, a study ------------------------------------------


@pytest.mark.parametrize(("name", "kwargs", "message"), [
    ("stch", {"mu": 0}, "Parameter `mu` of STCH should be a number > 0. Found `mu = 0.0`."),
    ("stch", {"warmup": -1}, "Parameter `warmup` of STCH should be an integer >= 0. Found `warmup = -1`."),
    ("stch", {"warmup": 2.5}, "Parameter `warmup` of STCH should be an integer >= 0. Found `warmup = 2.5`."),
    ("famo", {"lr": 0}, "Parameter `lr` of FAMO should be a number > 0. Found `lr = 0.0`."),
    ("famo", {"decay": -0.1}, "Parameter `decay` of FAMO should be a number >= 0. Found `decay = -0.1`."),
    ("famo", {"lr": float("inf")}, "Parameter `lr` of FAMO should be a number > 0. Found `lr = inf`."),
    ("db_mtl", {"beta": 1.5}, "Parameter `beta` of DB-MTL should be in [0, 1]. Found `beta = 1.5`."),
    ("db_mtl", {"sigma": -1}, "Parameter `sigma` of DB-MTL should be a number >= 0. Found `sigma = -1.0`."),
    ("db_mtl", {"beta": "big"}, "Parameter `beta` of DB-MTL should be in [0, 1]. Found `beta = 'big'`."),
    ("excess_mtl", {"step_size": 0}, "Parameter `step_size` of ExcessMTL should be a number > 0. Found `step_size = 0.0`."),
])
def test_bad_hyperparameters_give_pinned_errors(name, kwargs, message):
    with pytest.raises(ConfigError) as err:
        WEIGHTINGS.get(name)(["a", "b"], **kwargs)
    assert str(err.value) == message


def test_repr_shows_hyperparameters():
    assert repr(WEIGHTINGS.get("gls")(["a", "b"])) == "GLS()"
    assert repr(WEIGHTINGS.get("stch")(["a", "b"], mu=0.5, warmup=3)) == "STCH(mu=0.5, warmup=3)"
    assert repr(WEIGHTINGS.get("famo")(["a", "b"])) == "FAMO(lr=0.025, decay=0.001)"
    assert repr(WEIGHTINGS.get("db_mtl")(["a", "b"], beta=0.5)) == "DBMTL(beta=0.5, sigma=0.5)"
    assert repr(WEIGHTINGS.get("excess_mtl")(["a", "b"])) == "ExcessMTL(step_size=0.01)"


def test_space_sections_search_and_validate_the_hyperparameters(tiny_space):
    tiny_space["search_space"]["weightings"] = NEW
    tiny_space["search_space"]["stch"] = {"mu": {"low": 0.1, "high": 10.0, "log": True}, "warmup": [0, 8]}
    tiny_space["search_space"]["famo"] = {"lr": [0.01, 0.025], "decay": 0.01}
    tiny_space["search_space"]["db_mtl"] = {"beta": {"low": 0.0, "high": 0.99}}
    tiny_space["search_space"]["excess_mtl"] = {"step_size": {"low": 1e-3, "high": 1.0, "log": True}}
    problem, _ = mtlsearch.load(tiny_space)
    base = {"family": "hard_sharing", "training.lr": 0.003}
    c = problem.sample(FixedTrial(base | {"weighting": "stch", "stch.mu": 0.3, "stch.warmup": 8}))
    assert c.summary()["weighting"] == {"name": "stch", "mu": 0.3, "warmup": 8}
    c = problem.sample(FixedTrial(base | {"weighting": "famo", "famo.lr": 0.01}))
    assert c.summary()["weighting"] == {"name": "famo", "lr": 0.01, "decay": 0.01}
    c = problem.sample(FixedTrial(base | {"weighting": "db_mtl", "db_mtl.beta": 0.5}))
    assert c.summary()["weighting"] == {"name": "db_mtl", "beta": 0.5, "sigma": 0.5}
    c = problem.sample(FixedTrial(base | {"weighting": "gls"}))
    assert c.summary()["weighting"] == {"name": "gls"}
    c = problem.sample(FixedTrial(base | {"weighting": "excess_mtl", "excess_mtl.step_size": 0.1}))
    assert c.summary()["weighting"] == {"name": "excess_mtl", "step_size": 0.1}
    tiny_space["search_space"]["famo"] = {"lr": {"low": 0.0, "high": 0.1}}
    with pytest.raises(ConfigError) as err:
        mtlsearch.load(tiny_space)
    assert str(err.value) == "search_space.famo.lr.low: Parameter `lr` of FAMO should be a number > 0. Found `lr = 0.0`."


class Stop(Exception):
    pass


def stop_after_two(e):
    if e.epoch == 2:
        raise Stop


@pytest.mark.parametrize("name", ["stch", "famo", "db_mtl", "excess_mtl"])
def test_a_stopped_run_resumes_to_the_same_weights_and_state(tiny_space, tmp_path, name):
    tiny_space["search_space"]["weightings"] = [name]
    if name == "stch":
        tiny_space["search_space"]["stch"] = {"warmup": 5}  # the reference is set in epoch 2
    problem, _ = mtlsearch.load(tiny_space)
    params = {"family": "tree", "weighting": name, "training.lr": 3e-3}
    params.update({f"tree.right.block{b}": 0 for b in range(3)} | {f"tree.sum.block{b}": 1 for b in range(3)})
    candidate = problem.replay(params)
    training = {**candidate.training, "epochs": 3}
    cpu = torch.device("cpu")
    straight, method = candidate.build_model(seed=5), candidate.new_weighting()
    train(straight, problem.tasks, method, problem.data.train, training, cpu, seed=5)
    store = CheckpointStore(tmp_path / "run")
    with pytest.raises(Stop):
        train(candidate.build_model(seed=5), problem.tasks, candidate.new_weighting(), problem.data.train, training, cpu, seed=5, on_epoch=stop_after_two, checkpoints=store)
    resumed, again = candidate.build_model(seed=99), candidate.new_weighting()
    result = train(resumed, problem.tasks, again, problem.data.train, training, cpu, seed=5, checkpoints=store)
    assert result.resumed_from == 2
    for key, value in straight.state_dict().items():
        assert torch.allclose(value, resumed.state_dict()[key], atol=1e-6), key
    mine, theirs = method.state_dict(), again.state_dict()
    assert mine.keys() == theirs.keys()
    if name != "excess_mtl":
        assert method.steps == again.steps == (11 if name == "famo" else 12)  # 3 epochs x 4 batches
    for key, value in mine.items():
        if isinstance(value, torch.Tensor):
            assert torch.allclose(value, theirs[key], atol=1e-6), key
    if name == "db_mtl":
        assert mine["_extra_state"]["averages"].keys() == {"left+right"}  # sum branches at the input
        for key, value in mine["_extra_state"]["averages"].items():
            assert torch.allclose(value, theirs["_extra_state"]["averages"][key], atol=1e-6), key
    if name == "excess_mtl":
        assert mine["_extra_state"]["squares"].keys() == {"left", "right"}  # sum shares nothing
        for key, value in mine["_extra_state"]["squares"].items():
            assert torch.allclose(value, theirs["_extra_state"]["squares"][key], rtol=1e-5), key


@pytest.mark.slow
def test_a_study_trains_every_new_method_end_to_end(tiny_space):
    tiny_space["search_space"].update(families=["hard_sharing", "tree"], weightings=NEW, stch={"warmup": 2})
    problem, _ = mtlsearch.load(tiny_space)
    study = optuna.create_study(directions=problem.directions, sampler=optuna.samplers.RandomSampler(seed=0))
    for name in NEW:
        study.enqueue_trial({"family": "hard_sharing", "weighting": name, "training.lr": 0.003})
    study.optimize(mtlsearch.Objective(problem, device="cpu"), n_trials=len(NEW))
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * len(NEW)
    assert [t.user_attrs["architecture"]["weighting"]["name"] for t in study.trials] == NEW
