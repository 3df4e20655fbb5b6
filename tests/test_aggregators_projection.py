"""PCGrad, GradVac, GradDrop, IMTL-G and Aligned-MTL: hand-computed cases and paper properties.

The shared hand case is ``g1 = [1, 0]``, ``g2 = [-1, 1]`` (``g1 . g2 = -1``, ``||g1|| = 1``,
``||g2|| = sqrt 2``, ``cos = -1/sqrt 2``); each test writes its expected vector out.
"""

from __future__ import annotations

import math

import pytest
import torch
from method_helpers import close, degenerate, rand
from optuna.trial import FixedTrial

from mtlsearch.errors import ConfigError
from mtlsearch.weighting import AGGREGATORS
from mtlsearch.weighting.aligned_mtl import AlignedMTL
from mtlsearch.weighting.graddrop import GradDrop
from mtlsearch.weighting.gradvac import GradVac
from mtlsearch.weighting.imtl_g import IMTLG
from mtlsearch.weighting.pcgrad import PCGrad

F64 = torch.float64
NAMES = {"pcgrad": PCGrad, "gradvac": GradVac, "graddrop": GradDrop, "imtl_g": IMTLG, "aligned_mtl": AlignedMTL}
HAND = torch.tensor([[1.0, 0.0], [-1.0, 1.0]], dtype=F64)
SQ2 = math.sqrt(2.0)


def cos(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(a @ b / (a.norm() * b.norm()))


# --------------------------------------------------------------------------------------------------
# registration, repr, hyperparameter validation


@pytest.mark.parametrize("name", sorted(NAMES))
def test_registered_under_its_search_name(name):
    assert AGGREGATORS.get(name) is NAMES[name]


def test_repr_shows_hyperparameters():
    assert repr(PCGrad()) == "PCGrad()"
    assert repr(GradVac()) == "GradVac(beta=0.01)"
    assert repr(GradVac(beta=0.5)) == "GradVac(beta=0.5)"
    assert repr(GradDrop()) == "GradDrop(leak=0.0)"
    assert repr(GradDrop(leak=1)) == "GradDrop(leak=1.0)"
    assert repr(IMTLG()) == "IMTLG()"
    assert repr(AlignedMTL()) == "AlignedMTL()"


@pytest.mark.parametrize(
    "cls, kwargs, message",
    [
        (GradVac, {"beta": 1.5}, "Parameter `beta` of GradVac should be in [0, 1]. Found `beta = 1.5`."),
        (GradVac, {"beta": -0.1}, "Parameter `beta` of GradVac should be in [0, 1]. Found `beta = -0.1`."),
        (GradVac, {"beta": "high"}, "Parameter `beta` of GradVac should be in [0, 1]. Found `beta = 'high'`."),
        (GradVac, {"beta": True}, "Parameter `beta` of GradVac should be in [0, 1]. Found `beta = True`."),
        (GradVac, {"beta": float("nan")}, "Parameter `beta` of GradVac should be in [0, 1]. Found `beta = nan`."),
        (GradDrop, {"leak": 2}, "Parameter `leak` of GradDrop should be in [0, 1]. Found `leak = 2.0`."),
        (GradDrop, {"leak": -1e-3}, "Parameter `leak` of GradDrop should be in [0, 1]. Found `leak = -0.001`."),
        (GradDrop, {"leak": None}, "Parameter `leak` of GradDrop should be in [0, 1]. Found `leak = None`."),
    ],
)
def test_bad_hyperparameters_give_exact_errors(cls, kwargs, message):
    with pytest.raises(ConfigError) as info:
        cls(**kwargs)
    assert str(info.value) == message


def test_no_hyperparameters_accepted_where_there_are_none():
    for cls in (PCGrad, IMTLG, AlignedMTL):
        with pytest.raises(TypeError):
            cls(weights=[1.0, 1.0])
        assert cls.searchable == ()


def test_space_sections_are_validated_and_sampled():
    assert GradVac.searchable == ("beta",) and GradDrop.searchable == ("leak",)
    with pytest.raises(ConfigError) as info:
        GradVac.space({"beta": {"low": 0.001, "high": 2.0}}, "search_space.gradvac")
    assert str(info.value) == "search_space.gradvac.beta.high: Parameter `beta` of GradVac should be in [0, 1]. Found `beta = 2.0`."
    space = GradDrop.space({"leak": {"low": 0.0, "high": 0.5}}, "search_space.graddrop")
    agg = GradDrop.sample(FixedTrial({"graddrop.leak": 0.25}), space, ["a", "b"])
    assert agg.leak == 0.25


# --------------------------------------------------------------------------------------------------
# PCGrad


def test_pcgrad_hand_case():
    # g1 . g2 = -1 < 0 for both orders:
    #   g1' = g1 - (-1 / ||g2||^2) g2 = [1, 0] + 0.5 [-1, 1] = [0.5, 0.5]
    #   g2' = g2 - (-1 / ||g1||^2) g1 = [-1, 1] + [1, 0]    = [0, 1]
    #   update = [0.5, 1.5]
    agg = PCGrad()
    assert close(agg.adjusted(HAND), [[0.5, 0.5], [0.0, 1.0]])
    assert close(agg(HAND), [0.5, 1.5])


def test_pcgrad_three_task_hand_case_depends_on_order_only_through_the_seed():
    # g1 = [1, 0], g2 = [-1, 1], g3 = [0, -1]; for task 3 (g3 . g1 = 0, g3 . g2 = -1):
    #   order (g1, g2): g1 does not conflict, then g3' = g3 - (-1/2) g2 = [-0.5, -0.5]
    #   order (g2, g1): g3' = [-0.5, -0.5], now g3' . g1 = -0.5 < 0: g3'' = g3' + 0.5 g1 = [0, -0.5]
    # so the update varies with the order; with a fixed seed it is reproducible.
    m = torch.tensor([[1.0, 0.0], [-1.0, 1.0], [0.0, -1.0]], dtype=F64)
    outs = []
    for _ in range(2):
        torch.manual_seed(3)
        outs.append(torch.stack([PCGrad()(m) for _ in range(6)]))
    assert torch.equal(outs[0], outs[1])
    assert len({tuple(row.tolist()) for row in outs[0]}) > 1  # the order does vary between steps
    # g3's projected row is [-0.5, -0.5] or [0, -0.5]; check one ordering by hand through adjusted()
    rows = {tuple(torch.round(PCGrad().adjusted(m)[2], decimals=12).tolist()) for _ in range(20)}
    assert rows <= {(-0.5, -0.5), (0.0, -0.5)}


def test_pcgrad_without_conflicts_is_the_sum():
    m = rand(4, 9, 0).abs()  # every pairwise inner product is positive
    m[1, 3] = -0.01
    assert (m @ m.T >= 0).all()
    assert close(PCGrad()(m), m.sum(dim=0))


@pytest.mark.parametrize("seed", range(5))
def test_pcgrad_conflicting_pair_result_agrees_with_both(seed):
    m = rand(2, 6, seed)
    if m[0] @ m[1] >= 0:
        m[1] = -m[1]
    assert m[0] @ m[1] < 0
    out = PCGrad()(m)
    scale = float(m.norm()) ** 2
    assert float(out @ m[0]) >= -1e-12 * scale and float(out @ m[1]) >= -1e-12 * scale
    rows = PCGrad().adjusted(m)  # each projected row is orthogonal to the other original row
    assert abs(float(rows[0] @ m[1])) < 1e-12 * scale and abs(float(rows[1] @ m[0])) < 1e-12 * scale


# --------------------------------------------------------------------------------------------------
# GradVac


def test_gradvac_hand_case_first_step():
    # Targets start at 0; cos(g1, g2) = -1/sqrt2 < 0, so with phi_hat = 0 the correction is
    #   a = ||gi|| (0 - phi * 1) / (||gj|| * 1) = -phi ||gi|| / ||gj||
    #   g1' = g1 + g2 * 1 * (1/sqrt2) / sqrt2 = [1, 0] + 0.5 [-1, 1] = [0.5, 0.5]
    #   g2' = g2 + g1 * sqrt2 * (1/sqrt2) / 1 = [-1, 1] + [1, 0]     = [0, 1]
    #   update = [0.5, 1.5]; targets -> (1 - beta) 0 + beta (-1/sqrt2) = -0.01/sqrt2 for both pairs
    agg = GradVac()
    assert agg.targets is None
    assert close(agg(HAND), [0.5, 1.5])
    t = -0.01 / SQ2
    assert close(agg.targets, [[0.0, t], [t, 0.0]])


def test_gradvac_with_zero_targets_matches_pcgrad_under_the_same_seed():
    # phi_hat = 0 turns the vaccine into PCGrad's projection, visited in the same random order.
    m = rand(4, 8, 1)
    torch.manual_seed(11)
    expected = PCGrad()(m)
    torch.manual_seed(11)
    assert close(GradVac(beta=0.0)(m), expected)


def test_gradvac_raises_a_pair_below_its_target_exactly_to_it():
    agg = GradVac(beta=0.5)
    agg(HAND)  # targets: 0.5 * 0 + 0.5 * (-1/sqrt2) = -sqrt2/4 for (1, 2) and (2, 1)
    target = -SQ2 / 4
    assert close(agg.targets[0, 1], target)
    rows = agg.adjusted(HAND)  # cos(g1, g2) = -0.707 < -0.354: lifted to the target
    assert cos(rows[0], HAND[1]) == pytest.approx(target, abs=1e-12)
    assert cos(rows[1], HAND[0]) == pytest.approx(target, abs=1e-12)
    assert cos(rows[0], HAND[1]) > cos(HAND[0], HAND[1])
    # written out: a = ||g1|| (t sqrt(1 - phi^2) - phi sqrt(1 - t^2)) / (||g2|| sqrt(1 - t^2))
    #              = 1/2 - 1/(2 sqrt7)  (phi = -1/sqrt2, t = -sqrt2/4, sqrt(1 - t^2) = sqrt(7/8))
    a = 0.5 - 1 / (2 * math.sqrt(7.0))
    assert close(rows[0], HAND[0] + a * HAND[1])


def test_gradvac_leaves_pairs_above_their_target_alone():
    m = torch.tensor([[1.0, 0.0], [1.0, 1.0]], dtype=F64)  # cos = 1/sqrt2 > 0 = initial target
    agg = GradVac(beta=0.1)
    assert close(agg(m), [2.0, 1.0])
    assert close(agg.targets, [[0.0, 0.1 / SQ2], [0.1 / SQ2, 0.0]])


def test_gradvac_targets_follow_the_moving_average_every_step():
    agg, phi = GradVac(beta=0.25), -1 / SQ2
    expected = 0.0
    for _ in range(3):
        agg(HAND)
        expected = 0.75 * expected + 0.25 * phi  # updated every call, with the pre-correction cos
        assert agg.targets[0, 1] == pytest.approx(expected, abs=1e-14)


def test_gradvac_state_is_sized_from_the_first_matrix():
    agg = GradVac()
    agg(rand(3, 4, 0))
    assert agg.targets.shape == (3, 3)
    with pytest.raises(ValueError, match="tracks 3 tasks"):
        agg(rand(2, 4, 0))


def test_gradvac_target_near_one_stays_finite():
    agg = GradVac(beta=1.0)
    agg(torch.tensor([[1.0, 0.0], [2.0, 0.0]], dtype=F64))  # phi = 1 -> targets become exactly 1
    out = agg(HAND)
    assert torch.isfinite(out).all()


# --------------------------------------------------------------------------------------------------
# GradDrop


def test_graddrop_hand_case():
    # g1 = [1, 0, 3], g2 = [-1, 1, -1]
    #   purity P = 0.5 (1 + sum / sum|.|) = [0.5 (1 + 0/2), 0.5 (1 + 1/1), 0.5 (1 + 2/4)] = [0.5, 1, 0.75]
    #   coordinate 0: U < 0.5 keeps +1 (g1), else -1 (g2); coordinate 1: P = 1 keeps +1 always;
    #   coordinate 2: U < 0.75 keeps +3, else -1.
    m = torch.tensor([[1.0, 0.0, 3.0], [-1.0, 1.0, -1.0]], dtype=F64)
    for seed in range(8):
        torch.manual_seed(seed)
        u = torch.rand(3, dtype=F64)
        expected = [1.0 if u[0] < 0.5 else -1.0, 1.0, 3.0 if u[2] < 0.75 else -1.0]
        torch.manual_seed(seed)
        assert close(GradDrop()(m), expected)
        # leak 0.5: 0.5 * sum + 0.5 * masked, sum = [0, 1, 2]
        torch.manual_seed(seed)
        assert close(GradDrop(leak=0.5)(m), [0.5 * expected[0], 1.0, 1.0 + 0.5 * expected[2]])


def test_graddrop_keeps_everything_when_signs_agree_per_coordinate():
    m = rand(3, 50, 4).abs() * torch.where(rand(1, 50, 5) > 0, 1.0, -1.0)  # one sign per column
    m[1, :5] = 0.0  # zeros do not break purity
    for seed in range(5):
        torch.manual_seed(seed)
        assert torch.equal(GradDrop()(m), m.sum(dim=0))


def test_graddrop_full_leak_is_the_sum_and_zero_columns_give_zero():
    m = rand(3, 10, 6)
    m[:, 4] = 0.0
    assert close(GradDrop(leak=1.0)(m), m.sum(dim=0))
    out = GradDrop()(m)
    assert out[4] == 0.0
    # every coordinate keeps exactly one sign: the sum of the positive or of the negative entries
    pos, neg = m.clamp(min=0).sum(dim=0), m.clamp(max=0).sum(dim=0)
    assert ((out == pos) | (out == neg)).all()


def test_graddrop_keeps_the_positive_sign_with_probability_purity():
    m = torch.tensor([[3.0], [-1.0]], dtype=F64).repeat(1, 20000)  # P = 0.75 everywhere
    torch.manual_seed(0)
    share = float((GradDrop()(m) > 0).double().mean())
    assert share == pytest.approx(0.75, abs=0.02)


# --------------------------------------------------------------------------------------------------
# IMTL-G


def test_imtl_g_hand_case():
    # u1 = [1, 0], u2 = [-1, 1]/sqrt2; D = g1 - g2 = [2, -1]; U = u1 - u2 = [1 + 1/sqrt2, -1/sqrt2]
    #   D U^T = 2 + 3/sqrt2 = (sqrt2 + 1)^2 / sqrt2,  g1 U^T = 1 + 1/sqrt2 = (sqrt2 + 1)/sqrt2
    #   alpha2 = 1/(sqrt2 + 1) = sqrt2 - 1,  alpha1 = 2 - sqrt2
    #   sum alpha_i g_i = [(2 - sqrt2) - (sqrt2 - 1), sqrt2 - 1] = [3 - 2 sqrt2, sqrt2 - 1]
    #   update = T * that = [6 - 4 sqrt2, 2 sqrt2 - 2]   (projection onto u1 and u2: 6 - 4 sqrt2)
    agg = IMTLG()
    assert close(agg.weights(HAND), [2 * (2 - SQ2), 2 * (SQ2 - 1)])
    out = agg(HAND)
    assert close(out, [6 - 4 * SQ2, 2 * SQ2 - 2])
    assert float(out @ HAND[0]) == pytest.approx(6 - 4 * SQ2, abs=1e-12)
    assert float(out @ HAND[1]) / SQ2 == pytest.approx(6 - 4 * SQ2, abs=1e-12)


@pytest.mark.parametrize("tasks, seed", [(2, 0), (3, 1), (4, 2), (5, 3), (6, 4)])
def test_imtl_g_projections_onto_unit_gradients_are_equal(tasks, seed):
    m = rand(tasks, 12, seed)
    out = IMTLG()(m)
    projections = (m / m.norm(dim=1, keepdim=True)) @ out
    assert torch.allclose(projections, projections[0].expand(tasks), rtol=1e-9, atol=1e-9)
    assert IMTLG().weights(m).sum() == pytest.approx(tasks)


def test_imtl_g_singular_cases():
    v = rand(1, 5, 7)[0]
    assert close(IMTLG()(torch.stack([v, v, v])), 3 * v)  # equal rows: the plain sum
    assert close(IMTLG()(torch.stack([v, -v])), torch.zeros(5))  # exactly opposite
    assert close(IMTLG()(torch.stack([v, -3 * v])), torch.zeros(5))  # opposite, other norms
    assert close(IMTLG()(torch.stack([v, 2 * v])), 2 * v)  # parallel: alpha = [1, 0], times T
    assert close(IMTLG()(torch.stack([torch.zeros(5), v])), v)  # zero row left out
    # a zero row among three: the closed form runs on the two others (the hand case, T = 2)
    m = torch.cat([HAND[:1], torch.zeros(1, 2, dtype=F64), HAND[1:]])
    assert close(IMTLG()(m), [6 - 4 * SQ2, 2 * SQ2 - 2])
    assert close(IMTLG().weights(m)[1], 0.0)


# --------------------------------------------------------------------------------------------------
# Aligned-MTL


def test_aligned_mtl_hand_case():
    # G G^T = [[1, -1], [-1, 2]], eigenvalues (3 +- sqrt5)/2, sigma_min = sqrt((3 - sqrt5)/2) = (sqrt5 - 1)/2.
    # B G = sigma_min V W^T = sigma_min Q with Q the orthogonal polar factor of G; for a 2x2 G with
    # det G = 1 > 0, Q = (G + cof G) / ||.|| = [[2, 1], [-1, 2]] / sqrt5.
    #   aligned = (sqrt5 - 1)/(2 sqrt5) [[2, 1], [-1, 2]],  update = (5 - sqrt5)/10 [1, 3]
    s5 = math.sqrt(5.0)
    agg = AlignedMTL()
    assert close(agg.adjusted(HAND), (s5 - 1) / (2 * s5) * torch.tensor([[2.0, 1.0], [-1.0, 2.0]], dtype=F64))
    assert close(agg(HAND), (5 - s5) / 10 * torch.tensor([1.0, 3.0], dtype=F64))


@pytest.mark.parametrize("tasks, seed", [(2, 0), (3, 1), (4, 2), (6, 3)])
def test_aligned_mtl_aligned_matrix_has_condition_number_one(tasks, seed):
    m = rand(tasks, 9, seed)
    singular = torch.linalg.svdvals(AlignedMTL().adjusted(m))
    sigma_min = torch.linalg.svdvals(m).min()
    assert torch.allclose(singular, sigma_min.expand(tasks), rtol=1e-10, atol=0)


@pytest.mark.parametrize("seed", range(3))
def test_aligned_mtl_does_not_depend_on_task_order(seed):
    m = rand(4, 7, seed)
    out = AlignedMTL()(m)
    for perm in ([3, 2, 1, 0], [1, 3, 0, 2]):
        assert torch.allclose(AlignedMTL()(m[perm]), out, rtol=1e-10, atol=1e-12)


def test_aligned_mtl_rank_deficient_cases():
    v = rand(1, 5, 8)[0]
    assert close(AlignedMTL()(torch.stack([v, v])), 2 * v)  # rank 1: already aligned, the sum
    assert close(AlignedMTL()(torch.stack([v, -v])), torch.zeros(5))
    assert close(AlignedMTL()(torch.stack([v, torch.zeros(5, dtype=F64)])), v)
    # rank 2 of 3 (g3 = g1 + g2): the two non-zero singular values become equal
    m = rand(2, 6, 9)
    m = torch.cat([m, m.sum(dim=0, keepdim=True)])
    singular = torch.linalg.svdvals(AlignedMTL().adjusted(m))
    assert torch.allclose(singular[:2], singular[1].expand(2), rtol=1e-9) and singular[2] < 1e-9


# --------------------------------------------------------------------------------------------------
# shared robustness





@pytest.mark.parametrize("name", sorted(NAMES))
@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_no_nan_and_shape_dtype_kept(name, dtype):
    for label, m in {**degenerate(dtype), "random": rand(3, 6, 12, dtype)}.items():
        agg = NAMES[name]()
        for _ in range(2):  # twice, for GradVac's state
            out = agg(m)
            assert out.shape == (6,) and out.dtype == dtype and out.device == m.device, label
            assert torch.isfinite(out).all(), f"{name} on {label}: {out}"
    if name in ("pcgrad", "gradvac", "imtl_g", "aligned_mtl"):
        assert (NAMES[name]()(torch.zeros(2, 4, dtype=dtype)) == 0).all()


@pytest.mark.parametrize("name", sorted(set(NAMES) - {"graddrop"}))  # GradDrop's U depends on the dtype
def test_float32_matches_float64(name):
    m = rand(3, 8, 13)
    torch.manual_seed(0)
    low = NAMES[name]()(m.float())
    torch.manual_seed(0)
    high = NAMES[name]()(m)
    assert torch.allclose(low.double(), high, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", sorted(NAMES))
def test_deterministic_under_manual_seed(name):
    steps = [rand(4, 10, s) for s in range(4)]
    runs = []
    for _ in range(2):
        torch.manual_seed(21)
        agg = NAMES[name]()
        runs.append(torch.stack([agg(m) for m in steps]))
    assert torch.equal(runs[0], runs[1])


@pytest.mark.parametrize("name", sorted(NAMES))
def test_input_is_not_modified(name):
    m = rand(3, 5, 14)
    before = m.clone()
    NAMES[name]()(m)
    assert torch.equal(m, before)


# --------------------------------------------------------------------------------------------------
# float32 inputs: Gram matrix in float32 when the rows are clearly independent, float64 otherwise


GRAM_BASED = sorted(set(NAMES) - {"graddrop"})


def independent32() -> torch.Tensor:
    m = rand(3, 20000, 15, torch.float32)
    m[1] -= 0.6 * m[0]  # a conflict, still clearly independent rows
    return m


def test_gram_is_formed_in_float32_only_for_clearly_independent_rows():
    from mtlsearch.weighting.pcgrad import gram_float64

    m = independent32()
    gram, low = gram_float64(m)
    assert low and gram.dtype == F64 and gram.shape == (3, 3)
    exact = m.double() @ m.double().T
    assert torch.allclose(gram, exact, rtol=0, atol=1e-6 * float(exact.diagonal().max()))
    assert not gram_float64(m.double())[1]  # float64 input: formed in float64
    v = m[0]
    for label, bad in {
        "zero row": torch.stack([v, torch.zeros_like(v), m[2]]),
        "parallel": torch.stack([v, 3 * v]),
        "opposite": torch.stack([v, -v, m[2]]),
        "nearly dependent": torch.stack([m[0], m[1], m[0] + m[1]]),
        "cos 0.9995": torch.stack([v, v + 0.03 * m[2]]),
        "overflow": 1e18 * m,
        "underflow": 1e-25 * m,
    }.items():
        gram, low = gram_float64(bad)
        assert not low, label
        assert torch.equal(gram, bad.double() @ bad.double().T), label


@pytest.mark.parametrize("name", GRAM_BASED)
def test_float32_fast_path_agrees_with_float64_on_a_large_matrix(name):
    # float32 Gram matrix and float32 update: agreement to float32 rounding, relative to the rows' norms
    m = independent32()
    torch.manual_seed(0)
    low = NAMES[name]()(m)
    torch.manual_seed(0)
    high = NAMES[name]()(m.double())
    assert low.dtype == torch.float32
    assert float((low.double() - high).norm()) <= 1e-5 * float(m.double().norm(dim=1).sum())


@pytest.mark.parametrize("name", GRAM_BASED)
def test_float32_degenerate_rows_take_the_float64_path_exactly(name):
    v = rand(1, 40, 16, torch.float32)[0]
    w = rand(1, 40, 17, torch.float32)[0]
    for label, m in {
        "opposite": torch.stack([v, -v, w]),
        "parallel": torch.stack([v, 3 * v]),
        "zero row": torch.stack([v, torch.zeros_like(v), w]),
        "rank 2 of 3": torch.stack([v, w, v + w]),
        "near parallel": torch.stack([v, v + 1e-4 * w]),
    }.items():
        torch.manual_seed(4)
        out = NAMES[name]()(m)
        torch.manual_seed(4)
        assert torch.equal(out, NAMES[name]()(m.double()).float()), label


def reference_imtl_g_weights(matrix: torch.Tensor) -> torch.Tensor:
    """The closed form evaluated on the (T, P) rows themselves (the former implementation)."""
    g = matrix.to(F64)
    norms = g.norm(dim=1)
    alpha = torch.zeros(g.shape[0], dtype=F64)
    live = torch.nonzero(norms > 0).flatten()
    if live.numel() == 1:
        alpha[live] = 1.0
    elif live.numel() > 1:
        rows, n = g[live], norms[live]
        units = rows / n[:, None]
        d, u = rows[0] - rows[1:], units[0] - units[1:]
        inverse = torch.linalg.pinv(d @ u.T, atol=1e-12 * float(n.max()), rtol=1e-12)
        rest = (rows[0] @ u.T) @ inverse
        alpha[live] = torch.cat([(1.0 - rest.sum()).reshape(1), rest])
    return live.numel() * alpha


@pytest.mark.parametrize("tasks, seed", [(2, 20), (3, 21), (5, 22), (9, 23)])
def test_imtl_g_on_the_gram_matrix_matches_the_closed_form_on_the_rows(tasks, seed):
    m = rand(tasks, 30, seed)
    m[1] -= 0.8 * m[0]
    assert torch.allclose(IMTLG().weights(m), reference_imtl_g_weights(m), rtol=1e-10, atol=1e-10)
    v = m[0]
    for singular in (torch.stack([v, v, m[2 % tasks]]), torch.stack([v, -2 * v, v]), torch.stack([v, 0 * v, m[1]])):
        assert torch.allclose(IMTLG().weights(singular), reference_imtl_g_weights(singular), rtol=1e-10, atol=1e-10)


def reference_graddrop(matrix: torch.Tensor, leak: float) -> torch.Tensor:
    """GradDrop written out with explicit masks (the former implementation), same RNG draw."""
    total = matrix.sum(dim=0)
    magnitude = matrix.abs().sum(dim=0)
    purity = 0.5 * (1.0 + total / torch.where(magnitude > 0, magnitude, torch.ones_like(magnitude)))
    u = torch.rand(matrix.shape[1], device=matrix.device, dtype=matrix.dtype)
    mask = torch.where(u < purity, matrix > 0, matrix < 0)
    dropped = (matrix * mask).sum(dim=0)
    return dropped if leak == 0.0 else leak * total + (1.0 - leak) * dropped


@pytest.mark.parametrize("dtype", [torch.float32, F64])
@pytest.mark.parametrize("leak", [0.0, 0.3])
def test_graddrop_is_bitwise_the_explicit_mask_formula_under_a_seed(dtype, leak):
    m = rand(4, 3000, 18, dtype)
    m[:, :10] = 0.0
    m[2, 10:20] = 0.0
    for matrix in (m, m.T.contiguous().T):  # also a column-major input
        torch.manual_seed(5)
        expected = reference_graddrop(matrix, leak)
        after_expected = torch.rand(3)
        torch.manual_seed(5)
        out = GradDrop(leak=leak)(matrix)
        assert torch.equal(out, expected)
        assert torch.equal(torch.rand(3), after_expected)  # the same RNG use
