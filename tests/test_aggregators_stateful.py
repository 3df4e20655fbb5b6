"""MoDo, PCD and CR-MOGM: hand-computed cases, their papers' properties, state and a real trial.

Hand cases: ``g1 = [1, 0], g2 = [-1, 1]`` (conflicting) and ``g1 = [1, 0], g2 = [0, 2]``
(orthogonal). Every update is sum-scale (T identical rows ``g`` give ``T g``): PCD's is T times
its paper's, which has the norm of the first (primary) gradient. Agreement with torchjd 0.18 on random
matrices is measured in benchmarks/bench_weighting.py (``--section agreement``).
"""

from __future__ import annotations

import math

import pytest
import torch
from method_helpers import close, degenerate, rand
from optuna.trial import FixedTrial

import mtlsearch
from mtlsearch.config import RunConfig
from mtlsearch.errors import ConfigError
from mtlsearch.weighting import AGGREGATORS
from mtlsearch.weighting.cr_mogm import CRMOGM
from mtlsearch.weighting.mgda import MGDA
from mtlsearch.weighting.modo import MoDo
from mtlsearch.weighting.pcd import PCD

F64 = torch.float64
NAMES = {"modo": MoDo, "pcd": PCD, "cr_mogm": CRMOGM}
HAND = torch.tensor([[1.0, 0.0], [-1.0, 1.0]], dtype=F64)
ORTHO = torch.tensor([[1.0, 0.0], [0.0, 2.0]], dtype=F64)


@pytest.mark.parametrize("name", sorted(NAMES))
def test_registered_under_its_search_name(name):
    assert AGGREGATORS.get(name) is NAMES[name] and NAMES[name].name == name


def test_repr_and_searchable_hyperparameters():
    assert repr(MoDo()) == "MoDo(gamma=0.1, rho=0.1)"
    assert repr(PCD(tau=0.5)) == "PCD(tau=0.5, beta=0.999, eps=1e-08)"
    assert repr(CRMOGM("upgrad", 0.5)) == "CRMOGM(base='upgrad', alpha=0.5)"
    space = CRMOGM.space({"base": ["mgda", "dualproj"], "alpha": {"low": 0.5, "high": 0.99}}, "search_space.cr_mogm")
    agg = CRMOGM.sample(FixedTrial({"cr_mogm.base": "dualproj", "cr_mogm.alpha": 0.8}), space, ["a", "b"])
    assert repr(agg) == "CRMOGM(base='dualproj', alpha=0.8)"
    space = PCD.space({"tau": {"low": 0.0, "high": 0.5}}, "search_space.pcd")
    assert repr(PCD.sample(FixedTrial({"pcd.tau": 0.25}), space, ["a", "b"])) == "PCD(tau=0.25, beta=0.999, eps=1e-08)"


@pytest.mark.parametrize(
    ("cls", "kwargs", "message"),
    [
        (MoDo, {"gamma": 0.0}, "Parameter `gamma` of MoDo should be a number > 0. Found `gamma = 0.0`."),
        (MoDo, {"rho": -1}, "Parameter `rho` of MoDo should be a number >= 0. Found `rho = -1.0`."),
        (PCD, {"tau": 1.5}, "Parameter `tau` of PCD should be in [0, 1]. Found `tau = 1.5`."),
        (PCD, {"beta": 1.0}, "Parameter `beta` of PCD should be in [0, 1). Found `beta = 1.0`."),
        (PCD, {"eps": "small"}, "Parameter `eps` of PCD should be a number >= 0. Found `eps = 'small'`."),
        (
            CRMOGM,
            {"base": "pcgrad"},
            "Parameter `base` of CR-MOGM should be one of mgda, upgrad, dualproj, fairgrad. Found `base = 'pcgrad'`.",
        ),
        (CRMOGM, {"alpha": 2}, "Parameter `alpha` of CR-MOGM should be in [0, 1]. Found `alpha = 2.0`."),
    ],
)
def test_bad_hyperparameters_get_exact_errors(cls, kwargs, message):
    with pytest.raises(ConfigError) as info:
        cls(**kwargs)
    assert str(info.value) == message


def test_a_bad_base_in_a_space_names_the_field(tiny_space):
    tiny_space["search_space"].update(weightings=["cr_mogm"], cr_mogm={"base": ["mgda", "nope"]})
    with pytest.raises(ConfigError, match=r"search_space\.cr_mogm\.base.*one of mgda, upgrad, dualproj, fairgrad"):
        mtlsearch.load(tiny_space)


# --------------------------------------------------------------------------------------------------
# MoDo


def test_modo_hand_case_two_steps():
    # Q = [[1, -1], [-1, 2]], lam = [1/2, 1/2]: (Q + 0.1 I) lam = [0.05, 0.55];
    #   lam - 0.1 * that = [0.495, 0.445] -> simplex projection (+0.03 each) = [0.525, 0.475]
    #   update = 2 (0.525 g1 + 0.475 g2) = [0.1, 0.95]
    agg = MoDo(gamma=0.1, rho=0.1)
    assert close(agg(HAND), [0.1, 0.95]) and close(agg.lam, [0.525, 0.475])
    # second step: Q lam = [0.05, 0.425]; + 0.1 lam = [0.1025, 0.4725]; step -> [0.51475, 0.42775]
    #   projection (+0.02875 each) = [0.5435, 0.4565]; update = 2 [0.087, 0.4565]
    assert close(agg(HAND), [0.174, 0.913]) and agg.steps == 2


def test_modo_iterates_converge_to_mgda_without_regularisation():
    m = rand(3, 5, 3)
    agg = MoDo(gamma=0.5 / float((m @ m.T).diagonal().max()), rho=0.0)
    for _ in range(3000):
        out = agg(m)
    assert torch.allclose(out, MGDA()(m), atol=1e-8)


# --------------------------------------------------------------------------------------------------
# PCD


@pytest.mark.parametrize("tau", [0.0, 0.25, 0.5])
def test_pcd_hand_case_conflicting(tau):
    # beta = 0.5, eps = 0: the first call's bias-corrected average is the squared norms, so
    #   h1 = [1, 0], h2 = [-1, 1] / sqrt(2); h1 violates h2 . d >= tau, so d = h1 + mu h2 with
    #   h2 . d = tau: mu = tau + 1/sqrt(2), d = [1 - a, a], a = tau / sqrt(2) + 1/2; rescaled to T |g1| = 2
    a = tau / math.sqrt(2.0) + 0.5
    d = torch.tensor([1 - a, a], dtype=F64)
    assert close(PCD(tau=tau, beta=0.5, eps=0.0)(HAND), 2 * d / d.norm())


def test_pcd_without_conflict_follows_the_primary_gradient():
    out = PCD(tau=0.0, beta=0.5, eps=0.0)(ORTHO)
    assert close(out, [2.0, 0.0])  # h2 . h1 = 0 >= 0: the constraint holds at d = h1


def test_pcd_infeasible_constraints_are_dropped_and_a_zero_primary_gives_zero():
    m = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, -1.0]], dtype=F64)
    assert close(PCD(tau=0.1, beta=0.5, eps=0.0)(m), [3.0, 0.0])
    assert close(PCD()(torch.tensor([[0.0, 0.0], [1.0, 1.0]], dtype=F64)), [0.0, 0.0])


def test_pcd_has_the_primary_norm_and_conflicts_with_no_secondary_task():
    for seed in range(10):
        m = rand(4, 9, 100 + seed) * torch.tensor([[1.0], [3.0], [0.1], [10.0]], dtype=F64)
        agg = PCD(tau=0.2, beta=0.9, eps=0.0)
        for _ in range(3):
            out = agg(m)
        assert float(out.norm()) == pytest.approx(4 * float(m[0].norm()), rel=1e-12)
        assert bool((m[1:] @ out > 0).all()), m[1:] @ out  # tau > 0: strict progress on each


def test_pcd_moving_average_is_bias_corrected_and_checkpointed():
    steps = [rand(3, 5, 50 + k) for k in range(4)]
    straight = PCD(beta=0.9)
    outs = [straight(m) for m in steps]
    assert straight.steps == 4
    first = PCD(beta=0.9)
    first(steps[0])
    first(steps[1])
    resumed = PCD(beta=0.9)
    resumed.load_state_dict(first.state_dict())
    assert torch.equal(resumed(steps[2]), outs[2]) and torch.equal(resumed(steps[3]), outs[3])
    with pytest.raises(ValueError, match="tracks 3 tasks"):
        resumed(rand(2, 5, 0))


# --------------------------------------------------------------------------------------------------
# CR-MOGM


def test_cr_mogm_hand_case_smooths_mgda_weights():
    # MGDA on HAND: w* = [0.6, 0.4] -> coefficients T w* = [1.2, 0.8], update [0.4, 0.8];
    # on ORTHO: w* = [0.8, 0.2] -> [1.6, 0.4]; alpha = 0.5 -> [1.4, 0.6], update [1.4, 1.2]
    agg = CRMOGM("mgda", alpha=0.5)
    assert close(agg(HAND), [0.4, 0.8])
    assert close(agg(ORTHO), [1.4, 1.2]) and close(agg.coefficients, [1.4, 0.6])


@pytest.mark.parametrize("base", ["mgda", "upgrad", "dualproj", "fairgrad"])
def test_cr_mogm_with_alpha_zero_is_its_base(base):
    for seed in range(5):
        m = rand(3, 6, seed)
        assert torch.allclose(CRMOGM(base, alpha=0.0)(m), AGGREGATORS.get(base)()(m), rtol=1e-12, atol=1e-12)


def test_cr_mogm_with_alpha_one_keeps_its_first_weights_and_round_trips():
    agg = CRMOGM("upgrad", alpha=1.0)
    agg(HAND)
    first = agg.coefficients.clone()
    agg(ORTHO)
    assert torch.equal(agg.coefficients, first)
    resumed = CRMOGM("upgrad", alpha=1.0)
    resumed.load_state_dict(agg.state_dict())
    assert torch.equal(resumed(ORTHO), agg(ORTHO))


# --------------------------------------------------------------------------------------------------
# every new method: degenerate matrices, dtype, input untouched


@pytest.mark.parametrize("name", sorted(NAMES))
@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_no_nan_and_shape_dtype_kept(name, dtype):
    for label, m in {**degenerate(dtype, 16), "random": rand(3, 6, 18, dtype)}.items():
        out = NAMES[name]()(m)
        assert out.shape == (6,) and out.dtype == dtype, label
        assert torch.isfinite(out).all(), f"{name} on {label}: {out}"


@pytest.mark.parametrize("name", sorted(NAMES))
def test_input_is_not_modified_and_state_is_plain(name):
    m = rand(3, 5, 23)
    before = m.clone()
    agg = NAMES[name]()
    agg(m)
    assert torch.equal(m, before)
    assert all(isinstance(v, (torch.Tensor, int, float, type(None))) for v in agg.state_dict().values())


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(NAMES))
def test_one_trial_study_trains_with_the_method(name, tiny_space, tmp_path):
    tiny_space["search_space"].update(families=["hard_sharing"], weightings=[name])
    del tiny_space["search_space"]["tree"]
    if name == "cr_mogm":
        tiny_space["search_space"]["cr_mogm"] = {"base": ["upgrad"], "alpha": [0.8]}
    problem, _ = mtlsearch.load(tiny_space)
    run = RunConfig(study=name, storage=f"sqlite:///{tmp_path}/s.db", n_trials=1, seed=0, device="cpu")
    study = mtlsearch.run_search(problem, run)
    (trial,) = study.trials
    assert trial.state.name == "COMPLETE", trial.user_attrs.get("fail_reason")
    assert trial.user_attrs["architecture"]["weighting"]["name"] == name
    if name == "cr_mogm":
        assert trial.user_attrs["architecture"]["weighting"]["base"] == "upgrad"
