"""FairGrad, DualProj, ConFIG, MoCo and SDMGrad: hand-computed cases and their papers' properties.

Hand cases (each test writes its expected vector out): ``g1 = [1, 0], g2 = [-1, 1]`` (conflicting,
``g1 . g2 = -1``), ``g1 = [1, 0], g2 = [0, 2]`` (orthogonal) and ``g1 = [1, 0.5], g2 = [-1, 0.5]``
(symmetric, conflicting). Scale convention: every update is sum-scale (T identical rows ``g``
give ``T g``).
"""

from __future__ import annotations

import math

import pytest
import torch
from method_helpers import check_resume_equals_uninterrupted, close, rand
from method_helpers import degenerate as shared_degenerate
from optuna.trial import FixedTrial

import mtlsearch
from mtlsearch.config import RunConfig
from mtlsearch.errors import ConfigError
from mtlsearch.weighting import AGGREGATORS
from mtlsearch.weighting.config_grad import ConFIG, config_weights
from mtlsearch.weighting.dualproj import DualProj, dualproj_weights
from mtlsearch.weighting.fairgrad import (
    FairGrad,
    fairgrad_coefficients,
    fairgrad_residual,
    fairgrad_weights,
)
from mtlsearch.weighting.mgda import MGDA
from mtlsearch.weighting.moco import MoCo
from mtlsearch.weighting.nash_mtl import NashMTL
from mtlsearch.weighting.sdmgrad import SDMGrad, sdmgrad_weights
from mtlsearch.weighting.solvers import simplex_kkt_residual

F64 = torch.float64
NAMES = {"fairgrad": FairGrad, "dualproj": DualProj, "config": ConFIG, "moco": MoCo, "sdmgrad": SDMGrad}
HAND = torch.tensor([[1.0, 0.0], [-1.0, 1.0]], dtype=F64)
ORTHO = torch.tensor([[1.0, 0.0], [0.0, 2.0]], dtype=F64)
SYM = torch.tensor([[1.0, 0.5], [-1.0, 0.5]], dtype=F64)
SQ2 = math.sqrt(2.0)


def instances(count: int, seed: int = 0, spread: float = 1.0):
    """Random (T, P) matrices with T <= P, T = 2..6, row norms spread over e^(+-2 spread), every
    third with a strong conflict between the first two rows."""
    gen = torch.Generator().manual_seed(seed)
    for k in range(count):
        t = 2 + k % 5
        g = torch.randn(t, t + 1 + k % 4, generator=gen, dtype=F64)
        g = g * ((torch.rand(t, 1, generator=gen, dtype=F64) * 4 - 2) * spread).exp()
        if k % 3 == 1:
            g[1] = -0.7 * g[0] + 0.05 * g[1]
        yield g


# --------------------------------------------------------------------------------------------------
# registration, repr, hyperparameter validation, search space


@pytest.mark.parametrize("name", sorted(NAMES))
def test_registered_under_its_search_name(name):
    assert AGGREGATORS.get(name) is NAMES[name]


def test_repr_shows_hyperparameters():
    assert repr(FairGrad()) == "FairGrad(alpha=1.0)"
    assert repr(FairGrad(alpha=2)) == "FairGrad(alpha=2.0)"
    assert repr(DualProj()) == "DualProj()"
    assert repr(ConFIG()) == "ConFIG()"
    assert repr(MoCo()) == "MoCo(beta=0.5, gamma=0.1, rho=0.0)"
    assert repr(MoCo(beta=1, gamma=2, rho=0.5)) == "MoCo(beta=1.0, gamma=2.0, rho=0.5)"
    assert repr(SDMGrad()) == "SDMGrad(lam=0.3)"
    assert repr(SDMGrad(lam=0)) == "SDMGrad(lam=0.0)"


@pytest.mark.parametrize("value", [0, -1.0, 10.5, "high", True, None, float("nan"), float("inf")])
def test_fairgrad_rejects_bad_alpha_with_an_exact_error(value):
    with pytest.raises(ConfigError) as info:
        FairGrad(alpha=value)
    shown = float(value) if isinstance(value, int) and not isinstance(value, bool) else value
    assert str(info.value) == f"Parameter `alpha` of FairGrad should be in (0, 10]. Found `alpha = {shown!r}`."


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"beta": 0}, "Parameter `beta` of MoCo should be in (0, 1]. Found `beta = 0.0`."),
        ({"beta": 1.5}, "Parameter `beta` of MoCo should be in (0, 1]. Found `beta = 1.5`."),
        ({"gamma": 0.0}, "Parameter `gamma` of MoCo should be a number > 0. Found `gamma = 0.0`."),
        ({"gamma": "x"}, "Parameter `gamma` of MoCo should be a number > 0. Found `gamma = 'x'`."),
        ({"rho": -0.1}, "Parameter `rho` of MoCo should be a number >= 0. Found `rho = -0.1`."),
        ({"rho": float("inf")}, "Parameter `rho` of MoCo should be a number >= 0. Found `rho = inf`."),
    ],
)
def test_moco_rejects_bad_hyperparameters_with_exact_errors(kwargs, message):
    with pytest.raises(ConfigError) as info:
        MoCo(**kwargs)
    assert str(info.value) == message


@pytest.mark.parametrize("value", [-0.1, "x", None, float("nan")])
def test_sdmgrad_rejects_bad_lam_with_an_exact_error(value):
    with pytest.raises(ConfigError) as info:
        SDMGrad(lam=value)
    assert str(info.value) == f"Parameter `lam` of SDMGrad should be a number >= 0. Found `lam = {value!r}`."


def test_moco_and_sdmgrad_hyperparameters_are_searchable():
    assert MoCo.searchable == ("beta", "gamma", "rho") and SDMGrad.searchable == ("lam",)
    space = MoCo.space({"beta": [0.1, 0.9], "gamma": {"low": 0.01, "high": 1.0, "log": True}}, "search_space.moco")
    agg = MoCo.sample(FixedTrial({"moco.beta": 0.9, "moco.gamma": 0.2}), space, ["a", "b"])
    assert repr(agg) == "MoCo(beta=0.9, gamma=0.2, rho=0.0)"
    space = SDMGrad.space({"lam": {"low": 0.1, "high": 1.0}}, "search_space.sdmgrad")
    assert repr(SDMGrad.sample(FixedTrial({"sdmgrad.lam": 0.6}), space, ["a", "b"])) == "SDMGrad(lam=0.6)"


def test_no_hyperparameters_accepted_where_there_are_none():
    for cls in (DualProj, ConFIG):
        with pytest.raises(TypeError):
            cls(weights=[1.0, 1.0])
        assert cls.searchable == ()


def test_fairgrad_alpha_is_searchable_and_validated_in_the_space():
    assert FairGrad.searchable == ("alpha",)
    with pytest.raises(ConfigError) as info:
        FairGrad.space({"alpha": {"low": 0.5, "high": 20.0}}, "search_space.fairgrad")
    assert str(info.value) == (
        "search_space.fairgrad.alpha.high: Parameter `alpha` of FairGrad should be in (0, 10]. Found `alpha = 20.0`."
    )
    space = FairGrad.space({"alpha": {"low": 0.25, "high": 4.0, "log": True}}, "search_space.fairgrad")
    agg = FairGrad.sample(FixedTrial({"fairgrad.alpha": 2.0}), space, ["a", "b"])
    assert repr(agg) == "FairGrad(alpha=2.0)"


# --------------------------------------------------------------------------------------------------
# FairGrad


@pytest.mark.parametrize("alpha", [0.25, 0.5, 1.0, 2.0, 4.0])
def test_fairgrad_orthogonal_hand_case(alpha):
    # Q = diag(1, 4), ||Q||_F = sqrt17: Q' = diag(1, 4) / sqrt17 and Q'_ii w_i = w_i^(-1/alpha), so
    #   w_i = Q'_ii^(-alpha / (alpha + 1)),  update = [w_1, 2 w_2]
    # (alpha = 1: w = 17^(1/4) [1, 1/2], update = 17^(1/4) [1, 1])
    s17 = math.sqrt(17.0)
    w = [(1 / s17) ** (-alpha / (alpha + 1)), (4 / s17) ** (-alpha / (alpha + 1))]
    agg = FairGrad(alpha=alpha)
    assert close(agg.weights(ORTHO), w)
    assert close(agg(ORTHO), [w[0], 2 * w[1]])
    if alpha == 1.0:
        assert close(agg(ORTHO), [17**0.25, 17**0.25])


@pytest.mark.parametrize("alpha", [0.25, 0.5, 1.0, 2.0, 4.0, 10.0])
def test_fairgrad_symmetric_conflicting_hand_case(alpha):
    # g1 = [1, c], g2 = [-1, c], c = 1/2: Q = [[5/4, -3/4], [-3/4, 5/4]], ||Q||_F = 2 sqrt(1 + c^4)
    # = sqrt17 / 2. By symmetry w = [v, v]: (Q' [v, v])_i = 2 c^2 v / (2 sqrt(1 + c^4)) = v / sqrt17,
    # so v / sqrt17 = v^(-1/alpha), v = 17^(alpha / (2 (alpha + 1))), update = v [0, 2c] = [0, v].
    v = 17.0 ** (alpha / (2 * (alpha + 1)))
    agg = FairGrad(alpha=alpha)
    assert close(agg.weights(SYM), [v, v])
    assert close(agg(SYM), [0.0, v])


def test_fairgrad_with_alpha_one_is_nash_mtl():
    for g in instances(20, seed=1):
        nash = NashMTL(max_iter=200)
        expected = nash(g)
        assert nash.converged
        assert torch.allclose(FairGrad(alpha=1.0)(g), expected, rtol=1e-10, atol=1e-10 * float(g.norm()))


@pytest.mark.parametrize("alpha", [0.001, 0.01, 0.05, 0.1, 0.5, 2.0, 5.0, 10.0])
def test_fairgrad_solves_its_equation_to_rounding(alpha):
    # Componentwise backward error of Q' w = w^(-1/alpha), Q' = G G^T / ||G G^T||_F.
    for g in instances(30, seed=2):
        q = g @ g.T
        q = q / torch.linalg.matrix_norm(q)
        w, converged = fairgrad_weights(q, alpha)
        assert converged
        assert fairgrad_residual(q, alpha, w) < 1e-13
        assert fairgrad_residual(q, alpha, fairgrad_coefficients(g @ g.T, alpha)) < 1e-13


@pytest.mark.parametrize("alpha", [0.25, 1.0, 4.0])
def test_fairgrad_improves_every_task_as_the_utility_prescribes(alpha):
    # g_i . d = ||Q||_F w_i^(-1/alpha) > 0: no task conflicts with the update, and a task with a
    # larger weight gets the smaller improvement.
    for g in instances(20, seed=3):
        w = FairGrad(alpha=alpha).weights(g)
        improvement = g @ FairGrad(alpha=alpha)(g)
        fro = float(torch.linalg.matrix_norm(g @ g.T))
        assert (improvement > 0).all()
        rounding = 1e-12 * g.norm(dim=1) * float((w.abs() @ g.abs()).norm())  # cancellation in g . d
        assert ((improvement - fro * w.pow(-1.0 / alpha)).abs() <= 1e-9 * improvement + rounding).all()


def test_fairgrad_small_alpha_tends_to_the_sum_and_large_alpha_to_equal_improvements():
    g = rand(3, 8, 4)
    g[1] -= 0.5 * g[0]
    near_sum = FairGrad(alpha=0.05)(g)
    assert float((near_sum - g.sum(0)).norm()) < 0.15 * float(g.sum(0).norm())
    nearer = FairGrad(alpha=0.001)(g)  # w_t = x_t^(-alpha) = 1 + O(alpha)
    assert float((nearer - g.sum(0)).norm()) < 0.01 * float(g.sum(0).norm())
    spread = []
    for alpha in (0.5, 2.0, 10.0):
        improvement = g @ FairGrad(alpha=alpha)(g)
        spread.append(float(improvement.max() / improvement.min()))
    assert spread[0] > spread[1] > spread[2] > 1.0


def test_fairgrad_is_positively_homogeneous_and_equivariant():
    g = rand(4, 9, 5)
    out = FairGrad(alpha=2.0)(g)
    assert torch.allclose(FairGrad(alpha=2.0)(3.5 * g), 3.5 * out, rtol=1e-10, atol=1e-12)
    perm = [2, 0, 3, 1]
    assert torch.allclose(FairGrad(alpha=2.0)(g[perm]), out, rtol=1e-10, atol=1e-12)


def test_fairgrad_degenerate_cases():
    v, u = rand(1, 5, 6)[0], rand(1, 5, 7)[0]
    zero = torch.zeros(5, dtype=F64)
    for alpha in (0.5, 2.0):
        agg = FairGrad(alpha=alpha)
        assert close(agg(torch.stack([v, v, v])), 3 * v)  # identical rows: the sum
        assert close(agg(torch.stack([v, zero])), v)  # a zero row is left out: one row remains
        # a zero row among three: the others' solution (weights on the live rows unchanged)
        assert close(agg(torch.stack([v, zero, u])), agg(torch.stack([v, u])))
        assert close(agg.weights(torch.stack([v, zero, u]))[1], 0.0)
        assert close(agg(torch.stack([v, -v])), zero)  # zero in the hull: no solution, 0
        assert close(agg(torch.stack([v, -2 * v, u])), zero)
        assert close(agg(torch.zeros(3, 5, dtype=F64)), zero)


# --------------------------------------------------------------------------------------------------
# DualProj


def test_dualproj_hand_case_with_a_conflict():
    # g1 = [1, 0], g2 = [-2, 1]: sum s = [-1, 1] has g1 . s = -1 < 0, g2 . s = 3 >= 0. The dual
    # cone is {x1 >= 0, x2 >= 2 x1}; projecting s onto the half-plane x1 >= 0 gives [0, 1], which
    # is in the cone, so it is the projection. Dual: [0, 1] = v1 g1 + v2 g2 with v = [2, 1] >= 1.
    g = torch.tensor([[1.0, 0.0], [-2.0, 1.0]], dtype=F64)
    assert close(DualProj().weights(g), [2.0, 1.0])
    assert close(DualProj()(g), [0.0, 1.0])


def test_dualproj_hand_case_without_conflict_with_the_sum():
    # g1 = [1, 0], g2 = [-1, 1]: s = [0, 1], g1 . s = 0, g2 . s = 1: s is in the cone already.
    assert close(DualProj().weights(HAND), [1.0, 1.0])
    assert close(DualProj()(HAND), [0.0, 1.0])


def test_dualproj_three_task_hand_case():
    # g3 = [-2, 0, 1]: s = [-1, 1, 1]; only g1 . s = -1 < 0; the half-space projection [0, 1, 1]
    # has g . [0, 1, 1] = [0, 1, 1] >= 0, so it is the projection; v = [2, 1, 1].
    g = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [-2.0, 0.0, 1.0]], dtype=F64)
    assert close(DualProj()(g), [0.0, 1.0, 1.0])
    assert close(DualProj().weights(g), [2.0, 1.0, 1.0])


def test_dualproj_satisfies_the_projection_optimality_conditions():
    # d = proj_{C*}(s) iff d in C* (G d >= 0), s - d = -G^T mu with mu >= 0, and mu_i (g_i . d) = 0;
    # here mu = v - 1.
    for g in instances(40, seed=8):
        v = DualProj().weights(g)
        d = DualProj()(g)
        scale = float(g.norm(dim=1).max()) ** 2 * float(v.abs().max())
        mu = v - 1.0
        assert (mu >= -1e-12 * float(v.abs().max())).all()
        assert (g @ d >= -1e-11 * scale).all()
        assert torch.allclose(g.sum(0) - d, -(mu @ g), rtol=0, atol=1e-10 * float(g.norm()) * float(v.abs().max()))
        assert float((mu.clamp(min=0) * (g @ d)).abs().max()) <= 1e-10 * scale


def test_dualproj_degenerate_cases_and_scale():
    v, u = rand(1, 5, 9)[0], rand(1, 5, 10)[0]
    zero = torch.zeros(5, dtype=F64)
    assert close(DualProj()(torch.stack([v, v])), 2 * v)
    assert close(DualProj()(torch.stack([v, -v])), zero)  # the cone is v's orthogonal complement
    assert close(DualProj()(torch.stack([v, zero])), v)
    # [v, -v, u]: the cone is {x . v = 0, x . u >= 0}; s = u, whose projection is u minus its v part
    expected = u - (u @ v) / (v @ v) * v  # in the cone: expected . v = 0, expected . u >= 0
    assert close(DualProj()(torch.stack([v, -v, u])), expected)
    m = rand(3, 7, 11)
    assert torch.allclose(DualProj()(2.5 * m), 2.5 * DualProj()(m), rtol=1e-10, atol=1e-12)
    assert close(dualproj_weights(m @ m.T), DualProj().weights(m))


# --------------------------------------------------------------------------------------------------
# ConFIG


def test_config_hand_case():
    # u1 = [1, 0], u2 = [-1, 1]/sqrt2; U y = 1: y1 = 1, (-1 + y2)/sqrt2 = 1, y = [1, 1 + sqrt2],
    # ||y||^2 = 4 + 2 sqrt2; g . y = [1, sqrt2], so the scale is (1 + sqrt2) / ||y||^2 = 1/(2 sqrt2)
    # and update = [1, 1 + sqrt2] / (2 sqrt2) = [sqrt2/4, (2 + sqrt2)/4]. Equal cosines: sqrt2/4 / 1
    # and (1/2) / sqrt2.
    out = ConFIG()(HAND)
    assert close(out, [SQ2 / 4, (2 + SQ2) / 4])
    assert close(HAND @ out / HAND.norm(dim=1), [SQ2 / 4, SQ2 / 4])


def test_config_orthogonal_hand_case():
    # u = e1, e2: y = [1, 1], ||y||^2 = 2, g . y = [1, 2]: update = 3/2 [1, 1].
    assert close(ConFIG()(ORTHO), [1.5, 1.5])
    assert close(ConFIG().weights(ORTHO), [1.5, 0.75])


def test_config_is_conflict_free_at_equal_angles_for_independent_rows():
    for g in instances(40, seed=12):
        out = ConFIG()(g)
        cosines = (g @ out) / (g.norm(dim=1) * out.norm())
        assert (cosines > 0).all()
        assert torch.allclose(cosines, cosines[0].expand_as(cosines), rtol=1e-9, atol=0)
        unit = out / out.norm()
        assert float(out.norm()) == pytest.approx(float((g @ unit).sum()), rel=1e-10)


def reference_config(g: torch.Tensor) -> torch.Tensor:
    """The paper's formula on the (T, P) rows themselves: pinv of the unit rows times ones."""
    norms = g.norm(dim=1)
    live = norms > 0
    if not bool(live.any()):
        return torch.zeros(g.shape[1], dtype=g.dtype)
    units = g[live] / norms[live, None]
    y = torch.linalg.pinv(units) @ torch.ones(int(live.sum()), dtype=g.dtype)
    if float(y.norm()) < 1e-12:
        return torch.zeros(g.shape[1], dtype=g.dtype)
    y = y / y.norm()
    return (g @ y).sum() * y


def test_config_on_the_gram_matrix_matches_the_formula_on_the_rows():
    for g in instances(30, seed=13):
        assert torch.allclose(ConFIG()(g), reference_config(g), rtol=1e-9, atol=1e-9 * float(g.norm()))
    for seed in range(5):  # more tasks than dimensions: pinv gives the least-squares direction
        g = rand(5, 3, 20 + seed)
        assert torch.allclose(ConFIG()(g), reference_config(g), rtol=1e-9, atol=1e-9)


def test_config_degenerate_cases():
    v, u = rand(1, 5, 14)[0], rand(1, 5, 15)[0]
    zero = torch.zeros(5, dtype=F64)
    assert close(ConFIG()(torch.stack([v, v, v])), 3 * v)
    assert close(ConFIG()(torch.stack([v, 3 * v])), 4 * v)  # parallel: one direction, sum of norms
    assert close(ConFIG()(torch.stack([v, -v])), zero)
    assert close(ConFIG()(torch.stack([v, zero])), v)  # zero rows are left out
    assert close(ConFIG()(torch.stack([v, zero, u])), ConFIG()(torch.stack([v, u])))
    assert close(ConFIG()(torch.zeros(2, 5, dtype=F64)), zero)
    assert close(config_weights(torch.zeros(2, 2, dtype=F64)), [0.0, 0.0])


# --------------------------------------------------------------------------------------------------
# MoCo


def test_moco_hand_case_two_steps():
    # beta = 0.5, gamma = 0.1, rho = 0. Step 1 on HAND: y = HAND, Q = [[1, -1], [-1, 2]], Q' = Q / 2;
    #   Q' [1/2, 1/2] = [0, 1/4]; lam - 0.1 Q' lam = [0.5, 0.475] -> simplex (+0.0125): [0.5125, 0.4875]
    #   update = 2 (0.5125 [1, 0] + 0.4875 [-1, 1]) = [0.05, 0.975]
    # Step 2 on [[0, 1], [1, 0]]: y <- y + 0.5 (g - y) = [[0.5, 0.5], [0, 0.5]]; Q = [[0.5, 0.25],
    #   [0.25, 0.25]], Q' = Q / 0.5; Q' lam = [0.75625, 0.5]; lam - 0.1 Q' lam = [0.436875, 0.4375]
    #   -> (+0.0628125) [0.4996875, 0.5003125]; update = 2 lam^T y = [0.4996875, 1.0]
    agg = MoCo()
    assert close(agg(HAND), [0.05, 0.975])
    assert close(agg.lam, [0.5125, 0.4875])
    second = torch.tensor([[0.0, 1.0], [1.0, 0.0]], dtype=F64)
    assert close(agg(second), [0.4996875, 1.0])
    assert close(agg.lam, [0.4996875, 0.5003125])
    assert close(agg.estimates, [[0.5, 0.5], [0.0, 0.5]])
    assert agg.steps == 2


def test_moco_rho_regularises_the_weight_step():
    # rho = 1 on ORTHO: Q' = diag(1/4, 1); (Q' + I) [1/2, 1/2] = [5/8, 1]; lam - 0.1 (...) =
    # [0.4375, 0.4] -> (+0.08125) [0.51875, 0.48125]; update = 2 [0.51875, 2 * 0.48125]
    agg = MoCo(rho=1.0)
    assert close(agg(ORTHO), [1.0375, 1.925])


def test_moco_without_tracking_converges_to_mgda():
    # beta = 1: y is the current gradient; repeated steps on one matrix are projected gradient
    # descent on MGDA's problem (scaled Gram matrix), so T G^T lam tends to MGDA's update.
    g = rand(3, 6, 30)
    g[1] -= 0.5 * g[0]
    agg = MoCo(beta=1.0, gamma=0.5)
    for _ in range(400):
        out = agg(g)
    assert torch.allclose(out, MGDA()(g), rtol=1e-9, atol=1e-9)


def test_moco_tracks_a_moving_average_of_the_gradients():
    steps = [rand(3, 4, 40 + k) for k in range(5)]
    agg = MoCo(beta=0.25)
    expected = steps[0].clone()
    for m in steps:
        agg(m)
        if m is not steps[0]:
            expected = expected + 0.25 * (m - expected)
        assert close(agg.estimates, expected)


def test_moco_state_round_trip_and_size_check():
    steps = [rand(3, 5, 50 + k) for k in range(4)]
    straight = MoCo()
    outs = [straight(m) for m in steps]
    first = MoCo()
    first(steps[0])
    first(steps[1])
    resumed = MoCo()
    resumed.load_state_dict(first.state_dict())
    assert torch.equal(resumed(steps[2]), outs[2]) and torch.equal(resumed(steps[3]), outs[3])
    with pytest.raises(ValueError, match="tracks a"):
        resumed(rand(2, 5, 0))


@pytest.mark.slow
def test_moco_training_resumed_from_a_checkpoint_equals_uninterrupted(tiny_space, tmp_path):
    tiny_space["search_space"]["weightings"] = ["moco"]
    problem, _ = mtlsearch.load(tiny_space)
    params = {"family": "tree", "weighting": "moco", "training.lr": 3e-3}
    params.update({f"tree.right.block{b}": 0 for b in range(3)} | {f"tree.sum.block{b}": 1 for b in range(3)})
    check_resume_equals_uninterrupted(problem.replay(params), tmp_path / "run")


# --------------------------------------------------------------------------------------------------
# SDMGrad


def test_sdmgrad_hand_case_where_mgda_sits_at_a_vertex():
    # g1 = [1, 0], g2 = [1, 1], lam = 1/2: w = [1 - t, t], g_w = [1, t], g0 = [1, 1/2];
    #   1/2 ||g_w + lam g0||^2 has derivative in t: (t + 1/4) > 0 on [0, 1], so w* = [1, 0]
    #   d = (g1 + g0 / 2) / (3/2) = [1, 1/6]; update = T d = [2, 1/3]   (MGDA: [2, 0])
    g = torch.tensor([[1.0, 0.0], [1.0, 1.0]], dtype=F64)
    assert close(SDMGrad(lam=0.5).weights(g), [1.0, 0.0])
    assert close(SDMGrad(lam=0.5)(g), [2.0, 1.0 / 3.0])
    assert close(SDMGrad(lam=0.0)(g), [2.0, 0.0])


def test_sdmgrad_hand_case_interior():
    # HAND, lam: w = [1 - t, t], g_w = [1 - 2t, t], g0 = [0, 1/2]; the derivative of
    #   1/2 ||g_w + lam g0||^2 is 5t - 2 + lam/2, so t = 0.4 - 0.1 lam, and
    #   g_w + lam g0 = (1 + lam) [0.2, 0.4]: d = [0.2, 0.4] for every lam in [0, 4]; update = [0.4, 0.8]
    for lam in (0.0, 0.3, 1.0, 3.0):
        assert close(SDMGrad(lam=lam).weights(HAND), [0.6 + 0.1 * lam, 0.4 - 0.1 * lam])
        assert close(SDMGrad(lam=lam)(HAND), [0.4, 0.8])


def test_sdmgrad_solves_its_problem_and_spans_mgda_to_the_sum():
    for g in instances(20, seed=60):
        q = g @ g.T
        for lam in (0.0, 0.3, 2.0):
            w = sdmgrad_weights(q, lam)
            assert simplex_kkt_residual(q, lam * q.mean(dim=1), w) < 1e-12
            t = g.shape[0]
            expected = t * (w @ g + lam * g.mean(0)) / (1 + lam)
            assert torch.allclose(SDMGrad(lam=lam)(g), expected, rtol=1e-10, atol=1e-10 * float(g.norm()))
        assert torch.allclose(SDMGrad(lam=0.0)(g), MGDA()(g), rtol=1e-10, atol=1e-10 * float(g.norm()))
        far = SDMGrad(lam=1e6)(g)
        assert float((far - g.sum(0)).norm()) <= 1e-5 * float(g.norm(dim=1).sum())


# --------------------------------------------------------------------------------------------------
# shared robustness


def degenerate(dtype):
    return {**shared_degenerate(dtype, 16), "more tasks than dims": rand(8, 6, 17, dtype)}


@pytest.mark.parametrize("name", sorted(NAMES))
@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_no_nan_and_shape_dtype_kept(name, dtype):
    for label, m in {**degenerate(dtype), "random": rand(3, 6, 18, dtype)}.items():
        out = NAMES[name]()(m)
        assert out.shape == (6,) and out.dtype == dtype and out.device == m.device, label
        assert torch.isfinite(out).all(), f"{name} on {label}: {out}"


@pytest.mark.parametrize("name", sorted(NAMES))
def test_float32_matches_float64(name):
    big = rand(3, 20000, 19, torch.float32)
    big[1] -= 0.6 * big[0]  # a conflict, still clearly independent rows: float32 Gram matrix
    for m in (rand(3, 8, 13), big.double()):
        low = NAMES[name]()(m.float())
        high = NAMES[name]()(m)
        assert low.dtype == torch.float32
        assert float((low.double() - high).norm()) <= 1e-5 * float(m.norm(dim=1).sum())


@pytest.mark.parametrize("name", sorted(NAMES))
def test_float32_degenerate_rows_take_the_float64_path_exactly(name):
    v = rand(1, 40, 21, torch.float32)[0]
    w = rand(1, 40, 22, torch.float32)[0]
    for label, m in {
        "opposite": torch.stack([v, -v, w]),
        "parallel": torch.stack([v, 3 * v]),
        "zero row": torch.stack([v, torch.zeros_like(v), w]),
        "near parallel": torch.stack([v, v + 1e-4 * w]),
    }.items():
        assert torch.equal(NAMES[name]()(m), NAMES[name]()(m.double()).float()), label


@pytest.mark.parametrize("name", sorted(NAMES))
def test_input_is_not_modified_and_only_moco_keeps_state(name):
    m = rand(3, 5, 23)
    before = m.clone()
    agg = NAMES[name]()
    first = agg(m)
    assert torch.equal(m, before)
    if name == "moco":
        assert set(agg.state_dict()) == {"estimates", "lam", "steps"}
        assert agg.estimates is not m
        return
    assert agg.state_dict() == {}
    assert torch.equal(agg(m), first)


# --------------------------------------------------------------------------------------------------
# end to end: a one-trial study per method on the tiny space


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(NAMES))
def test_one_trial_study_trains_with_the_method(name, tiny_space, tmp_path):
    tiny_space["search_space"].update(families=["hard_sharing"], weightings=[name])
    del tiny_space["search_space"]["tree"]
    if name == "fairgrad":
        tiny_space["search_space"]["fairgrad"] = {"alpha": {"low": 0.5, "high": 2.0, "log": True}}
    if name == "sdmgrad":
        tiny_space["search_space"]["sdmgrad"] = {"lam": [0.3]}
    problem, _ = mtlsearch.load(tiny_space)
    run = RunConfig(study=name, storage=f"sqlite:///{tmp_path}/s.db", n_trials=1, seed=0, device="cpu")
    study = mtlsearch.run_search(problem, run)
    (trial,) = study.trials
    assert trial.state.name == "COMPLETE"
    weighting = trial.user_attrs["architecture"]["weighting"]
    assert weighting["name"] == name
    if name == "fairgrad":
        assert 0.5 <= weighting["alpha"] <= 2.0 and trial.params["fairgrad.alpha"] == weighting["alpha"]
