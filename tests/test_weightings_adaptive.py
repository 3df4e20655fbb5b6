"""Adaptive loss weightings: uncertainty, GradNorm, DWA, RLW, IMTL-L (hand-computed cases,
edge cases, pinned errors, and short real training runs)."""

from __future__ import annotations

import math

import pytest
import torch
from method_helpers import TwoHeads
from optuna.trial import FixedTrial
from torch import nn

import mtlsearch
from mtlsearch.errors import ConfigError
from mtlsearch.training import train
from mtlsearch.weighting import WEIGHTINGS, StepContext

ADAPTIVE = ["uncertainty", "gradnorm", "dwa", "rlw", "imtl_l"]


def trainer_total(method, losses, context=None):
    """What the trainer's weighted step minimises."""
    total = (method(losses, context) * losses).sum()
    reg = method.regularizer()
    return total + reg if isinstance(reg, torch.Tensor) else total


def batch(seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(16, 3, generator=g, dtype=torch.float64)
    return x, [torch.randn(16, generator=g, dtype=torch.float64), 3 * torch.randn(16, generator=g, dtype=torch.float64)]


# -- uncertainty and IMTL-L ----------------------------------------------------------------------


def test_uncertainty_total_and_gradient_by_hand():
    method = WEIGHTINGS.get("uncertainty")(["a", "b"])
    s1, s2, l1, l2 = 0.3, -0.5, 2.0, 0.7
    with torch.no_grad():
        method.log_variances.copy_(torch.tensor([s1, s2]))
    losses = torch.tensor([l1, l2])
    total = trainer_total(method, losses)
    assert total.item() == pytest.approx(math.exp(-s1) * l1 + s1 + math.exp(-s2) * l2 + s2, rel=1e-6)
    total.backward()
    expected = [1 - math.exp(-s1) * l1, 1 - math.exp(-s2) * l2]
    assert method.log_variances.grad.tolist() == pytest.approx(expected, rel=1e-6)


def test_imtl_l_total_and_gradient_by_hand():
    method = WEIGHTINGS.get("imtl_l")(["a", "b"])
    s1, s2, l1, l2 = 0.4, -1.2, 1.5, 3.0
    with torch.no_grad():
        method.scales.copy_(torch.tensor([s1, s2]))
    losses = torch.tensor([l1, l2])
    total = trainer_total(method, losses)
    assert total.item() == pytest.approx(math.exp(s1) * l1 - s1 + math.exp(s2) * l2 - s2, rel=1e-6)
    total.backward()
    assert method.scales.grad.tolist() == pytest.approx([math.exp(s1) * l1 - 1, math.exp(s2) * l2 - 1], rel=1e-6)


@pytest.mark.parametrize("name", ["uncertainty", "imtl_l"])
def test_learned_scale_weightings_start_equal_and_keep_dtype(name):
    method = WEIGHTINGS.get(name)(["a", "b", "c"])
    losses = torch.tensor([1.0, 0.0, 2.0], dtype=torch.float64, requires_grad=True)
    w = method(losses)
    assert w.dtype == torch.float64 and w.shape == (3,) and w.requires_grad  # in the graph on purpose
    assert w.tolist() == [1.0, 1.0, 1.0]
    trainer_total(method, losses).backward()
    assert torch.isfinite(losses.grad).all() and torch.isfinite(next(method.parameters()).grad).all()


# -- DWA ---------------------------------------------------------------------------------------


def dwa_weights(ratios, temperature):
    e = [math.exp(r / temperature) for r in ratios]
    return [len(e) * v / sum(e) for v in e]


def test_dwa_stepwise_from_a_known_history():
    method = WEIGHTINGS.get("dwa")(["a", "b"], temperature=2.0)
    history = [[4.0, 2.0], [2.0, 1.5], [1.0, 1.5], [1.0, 1.0]]
    seen = [method(torch.tensor(l)).tolist() for l in history]
    assert seen[0] == [1.0, 1.0] and seen[1] == [1.0, 1.0]  # the first two steps
    assert seen[2] == pytest.approx(dwa_weights([2.0 / 4.0, 1.5 / 2.0], 2.0), rel=1e-6)
    assert seen[3] == pytest.approx(dwa_weights([1.0 / 2.0, 1.5 / 1.5], 2.0), rel=1e-6)
    assert sum(seen[3]) == pytest.approx(2.0)


def test_dwa_windows_average_the_losses_and_hold_the_weights():
    method = WEIGHTINGS.get("dwa")(["a", "b", "c"], temperature=0.5, window=2)
    history = [[4, 1, 2], [2, 1, 2], [1, 1, 3], [1, 2, 1], [5, 5, 5], [0, 0, 0], [9, 9, 9]]
    seen = [method(torch.tensor(l, dtype=torch.float32)).tolist() for l in history]
    assert all(w == [1.0, 1.0, 1.0] for w in seen[:4])  # windows 1 and 2
    # window 3 (steps 5-6) uses means of window 2 ([1, 1.5, 2]) over window 1 ([3, 1, 2])
    expected = dwa_weights([1 / 3, 1.5, 1.0], 0.5)
    assert seen[4] == pytest.approx(expected, rel=1e-5) and seen[5] == pytest.approx(expected, rel=1e-5)
    # window 4 (step 7) uses window 3 ([2.5, 2.5, 2.5]) over window 2
    assert seen[6] == pytest.approx(dwa_weights([2.5, 2.5 / 1.5, 1.25], 0.5), rel=1e-5)


def test_dwa_zero_and_identical_losses_give_finite_weights():
    method = WEIGHTINGS.get("dwa")(["a", "b"], temperature=1e-3)
    for l in ([0.0, 1.0], [0.0, 1e-30], [0.0, 1.0], [1.0, 1.0]):
        w = method(torch.tensor(l, dtype=torch.float64))
        assert torch.isfinite(w).all() and w.dtype == torch.float64
        assert w.sum().item() == pytest.approx(2.0)
    same = WEIGHTINGS.get("dwa")(["a", "b"])
    for _ in range(4):
        w = same(torch.tensor([0.7, 0.7]))
    assert w.tolist() == pytest.approx([1.0, 1.0])


def test_dwa_step_count_is_in_the_state_dict():
    method = WEIGHTINGS.get("dwa")(["a", "b"], window=3)
    for _ in range(4):
        method(torch.tensor([1.0, 2.0]))
    again = WEIGHTINGS.get("dwa")(["a", "b"], window=3)
    again.load_state_dict(method.state_dict())
    assert again.steps == 4 and torch.equal(again.window_sum, method.window_sum)


@pytest.mark.parametrize("window", [1, 2, 3])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dwa_python_float_path_matches_the_tensor_path(monkeypatch, window, dtype):
    """On the CPU the end of a window is computed on Python floats; it must leave the same
    buffers and give the same weights as the tensor path used on other devices."""
    import mtlsearch.weighting.dwa as dwa_module

    gen = torch.Generator().manual_seed(window)
    history = [torch.rand(3, generator=gen, dtype=dtype) * 4 for _ in range(11)]
    history[5] = torch.tensor([0.0, 1.0, 2.0], dtype=dtype)  # a zero mean: ratio 1 next time
    fast = WEIGHTINGS.get("dwa")(["a", "b", "c"], temperature=0.7, window=window)
    seen_fast = [fast(l) for l in history]
    monkeypatch.setattr(dwa_module, "_ARRAY_CODES", {})  # force the tensor path
    slow = WEIGHTINGS.get("dwa")(["a", "b", "c"], temperature=0.7, window=window)
    seen_slow = [slow(l) for l in history]
    for a, b in zip(seen_fast, seen_slow):
        assert a.dtype == dtype and torch.allclose(a, b, rtol=1e-6, atol=0)
    assert fast.steps == slow.steps == len(history)
    state_fast, state_slow = fast.state_dict(), slow.state_dict()
    assert state_fast.keys() == state_slow.keys()
    for key in ("window_sum", "window_means", "current_weights"):
        assert state_fast[key].dtype == torch.float32
        assert torch.allclose(state_fast[key], state_slow[key], rtol=1e-6, atol=0), key


# -- RLW ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("distribution", ["normal", "dirichlet"])
def test_rlw_weights_are_random_positive_sum_to_t_and_seeded(distribution):
    method = WEIGHTINGS.get("rlw")(["a", "b", "c"], distribution=distribution)
    losses = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
    runs = []
    for _ in range(2):
        torch.manual_seed(7)
        runs.append(torch.stack([method(losses) for _ in range(5)]))
    assert torch.equal(runs[0], runs[1])
    w = runs[0]
    assert w.dtype == torch.float64 and w.shape == (5, 3) and not w.requires_grad
    assert (w > 0).all() and torch.allclose(w.sum(1), torch.full((5,), 3.0, dtype=torch.float64))
    assert not torch.allclose(w[0], w[1])  # drawn anew each step


def test_rlw_normal_is_t_times_softmax_of_a_standard_normal_draw():
    torch.manual_seed(3)
    z = torch.randn(4)
    torch.manual_seed(3)
    w = WEIGHTINGS.get("rlw")(list("abcd"))(torch.zeros(4))
    assert torch.allclose(w, 4 * torch.softmax(z, 0))


# -- GradNorm ----------------------------------------------------------------------------------


def norms_by_hand(model, losses, params):
    out = []
    for l in losses:
        grads = torch.autograd.grad(l, params, retain_graph=True)
        out.append(torch.sqrt(sum((g ** 2).sum() for g in grads)))
    return torch.stack(out)


def test_gradnorm_gradient_matches_the_paper_by_hand_and_by_finite_differences():
    model = TwoHeads()
    method = WEIGHTINGS.get("gradnorm")(["a", "b"], alpha=1.5).double()
    context = model.context()
    x0, y0 = batch(0)
    l0 = model.losses(x0, y0)
    w = method(l0, context)
    assert w.tolist() == [1.0, 1.0]
    assert torch.equal(method.initial_losses, l0.detach())  # L(0) from the first call

    with torch.no_grad():
        method.loss_weights.copy_(torch.tensor([0.5, 1.0], dtype=torch.float64))  # renormalised to [2/3, 4/3]
    x1, y1 = batch(1)
    l1 = model.losses(x1, y1)
    w = method(l1, context)
    assert w.tolist() == pytest.approx([2 / 3, 4 / 3]) and w.sum().item() == pytest.approx(2.0)
    assert not w.requires_grad and w.dtype == torch.float64

    # by hand: grad_t = sign(G_t - target_t) * ||grad_W L_t||, G_t = w_t ||grad_W L_t||
    n = norms_by_hand(model, l1, context.shared_parameters)
    ratio = (l1 / l0).detach()
    r = ratio / ratio.mean()
    g = w * n
    target = g.mean() * r ** 1.5
    expected = torch.sign(g - target) * n
    assert torch.allclose(method.loss_weights.grad, expected, rtol=1e-10)

    # finite differences of L_grad(w) = sum_t |grad_W (w_t L_t)| - target_t|, the target held fixed
    def l_grad(weights):
        gs = norms_by_hand(model, weights * l1, context.shared_parameters)
        return (gs - target).abs().sum()

    eps = 1e-6
    fd = torch.stack([(l_grad(w + eps * e) - l_grad(w - eps * e)) / (2 * eps) for e in torch.eye(2, dtype=torch.float64)])
    assert torch.allclose(method.loss_weights.grad, fd, rtol=1e-5, atol=1e-8)

    # the trainer's backward still works after GradNorm's own autograd.grad calls
    (w * l1).sum().backward()
    assert model.shared.weight.grad is not None


def test_gradnorm_renormalises_and_floors_the_weights():
    model = TwoHeads()
    method = WEIGHTINGS.get("gradnorm")(["a", "b"]).double()
    with torch.no_grad():
        method.loss_weights.copy_(torch.tensor([-1.0, 3.0], dtype=torch.float64))
    w = method(model.losses(*batch(0)), model.context())
    assert w.sum().item() == pytest.approx(2.0) and (w > 0).all() and w[0].item() < 1e-5
    with torch.no_grad():
        method.loss_weights.copy_(torch.tensor([-1.0, -3.0], dtype=torch.float64))
    assert method(model.losses(*batch(0)), model.context()).tolist() == pytest.approx([1.0, 1.0])


def test_gradnorm_uses_each_tasks_own_parameters_when_nothing_is_shared():
    model = TwoHeads()
    method = WEIGHTINGS.get("gradnorm")(["a", "b"], alpha=0).double()
    context = model.context(shared=False)
    losses = model.losses(*batch(0))
    w = method(losses, context)
    n = torch.stack([norms_by_hand(model, losses[i : i + 1], context.task_parameters[t])[0] for i, t in enumerate("ab")])
    g = w * n
    assert torch.allclose(method.loss_weights.grad, torch.sign(g - g.mean()) * n)


def test_gradnorm_takes_norms_over_the_parameters_all_tasks_share():
    """In a tree, a node shared by only some tasks is not part of W."""
    torch.manual_seed(0)
    trunk, node = nn.Linear(3, 4).double(), nn.Linear(4, 4).double()
    heads = [nn.Linear(4, 1).double() for _ in range(3)]
    x, (y1, y2) = batch(0)
    h = torch.tanh(trunk(x))
    feats = [torch.tanh(node(h)), torch.tanh(node(h)), h]  # a and b share `node`, c skips it
    losses = torch.stack([((hd(f).squeeze(-1) - y1) ** 2).mean() for hd, f in zip(heads, feats)])
    per_task = {t: list(trunk.parameters()) + (list(node.parameters()) if t != "c" else []) + list(hd.parameters()) for t, hd in zip("abc", heads)}
    context = StepContext(per_task, list(trunk.parameters()) + list(node.parameters()))
    method = WEIGHTINGS.get("gradnorm")(list("abc"), alpha=0).double()
    w = method(losses, context)
    n = norms_by_hand(None, losses, list(trunk.parameters()))
    g = w * n
    assert torch.allclose(method.loss_weights.grad, torch.sign(g - g.mean()) * n)


def test_gradnorm_zero_identical_and_detached_losses_stay_finite():
    model = TwoHeads()
    method = WEIGHTINGS.get("gradnorm")(["a", "b"]).double()
    context = model.context()
    x, y = batch(0)
    zero = model.losses(x, y) * torch.tensor([0.0, 1.0], dtype=torch.float64)  # L_a(0) = 0 exactly
    assert torch.isfinite(method(zero, context)).all() and torch.isfinite(method.loss_weights.grad).all()
    assert torch.isfinite(method(model.losses(x, y), context)).all() and torch.isfinite(method.loss_weights.grad).all()
    same = WEIGHTINGS.get("gradnorm")(["a", "b"]).double()
    with torch.no_grad():  # identical heads: two identical tasks
        model.heads[1].load_state_dict(model.heads[0].state_dict())
    l = model.losses(x, [y[0], y[0]])
    assert same(l, context).tolist() == [1.0, 1.0]
    assert same.loss_weights.grad.tolist() == [0.0, 0.0]
    detached = WEIGHTINGS.get("gradnorm")(["a", "b"])(torch.zeros(2), context)  # no graph at all
    assert detached.tolist() == [1.0, 1.0]


def test_gradnorm_needs_a_context():
    with pytest.raises(ValueError, match="StepContext"):
        WEIGHTINGS.get("gradnorm")(["a", "b"])(torch.ones(2))


# -- hyperparameters -----------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "kwargs", "message"), [
    ("gradnorm", {"alpha": -1}, "Parameter `alpha` of GradNorm should be a number >= 0. Found `alpha = -1.0`."),
    ("gradnorm", {"alpha": "big"}, "Parameter `alpha` of GradNorm should be a number >= 0. Found `alpha = 'big'`."),
    ("gradnorm", {"alpha": float("nan")}, "Parameter `alpha` of GradNorm should be a number >= 0. Found `alpha = nan`."),
    ("dwa", {"temperature": 0}, "Parameter `temperature` of DWA should be a number > 0. Found `temperature = 0.0`."),
    ("dwa", {"temperature": True}, "Parameter `temperature` of DWA should be a number > 0. Found `temperature = True`."),
    ("dwa", {"window": 0}, "Parameter `window` of DWA should be an integer >= 1. Found `window = 0`."),
    ("dwa", {"window": 1.5}, "Parameter `window` of DWA should be an integer >= 1. Found `window = 1.5`."),
    ("rlw", {"distribution": "uniform"}, "Parameter `distribution` of RLW should be one of `normal`, `dirichlet`. Found `distribution = 'uniform'`."),
])
def test_bad_hyperparameters_give_pinned_errors(name, kwargs, message):
    with pytest.raises(ConfigError) as err:
        WEIGHTINGS.get(name)(["a", "b"], **kwargs)
    assert str(err.value) == message


def test_repr_shows_hyperparameters():
    assert "GradNorm(alpha=1.5)" in repr(WEIGHTINGS.get("gradnorm")(["a", "b"]))
    assert "DWA(temperature=0.5, window=3)" in repr(WEIGHTINGS.get("dwa")(["a", "b"], temperature=0.5, window=3))
    assert "RLW(distribution='dirichlet')" in repr(WEIGHTINGS.get("rlw")(["a", "b"], distribution="dirichlet"))
    assert repr(WEIGHTINGS.get("uncertainty")(["a", "b"])) == "Uncertainty()"
    assert repr(WEIGHTINGS.get("imtl_l")(["a", "b"])) == "IMTLL()"


def test_great_is_not_registered_as_a_weighting():
    """GREAT trains an adversary: it is a training strategy (tests/test_great.py), not a loss weighting."""
    assert "great" not in WEIGHTINGS


def test_space_sections_search_and_validate_the_hyperparameters(tiny_space):
    tiny_space["search_space"]["weightings"] = ["gradnorm", "dwa", "rlw"]
    tiny_space["search_space"]["gradnorm"] = {"alpha": {"low": 0.5, "high": 2.0}}
    tiny_space["search_space"]["dwa"] = {"temperature": 1.0, "window": [1, 4]}
    tiny_space["search_space"]["rlw"] = {"distribution": ["normal", "dirichlet"]}
    problem, _ = mtlsearch.load(tiny_space)
    base = {"family": "hard_sharing", "training.lr": 0.003}
    c = problem.sample(FixedTrial(base | {"weighting": "gradnorm", "gradnorm.alpha": 0.75}))
    assert c.summary()["weighting"] == {"name": "gradnorm", "alpha": 0.75}
    c = problem.sample(FixedTrial(base | {"weighting": "dwa", "dwa.window": 4}))
    assert c.summary()["weighting"] == {"name": "dwa", "temperature": 1.0, "window": 4}
    c = problem.sample(FixedTrial(base | {"weighting": "rlw", "rlw.distribution": "dirichlet"}))
    assert c.summary()["weighting"] == {"name": "rlw", "distribution": "dirichlet"}
    tiny_space["search_space"]["gradnorm"] = {"alpha": {"low": -1.0, "high": 2.0}}
    with pytest.raises(ConfigError) as err:
        mtlsearch.load(tiny_space)
    assert str(err.value) == "search_space.gradnorm.alpha.low: Parameter `alpha` of GradNorm should be a number >= 0. Found `alpha = -1.0`."


# -- real training -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ADAPTIVE)
def test_one_epoch_of_training_updates_the_network_and_the_weighting(name, tiny_problem):
    candidate = tiny_problem.sample(FixedTrial({"family": "hard_sharing", "weighting": "equal", "training.lr": 0.003}))
    model = candidate.build_model(0)
    method = WEIGHTINGS.get(name)(tiny_problem.task_names)
    learned = {n: p.detach().clone() for n, p in method.named_parameters()}
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    torch.manual_seed(0)
    result = train(model, tiny_problem.tasks, method, tiny_problem.data.train, dict(candidate.training, epochs=1, batch_size=64), torch.device("cpu"), seed=0)
    assert math.isfinite(result.train_loss)
    assert all(not torch.equal(p, before[n]) for n, p in model.named_parameters())
    assert set(learned) == {"uncertainty": {"log_variances"}, "gradnorm": {"loss_weights"}, "imtl_l": {"scales"}}.get(name, set())
    for n, p in method.named_parameters():
        assert not torch.equal(p, learned[n]), f"{name}: `{n}` did not learn"
    if name == "dwa":
        assert method.steps == 4  # 256 samples / 64
