"""MGDA, MGDA-UB, CAGrad, UPGrad, Nash-MTL and their exact solvers.

The solvers are checked against exhaustive enumeration of the supports (every support's KKT
system solved directly, the best feasible point kept), the methods against hand-computed cases
written out below and against the optimality conditions of their papers' problems.

Two hand cases recur: ``g1 = [1, 0], g2 = [0, 1]`` (orthogonal) and ``g1 = [1, 0], g2 = [-1, 1]``
(conflicting, ``g1 . g2 = -1``). Scale convention: every update is *sum*-scale (T identical rows
``g`` give ``T g``, as equal weighting does), except CAGrad's paper factor ``(1 + c) / (1 + c^2)``.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from optuna.trial import FixedTrial
from torch import nn

from mtlsearch.errors import ConfigError
from mtlsearch.weighting import AGGREGATORS, METHODS, WEIGHTINGS, StepContext
from mtlsearch.weighting import solvers
from mtlsearch.weighting.cagrad import CAGrad, cagrad_kkt_residual, cagrad_weights
from mtlsearch.weighting.mgda import MGDA, MGDAUB
from mtlsearch.weighting.nash_mtl import NashMTL, nash_weights
from mtlsearch.weighting.upgrad import UPGrad, upgrad_weights

F64 = torch.float64
ORTHO = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=F64)
HAND = torch.tensor([[1.0, 0.0], [-1.0, 1.0]], dtype=F64)
AGGS = {"mgda": MGDA, "cagrad": CAGrad, "upgrad": UPGrad, "nash_mtl": NashMTL}


def rand(rows: int, cols: int, seed: int, dtype=F64) -> torch.Tensor:
    return torch.randn(rows, cols, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def instances(count: int, seed: int = 0):
    """Random (T, P) matrices, T = 2..6: general, with equal rows, with opposite rows, rank
    deficient (P < T) and with row norms spread over orders of magnitude."""
    gen = torch.Generator().manual_seed(seed)
    for k in range(count):
        t = 2 + k % 5
        p = 1 + int(torch.randint(0, 9, (1,), generator=gen))
        g = torch.randn(t, p, generator=gen, dtype=F64)
        kind = k % 4
        if kind == 1:
            g[1] = g[0]
        elif kind == 2:
            g[1] = -0.7 * g[0]
        elif kind == 3:
            g = g * torch.rand(t, 1, generator=gen, dtype=F64) ** 3
        yield g


def lstsq(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.linalg.lstsq(a, b.unsqueeze(1), driver="gelsd").solution.squeeze(1)


def brute_simplex(q: torch.Tensor, lin: torch.Tensor) -> tuple[float, torch.Tensor]:
    """min 1/2 w^T q w + lin^T w over the simplex, by solving every support's KKT system."""
    t = q.shape[0]
    best = None
    for k in range(1, t + 1):
        for support in itertools.combinations(range(t), k):
            s = list(support)
            kkt = torch.zeros(k + 1, k + 1, dtype=F64)
            kkt[:k, :k] = q[s][:, s]
            kkt[:k, k] = 1.0
            kkt[k, :k] = 1.0
            rhs = torch.cat([-lin[s], torch.ones(1, dtype=F64)])
            ws = lstsq(kkt, rhs)[:k]
            if bool((ws < -1e-12).any()):
                continue
            w = torch.zeros(t, dtype=F64)
            w[s] = ws.clamp(min=0)
            w /= w.sum()
            value = float(0.5 * w @ q @ w + lin @ w)
            if best is None or value < best[0]:
                best = (value, w)
    return best


def brute_above(q: torch.Tensor, low: torch.Tensor) -> tuple[float, torch.Tensor]:
    """min v^T q v over v >= low, by solving every free set's stationarity system."""
    t = q.shape[0]
    best = None
    for k in range(t + 1):
        for support in itertools.combinations(range(t), k):
            s = list(support)
            v = low.clone()
            if k:
                z = lstsq(q[s][:, s], -(q @ low)[s])
                if bool((z < -1e-12).any()):
                    continue
                v[s] += z.clamp(min=0)
            value = float(v @ q @ v)
            if best is None or value < best[0]:
                best = (value, v)
    return best


# --------------------------------------------------------------------------------------------------
# Solvers


def test_min_norm_solver_matches_enumeration():
    for g in instances(120):
        q = g @ g.T
        w = solvers.min_norm_weights(q)
        value, wb = brute_simplex(q, torch.zeros(q.shape[0], dtype=F64))
        scale = float(q.diagonal().max())
        assert w.dtype == F64 and w.shape == (g.shape[0],)
        assert float(w.min()) >= 0 and abs(float(w.sum()) - 1) < 1e-14
        assert abs(0.5 * float(w @ q @ w) - value) <= 1e-12 * scale
        assert torch.allclose(g.T @ w, g.T @ wb, atol=1e-8 * math.sqrt(scale), rtol=0)  # the point is unique
        assert solvers.simplex_kkt_residual(q, None, w) <= 1e-10


def test_simplex_qp_with_linear_term_matches_enumeration():
    gen = torch.Generator().manual_seed(3)
    for g in instances(60, seed=1):
        q = g @ g.T
        lin = torch.randn(q.shape[0], generator=gen, dtype=F64) * float(q.diagonal().max())
        w = solvers.simplex_qp(q, lin)
        value, wb = brute_simplex(q, lin)
        assert abs(float(0.5 * w @ q @ w + lin @ w) - value) <= 1e-10 * (1 + abs(value))
        assert solvers.simplex_kkt_residual(q, lin, w) <= 1e-10


@pytest.mark.slow
def test_box_solver_matches_enumeration():
    for k, g in enumerate(instances(120, seed=2)):
        q = g @ g.T
        t = q.shape[0]
        low = torch.zeros(t, dtype=F64)
        low[k % t] = 1.0
        v = solvers.min_quadratic_above(q, low)
        value, vb = brute_above(q, low)
        scale = float(q.diagonal().max())
        assert float((v - low).min()) >= 0
        assert abs(float(v @ q @ v) - value) <= 1e-10 * scale
        assert torch.allclose(g.T @ v, g.T @ vb, atol=1e-8 * math.sqrt(scale), rtol=0)  # the projection is unique
        assert solvers.nonneg_kkt_residual(q, q @ low, v - low) <= 1e-10
        # A guess of the support (right, wrong or full) changes the path, not the optimum.
        for hint in (vb - low > 0, torch.rand(t, generator=torch.Generator().manual_seed(k)) < 0.5, torch.ones(t, dtype=torch.bool)):
            vh = solvers.min_quadratic_above(q, low, hint=hint)
            assert torch.allclose(g.T @ vh, g.T @ vb, atol=1e-8 * math.sqrt(scale), rtol=0)


def test_solvers_on_degenerate_gram_matrices():
    ones = torch.ones(4, 4, dtype=F64) * 7.0  # four equal rows: any weights are optimal
    assert torch.allclose(solvers.min_norm_weights(ones), torch.full((4,), 0.25, dtype=F64), atol=1e-14)
    zero = torch.zeros(3, 3, dtype=F64)
    assert torch.equal(solvers.min_norm_weights(zero), torch.full((3,), 1 / 3, dtype=F64))
    assert torch.equal(solvers.min_quadratic_above(zero, torch.tensor([1.0, 0, 0], dtype=F64)), torch.tensor([1.0, 0, 0], dtype=F64))
    opposite = torch.tensor([[1.0, -1.0], [-1.0, 1.0]], dtype=F64)
    assert torch.allclose(solvers.min_norm_weights(opposite), torch.tensor([0.5, 0.5], dtype=F64), atol=1e-15)
    v = solvers.min_quadratic_above(opposite, torch.tensor([1.0, 0.0], dtype=F64))
    assert abs(float(v[0] - v[1])) < 1e-14 and float(v[1]) >= 0  # G^T v = 0: the projection of g onto {g, -g}* is 0
    assert not torch.isnan(solvers.min_norm_weights(torch.full((2, 2), float("1e-300"), dtype=F64))).any()
    # z >= 0 with a linear term outside the range of the quadratic: unbounded below.
    with pytest.raises(ValueError, match="unbounded"):
        solvers.nonneg_qp(torch.zeros(2, 2, dtype=F64), torch.tensor([1.0, -1.0], dtype=F64))
    # ... while on the simplex the same linear term just picks the vertex.
    assert torch.equal(solvers.simplex_qp(torch.zeros(2, 2, dtype=F64), torch.tensor([1.0, -1.0], dtype=F64)), torch.tensor([0.0, 1.0], dtype=F64))


def kinds_of_rows(gen: torch.Generator, t: int, p: int, k: int) -> torch.Tensor:
    """A random ``(t, p)`` matrix: plain (k % 3 == 0), with strong conflicts (1) or with row norms
    spread over four orders of magnitude (2)."""
    g = torch.randn(t, p, generator=gen, dtype=F64)
    if k % 3 == 1:
        g = g - 1.5 * g.mean(0)  # strong conflicts
    elif k % 3 == 2:
        g = g * 10 ** (4 * torch.rand(t, 1, generator=gen, dtype=F64) - 2)  # spread row norms
    return g


@pytest.mark.slow
def test_enumeration_of_supports_agrees_with_the_active_set_method():
    """Small problems are solved by enumerating the supports (Python floats up to 3 variables,
    one batch of torch solves up to 8); that path must give the active-set method's point (the
    minimiser is unique whenever it is taken) and a tiny KKT residual."""
    gen = torch.Generator().manual_seed(21)
    taken = {"py": 0, "torch": 0}
    for k in range(240):
        t = 2 + k % 7
        g = kinds_of_rows(gen, t, t + 2 + k % 5, k)
        q = g @ g.T
        qs = solvers._matrix(q)
        scale = float(q.diagonal().max())
        zero = torch.zeros(t, 1, dtype=F64)
        for lin in (zero, q.sum(1, keepdim=True) / t):
            found = solvers._enumerate(qs * 2.0, lin, simplex=True)
            assert found is not None and found[1] == [True]
            taken["py" if t <= solvers._PY_MAX else "torch"] += 1
            w = found[0][:, 0]
            reference = solvers._active_set(qs * 2.0, lin[:, 0], True, None, enumerate_first=False)
            assert torch.allclose(g.T @ w, g.T @ reference, atol=1e-9 * math.sqrt(scale), rtol=0)
            assert solvers.simplex_kkt_residual(qs * 2.0, lin[:, 0], w) <= 1e-12
        eye = torch.eye(t, dtype=F64)
        rows = solvers.min_quadratic_above_rows(q, eye)
        for i in range(t):
            reference = eye[i] + solvers._active_set(qs, qs[:, i], False, None, bounded=True, enumerate_first=False)
            assert torch.allclose(g.T @ rows[i], g.T @ reference, atol=1e-9 * math.sqrt(scale), rtol=0)
            assert solvers.nonneg_kkt_residual(q, q[:, i], rows[i] - eye[i]) <= 1e-12
        if t <= solvers._PY_MAX:  # the two enumerations pick the same support
            a = solvers._enumerate_torch(qs, qs, simplex=False)
            b = solvers._enumerate_py(qs.tolist(), qs.T.tolist(), simplex=False)
            assert a[1] == b[1] and torch.allclose(a[0], torch.tensor(b[0], dtype=F64).T, atol=1e-12, rtol=0)
    assert taken["py"] and taken["torch"]
    # Singular or nearly singular quadratics are left to the active-set method (its tie rule).
    assert solvers._enumerate(torch.ones(3, 3, dtype=F64), torch.zeros(3, 1, dtype=F64), simplex=True) is None
    assert solvers._enumerate(torch.ones(5, 5, dtype=F64), torch.zeros(5, 1, dtype=F64), simplex=True) is None
    assert solvers._enumerate(torch.eye(9, dtype=F64), torch.zeros(9, 1, dtype=F64), simplex=True) is None  # too large


@pytest.mark.slow
def test_primal_dual_active_set_agrees_with_the_active_set_method(monkeypatch):
    """Batches of z >= 0 problems from 5 variables up go first to the primal-dual active-set strategy
    (UPGrad's T projections in one batch). Every row it settles is the active-set method's point
    with a KKT residual of rounding size; a row it does not settle (here: one round only, from a
    wrong guess) is left to the active-set method, and the answer is the same."""
    gen = torch.Generator().manual_seed(5)
    settled = 0
    for k in range(36):
        t = 5 + (k * 7) % 28  # 5..32 tasks
        g = kinds_of_rows(gen, t, t + 3 + k % 40, k)
        q = g @ g.T
        qs = solvers._matrix(q)
        scale = float(q.diagonal().max())
        x, ok = solvers._pdas(qs, qs, qs < 0)
        settled += sum(ok)
        rows = solvers.min_quadratic_above_rows(q, torch.eye(t, dtype=F64), hints=q < 0)
        for i in range(t):
            reference = solvers._active_set(qs, qs[:, i], False, None, bounded=True, enumerate_first=False)
            assert torch.allclose(g.T @ rows[i], g.T @ (reference + torch.eye(t, dtype=F64)[i]), atol=1e-9 * math.sqrt(scale), rtol=0)
            assert solvers.nonneg_kkt_residual(q, q[:, i], rows[i] - torch.eye(t, dtype=F64)[i]) <= 1e-12
            if ok[i]:
                assert torch.allclose(g.T @ x[:, i], g.T @ reference, atol=1e-9 * math.sqrt(scale), rtol=0)
    assert settled > 0.95 * sum(5 + (k * 7) % 28 for k in range(36))
    # Singular quadratics (equal rows) are left to the active-set method and its tie rule.
    assert solvers._pdas(torch.ones(5, 5, dtype=F64), torch.zeros(5, 1, dtype=F64)) is None
    # One round from the empty guess does not settle conflicting rows; the fallback does.
    g = torch.randn(10, 30, generator=gen, dtype=F64)
    g = g - 1.5 * g.mean(0)
    q = g @ g.T
    qs = solvers._matrix(q)
    monkeypatch.setattr(solvers, "_PDAS_ITER", 1)
    none = torch.zeros(10, 10, dtype=torch.bool)
    _, ok = solvers._pdas(qs, qs, none)
    assert not all(ok)
    rows = solvers.min_quadratic_above_rows(q, torch.eye(10, dtype=F64), hints=none)
    for i in range(10):
        assert solvers.nonneg_kkt_residual(q, q[:, i], rows[i] - torch.eye(10, dtype=F64)[i]) <= 1e-12


@pytest.mark.slow
def test_simplex_problems_above_eight_variables_take_the_primal_dual_strategy():
    """Simplex problems above ENUMERATE_MAX variables (MGDA, CAGrad's inner problems at T > 8) go
    first to the primal-dual strategy with the simplex row: the same optimum as the active-set
    method, a KKT residual no larger, and singular quadratics still left to the active-set method."""
    gen = torch.Generator().manual_seed(8)
    for k in range(60):
        t = 9 + k % 24
        g = kinds_of_rows(gen, t, t + 2 + k % 30, k)
        q = solvers._matrix(g @ g.T)
        for lin in (torch.zeros(t, dtype=F64), q.sum(1) / t, torch.randn(t, generator=gen, dtype=F64) * float(q.diagonal().max())):
            x, ok = solvers._pdas(q, lin[:, None], simplex=True)
            assert ok == [True]
            w, ref = x[:, 0], solvers._active_set(q, lin, True, None, enumerate_first=False)
            assert abs(float(w.sum()) - 1) < 1e-14 and float(w.min()) >= 0
            fw, fr = float(0.5 * w @ q @ w + lin @ w), float(0.5 * ref @ q @ ref + lin @ ref)
            assert abs(fw - fr) <= 1e-10 * (1 + abs(fr))
            assert solvers.simplex_kkt_residual(q, lin, w) <= max(1e-12, 2 * solvers.simplex_kkt_residual(q, lin, ref))
            assert torch.equal(solvers.simplex_qp(q, lin), w)  # the path simplex_qp takes
    assert solvers._pdas(torch.ones(10, 10, dtype=F64), torch.zeros(10, 1, dtype=F64), simplex=True) is None
    assert torch.allclose(solvers.min_norm_weights(torch.ones(10, 10, dtype=F64)), torch.full((10,), 0.1, dtype=F64))


def test_gram_matrix_precision_paths():
    g = rand(3, 1000, 30)
    # float64: formed in float64.
    assert torch.equal(solvers.gram_matrix(g), g @ g.T)
    # float32 with clearly independent rows: formed in float32 (no float64 copy of G).
    g32 = g.float()
    q = solvers.gram_matrix(g32)
    assert q.dtype == F64 and q.device.type == "cpu"
    assert torch.equal(q, (g32 @ g32.T).double())
    assert torch.allclose(q, g32.double() @ g32.double().T, rtol=1e-5, atol=0)
    # Degenerate float32 inputs are recomputed in float64: zero row, nearly parallel rows,
    # overflowing and underflowing squares; other dtypes too.
    exact = lambda m: m.double() @ m.double().T  # noqa: E731
    zero_row = g32.clone()
    zero_row[1] = 0
    parallel = g32.clone()
    parallel[2] = 0.5 * parallel[0] + 1e-3 * parallel[1]
    for m in (zero_row, parallel, g32 * 1e20, g32 * 1e-22, g32[[0, 0, 1]]):
        assert torch.equal(solvers.gram_matrix(m), exact(m))
    assert torch.equal(solvers.gram_matrix(g32.half()), exact(g32.half()))


def test_aggregators_keep_float32_inputs_in_float32(monkeypatch):
    """The (T, P) matrix is never copied to float64: only the T x T Gram matrix is."""
    g = rand(3, 400, 31).float()
    calls = []
    original = torch.Tensor.to

    def spy(self, *args, **kwargs):
        if self.shape == g.shape and (torch.float64 in args or kwargs.get("dtype") == torch.float64):
            calls.append(self.shape)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(torch.Tensor, "to", spy)
    for name in sorted(AGGS):
        out = AGGS[name]()(g)
        assert out.dtype == torch.float32 and bool(torch.isfinite(out).all())
    assert calls == []


def test_project_simplex():
    y = torch.tensor([0.5, 2.0, -1.0], dtype=F64)
    assert torch.allclose(solvers.project_simplex(y), torch.tensor([0.0, 1.0, 0.0], dtype=F64))
    p = solvers.project_simplex(torch.tensor([0.3, 0.3, 0.2], dtype=F64))
    assert torch.allclose(p, torch.tensor([0.3, 0.3, 0.2], dtype=F64) + 0.2 / 3, atol=1e-15)


# --------------------------------------------------------------------------------------------------
# MGDA


def test_mgda_hand_cases():
    # Orthogonal unit rows: w = (1/2, 1/2), min-norm point [1/2, 1/2], times T = 2.
    assert torch.allclose(MGDA()(ORTHO), torch.tensor([1.0, 1.0], dtype=F64), atol=1e-15)
    # g1 = [1, 0], g2 = [-1, 1]: w1 = (g2 - g1).g2 / ||g1 - g2||^2 = 3/5, point = [1/5, 2/5], times 2.
    assert torch.allclose(MGDA()(HAND), torch.tensor([0.4, 0.8], dtype=F64), atol=1e-15)
    assert torch.allclose(MGDA().weights(HAND), torch.tensor([0.6, 0.4], dtype=F64), atol=1e-15)
    # normalize: [2, 0] and [0, 1] become e1, e2 (w = 1/2 each), applied to the original rows.
    rows = torch.tensor([[2.0, 0.0], [0.0, 1.0]], dtype=F64)
    assert torch.allclose(MGDA(normalize=True)(rows), torch.tensor([2.0, 1.0], dtype=F64), atol=1e-15)
    # without: w1 = ([-2, 1] . [0, 1]) / 5 = 1/5, point = [0.4, 0.8], times 2.
    assert torch.allclose(MGDA()(rows), torch.tensor([0.8, 1.6], dtype=F64), atol=1e-15)


def test_mgda_two_tasks_closed_form():
    for seed in range(30):
        g = rand(2, 5, seed)
        if seed % 3 == 0:
            g[1] = -0.5 * g[0] + 0.1 * g[1]  # conflicting
        g1, g2 = g
        w1 = float(((g2 - g1) @ g2 / ((g1 - g2) @ (g1 - g2))).clamp(0, 1))
        expected = 2 * (w1 * g1 + (1 - w1) * g2)
        assert torch.allclose(MGDA()(g), expected, atol=1e-12, rtol=0)


def test_mgda_is_the_exact_min_norm_point():
    for g in instances(60, seed=4):
        t = g.shape[0]
        q = g @ g.T
        update = MGDA()(g)
        value, wb = brute_simplex(q, torch.zeros(t, dtype=F64))
        scale = math.sqrt(float(q.diagonal().max()))
        assert torch.allclose(update, t * (g.T @ wb), atol=1e-8 * scale, rtol=0)
        # KKT: every row has g_t . x >= ||x||^2 for the min-norm point x = update / T.
        x = update / t
        assert float((g @ x).min() - x @ x) >= -1e-12 * scale**2


# --------------------------------------------------------------------------------------------------
# CAGrad


def test_cagrad_hand_cases():
    # Orthogonal rows, c = 0.5: by symmetry w = (1/2, 1/2), g_w = g0 = [1/2, 1/2];
    # d = g0 (1 + c) = [3/4, 3/4]; d / (1 + c^2) = [0.6, 0.6]; times T = 2.
    assert torch.allclose(CAGrad(c=0.5)(ORTHO), torch.tensor([1.2, 1.2], dtype=F64), atol=1e-12)
    # HAND, c = 0.4: g0 = [0, 1/2], s = c ||g0|| = 0.2, g_w = [2t - 1, 1 - t] (w = (t, 1 - t)),
    # F(t) = (1 - t)/2 + 0.2 sqrt(5t^2 - 6t + 2) has F'(t) < 0 on [0, 1]: t = 1, g_w = g1.
    # d = [0, 0.5] + 0.2 [1, 0] = [0.2, 0.5]; update = 2 d / 1.16.
    assert torch.allclose(CAGrad(c=0.4)(HAND), torch.tensor([0.4, 1.0], dtype=F64) / 1.16, atol=1e-12)
    # HAND, c = 0.8: s = 0.4, F'(t) = 0 gives 68.75 t^2 - 82.5 t + 23.5 = 0 with 10 t - 6 > 0.
    t = (82.5 + math.sqrt(82.5**2 - 4 * 68.75 * 23.5)) / (2 * 68.75)
    gw = torch.tensor([2 * t - 1, 1 - t], dtype=F64)
    d = torch.tensor([0.0, 0.5], dtype=F64) + 0.4 * gw / gw.norm()
    assert torch.allclose(CAGrad(c=0.8)(HAND), 2 * d / (1 + 0.64), atol=1e-12)
    w, _ = cagrad_weights(HAND @ HAND.T, 0.8)
    assert abs(float(w[0]) - t) < 1e-12


def test_cagrad_tends_to_the_sum_as_c_tends_to_zero():
    for seed in range(5):
        g = rand(4, 7, seed)
        assert torch.allclose(CAGrad(c=0.0)(g), g.sum(0), atol=1e-14)
        assert torch.allclose(CAGrad(c=1e-9)(g), g.sum(0), atol=1e-7)
        gap = [float((CAGrad(c=c)(g) - g.sum(0)).norm()) for c in (0.3, 0.1, 0.01)]
        assert gap[0] > gap[1] > gap[2]


@pytest.mark.slow
def test_cagrad_solves_the_papers_problem_exactly():
    """Strong duality of the paper's problem, max_{||d - g0|| <= s} min_t g_t . d (s = c ||g0||):
    d = g0 + s g_w/||g_w|| lies on the ball's boundary and min_t g_t . d equals the dual optimum
    F(w*) = g_w . g0 + s ||g_w||; w* has KKT residual ~0 and beats every sampled simplex point.
    When g_w* = 0 (dual optimum 0), d is in the ball and conflicts with no row."""
    gen = torch.Generator().manual_seed(5)
    regular = fallback = 0
    for k, g in enumerate(instances(60, seed=6)):
        t = g.shape[0]
        c = 0.05 + 0.9 * float(torch.rand(1, generator=gen))
        q = g @ g.T
        scale = float(q.diagonal().max())
        w, ratio = cagrad_weights(q, c)
        g0 = g.mean(0)
        s = c * float(g0.norm())
        d = CAGrad(c=c)(g) * (1 + c * c) / t
        if ratio is None:
            fallback += 1
            assert float((d - g0).norm()) <= s + 1e-12 * math.sqrt(scale)
            assert float((g @ d).min()) >= -1e-10 * scale
            continue
        regular += 1
        gw = g.T @ w
        assert cagrad_kkt_residual(q, c, w) <= 1e-10
        assert torch.allclose(d, g0 + s * gw / gw.norm(), atol=1e-9 * math.sqrt(scale), rtol=0)
        assert abs(ratio - s / float(gw.norm())) <= 1e-10 * ratio
        dual = float(gw @ g0) + s * float(gw.norm())
        assert abs(float((g @ d).min()) - dual) <= 1e-9 * scale
        samples = torch.distributions.Dirichlet(torch.full((t,), 0.3, dtype=F64)).sample((500,))
        points = samples @ g
        values = points @ g0 + s * points.norm(dim=1)
        assert dual <= float(values.min()) + 1e-12 * scale
    assert regular > 40 and fallback > 0


def test_cagrad_when_zero_is_in_the_hull():
    # g1 = [1, 0], g2 = [-1, 0], g3 = [1, 1]: g0 = [1/3, 1/3]; C* = {x1 = 0, x2 >= 0}; the
    # projection of g0 onto C* is [0, 1/3] at distance 1/3 = c ||g0|| for c = 1/sqrt 2.
    g = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [1.0, 1.0]], dtype=F64)
    # c = 0.9: the ball reaches C*, the dual optimum is 0 at g_w = 0; d = [0, 1/3].
    assert cagrad_weights(g @ g.T, 0.9)[1] is None
    assert torch.allclose(CAGrad(c=0.9)(g), torch.tensor([0.0, 1.0], dtype=F64) / 1.81, atol=1e-12)
    # c = 0.5: it does not; the regular solution, with min_t g_t . d = F(w*) < 0.
    w, ratio = cagrad_weights(g @ g.T, 0.5)
    assert ratio is not None and cagrad_kkt_residual(g @ g.T, 0.5, w) <= 1e-12
    d = CAGrad(c=0.5)(g) * 1.25 / 3
    gw = g.T @ w
    assert float((g @ d).min()) < 0
    assert abs(float((g @ d).min()) - float(gw @ g.mean(0) + 0.5 * g.mean(0).norm() * gw.norm())) < 1e-12
    # a zero row: F(w) >= 0 = F(e_zero); d = the projection of g0 = [1/2, 1] onto C* = {x : g . x >= 0}.
    g = torch.tensor([[1.0, 2.0], [0.0, 0.0]], dtype=F64)
    assert torch.allclose(CAGrad(c=0.4)(g), torch.tensor([1.0, 2.0], dtype=F64) / 1.16, atol=1e-12)


def test_cagrad_two_tasks_against_golden_section():
    for seed in range(10):
        g = rand(2, 3, seed)
        c = 0.1 + 0.08 * seed
        g0 = g.mean(0)
        s = c * float(g0.norm())

        def f(x):
            gw = x * g[0] + (1 - x) * g[1]
            return float(gw @ g0) + s * float(gw.norm())

        lo, hi = 0.0, 1.0
        for _ in range(200):
            a, b = lo + (hi - lo) / 3, hi - (hi - lo) / 3
            lo, hi = (lo, b) if f(a) < f(b) else (a, hi)
        w, _ = cagrad_weights(g @ g.T, c)
        assert abs(float(w[0]) - lo) < 1e-7


# --------------------------------------------------------------------------------------------------
# UPGrad


def test_upgrad_hand_cases():
    # Orthogonal rows are already in the dual cone: the sum [1, 1].
    assert torch.allclose(UPGrad()(ORTHO), torch.tensor([1.0, 1.0], dtype=F64), atol=1e-15)
    # HAND: g1 -> g1 - (g1.g2 / ||g2||^2) g2 = [1, 0] + [-1, 1]/2 = [1/2, 1/2] (g1 . that = 1/2 >= 0);
    #       g2 -> g2 - (g2.g1) g1 = [0, 1] (g2 . that = 1 >= 0); sum = [1/2, 3/2].
    assert torch.allclose(UPGrad()(HAND), torch.tensor([0.5, 1.5], dtype=F64), atol=1e-15)


@pytest.mark.slow
def test_upgrad_never_conflicts_and_projects_exactly():
    gen = torch.Generator().manual_seed(7)
    for k, g in enumerate(instances(60, seed=8)):
        if k % 2:
            g = g - 1.5 * g.mean(0)  # push rows apart: strong conflicts
        t = g.shape[0]
        q = g @ g.T
        update = UPGrad()(g)
        scale = float(q.diagonal().max())
        assert float((g @ update).min()) >= -1e-10 * scale
        expected = sum(g.T @ brute_above(q, torch.eye(t, dtype=F64)[i])[1] for i in range(t))
        assert torch.allclose(update, expected, atol=1e-8 * math.sqrt(scale) * t, rtol=0)
    # Larger, strongly conflicting: 12 tasks in 6 dimensions.
    for seed in range(10):
        g = torch.randn(12, 6, generator=gen, dtype=F64)
        update = UPGrad()(g)
        assert float((g @ update).min()) >= -1e-10 * float((g * g).sum(1).max())


def test_upgrad_of_non_conflicting_rows_is_their_sum():
    g = rand(3, 5, 9).abs()  # non-negative rows: no pairwise conflict
    assert torch.allclose(UPGrad()(g), g.sum(0), atol=1e-14)
    assert torch.allclose(upgrad_weights(g @ g.T), torch.ones(3, dtype=F64), atol=1e-14)


# --------------------------------------------------------------------------------------------------
# Nash-MTL


def test_nash_solves_the_bargaining_equation():
    for seed in range(24):
        t = 2 + seed % 7
        g = rand(t, t + 3 + seed % 5, seed) * torch.rand(t, 1, generator=torch.Generator().manual_seed(seed), dtype=F64) * 10
        if seed % 2:
            g[:, 0] += 3.0  # correlated rows
        q = g @ g.T
        alpha, converged = nash_weights(q)
        assert converged and float(alpha.min()) > 0
        assert float(((q @ alpha) * alpha - 1).abs().max()) <= 1e-9
        # The aggregator solves it on Q / ||Q||_F: alpha' = ||Q||_F^(1/2) alpha, same direction.
        update = NashMTL()(g)
        expected = math.sqrt(float(torch.linalg.matrix_norm(q))) * (g.T @ alpha)
        assert torch.allclose(update, expected, atol=1e-9 * float(expected.norm()), rtol=0)


def test_nash_hand_cases():
    # Orthogonal unit rows: Q = I, alpha = 1; normalised Q' = I / sqrt 2: alpha' = 2^(1/4).
    alpha, _ = nash_weights(ORTHO @ ORTHO.T)
    assert torch.allclose(alpha, torch.ones(2, dtype=F64), atol=1e-14)
    assert torch.allclose(NashMTL()(ORTHO), torch.full((2,), 2**0.25, dtype=F64), atol=1e-14)
    # HAND: Q = [[1, -1], [-1, 2]]: a1 - a2 = 1/a1, -a1 + 2 a2 = 1/a2 give a1^4 - 4 a1^2 + 2 = 0,
    # a1 = sqrt(2 + sqrt 2), a2 = (1 + sqrt 2) / a1; ||Q||_F = sqrt 7.
    a1 = math.sqrt(2 + math.sqrt(2))
    a2 = (1 + math.sqrt(2)) / a1
    alpha, _ = nash_weights(HAND @ HAND.T)
    assert torch.allclose(alpha, torch.tensor([a1, a2], dtype=F64), atol=1e-14)
    raw = torch.tensor([a1 - a2, a2], dtype=F64)  # a1 g1 + a2 g2
    assert torch.allclose(NashMTL()(HAND), 7**0.25 * raw, atol=1e-13)


def test_nash_reuses_weights_between_updates():
    g1, g2 = rand(3, 6, 10), rand(3, 6, 11)
    agg = NashMTL(update_weights_every=2)
    first = agg(g1)
    alpha = agg._alpha.clone()
    assert torch.allclose(agg(g2), alpha @ g2)  # second call: reused
    third = agg(g2)  # recomputed on g2
    assert torch.allclose(third, NashMTL()(g2), atol=1e-12)
    assert torch.allclose(first, NashMTL()(g1), atol=1e-12)


# --------------------------------------------------------------------------------------------------
# All four aggregators


DEGENERATE = {
    "opposite": torch.tensor([[1.0, 2.0, -3.0], [-1.0, -2.0, 3.0]]),
    "zero_row": torch.tensor([[1.0, 2.0, -3.0], [0.0, 0.0, 0.0], [0.5, -1.0, 2.0]]),
    "all_zero": torch.zeros(3, 4),
    "equal": torch.tensor([[1.0, 2.0, -3.0]] * 3),
    "tiny": torch.tensor([[1e-30, 0.0], [0.0, 1e-30]]),
}


@pytest.mark.parametrize("name", sorted(AGGS))
@pytest.mark.parametrize("case", sorted(DEGENERATE))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_degenerate_inputs_shape_dtype_and_no_nan(name, case, dtype):
    matrix = DEGENERATE[case].to(dtype)
    out = AGGS[name]()(matrix)
    assert out.shape == (matrix.shape[1],) and out.dtype == dtype and out.device == matrix.device
    assert bool(torch.isfinite(out).all())
    if case in ("opposite", "all_zero"):
        assert torch.allclose(out, torch.zeros_like(out), atol=1e-6)


def test_degenerate_values():
    opposite, zero_row, equal = DEGENERATE["opposite"].double(), DEGENERATE["zero_row"].double(), DEGENERATE["equal"].double()
    g = equal[0]
    # T identical rows: T g (sum scale), CAGrad the paper's T (1 + c) / (1 + c^2) g.
    for agg in (MGDA(), UPGrad(), NashMTL()):
        assert torch.allclose(agg(equal), 3 * g, atol=1e-12), agg
    assert torch.allclose(CAGrad(c=0.4)(equal), 3 * 1.4 / 1.16 * g, atol=1e-12)
    # A zero row puts zero in the hull: MGDA stops (0); Nash-MTL ignores the zero task.
    assert torch.allclose(MGDA()(zero_row), torch.zeros(3, dtype=F64), atol=1e-14)
    two = zero_row[[0, 1]]
    # Nash-MTL on (g, 0): Q / ||Q||_F = diag(1, 0), alpha_1 = 1 (alpha_2 grows, times a zero row).
    assert torch.allclose(NashMTL()(two), two[0], atol=1e-12)
    # UPGrad of exactly opposite rows and CAGrad (g0 = 0) are zero.
    assert torch.allclose(UPGrad()(opposite), torch.zeros(3, dtype=F64), atol=1e-14)
    assert torch.equal(CAGrad()(opposite), torch.zeros(3, dtype=F64))


@pytest.mark.parametrize("name", sorted(AGGS))
def test_float32_follows_float64(name):
    g = rand(4, 50, 12)
    out32 = AGGS[name]()(g.float())
    out64 = AGGS[name]()(g)
    assert out32.dtype == torch.float32
    assert torch.allclose(out32.double(), out64, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", sorted(AGGS))
def test_deterministic(name):
    g = rand(5, 30, 13)
    a, b = AGGS[name](), AGGS[name]()
    first = a(g)
    assert torch.equal(first, b(g))
    assert torch.equal(first, a(g))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("name", sorted(AGGS))
def test_cuda_inputs_stay_on_their_device(name):
    g = rand(3, 20, 14)
    out = AGGS[name]()(g.float().cuda())
    assert out.device == g.float().cuda().device and out.dtype == torch.float32
    assert torch.allclose(out.cpu().double(), AGGS[name]()(g), atol=1e-5, rtol=1e-5)


def test_registered_under_their_names():
    for name, cls in AGGS.items():
        assert AGGREGATORS.get(name) is cls and METHODS.get(name) is cls
    assert WEIGHTINGS.get("mgda_ub") is MGDAUB and METHODS.get("mgda_ub") is MGDAUB


@pytest.mark.parametrize(
    "cls, kwargs, message",
    [
        (CAGrad, {"c": 1.5}, "Parameter `c` of CAGrad should be in [0, 1). Found `c = 1.5`."),
        (CAGrad, {"c": -0.1}, "Parameter `c` of CAGrad should be in [0, 1). Found `c = -0.1`."),
        (CAGrad, {"c": 1}, "Parameter `c` of CAGrad should be in [0, 1). Found `c = 1.0`."),
        (CAGrad, {"c": "big"}, "Parameter `c` of CAGrad should be in [0, 1). Found `c = 'big'`."),
        (NashMTL, {"max_iter": 0}, "Parameter `max_iter` of Nash-MTL should be an integer >= 1. Found `max_iter = 0`."),
        (NashMTL, {"max_iter": 2.5}, "Parameter `max_iter` of Nash-MTL should be an integer >= 1. Found `max_iter = 2.5`."),
        (NashMTL, {"update_weights_every": 0}, "Parameter `update_weights_every` of Nash-MTL should be an integer >= 1. Found `update_weights_every = 0`."),
        (MGDA, {"normalize": "yes"}, "Parameter `normalize` of MGDA should be true or false. Found `normalize = 'yes'`."),
    ],
)
def test_bad_hyperparameters(cls, kwargs, message):
    with pytest.raises(ConfigError) as info:
        cls(**kwargs)
    assert str(info.value) == message


def test_bad_hyperparameter_of_mgda_ub():
    with pytest.raises(ConfigError) as info:
        MGDAUB(["a", "b"], normalize=1)
    assert str(info.value) == "Parameter `normalize` of MGDA-UB should be true or false. Found `normalize = 1`."


def test_space_sections_and_repr():
    with pytest.raises(ConfigError) as info:
        CAGrad.space({"c": {"low": 0.1, "high": 1.5}}, "search_space.cagrad")
    assert str(info.value) == "search_space.cagrad.c.high: Parameter `c` of CAGrad should be in [0, 1). Found `c = 1.5`."
    space = CAGrad.space({"c": {"low": 0.1, "high": 0.9}}, "search_space.cagrad")
    assert CAGrad.sample(FixedTrial({"cagrad.c": 0.25}), space, ["a", "b"]).c == 0.25
    space = NashMTL.space({"update_weights_every": [1, 5]}, "search_space.nash_mtl")
    assert NashMTL.sample(FixedTrial({"nash_mtl.update_weights_every": 5}), space, ["a", "b"]).update_weights_every == 5
    space = MGDA.space({"normalize": [False, True]}, "search_space.mgda")
    assert MGDA.sample(FixedTrial({"mgda.normalize": True}), space, ["a", "b"]).normalize is True
    assert repr(CAGrad()) == "CAGrad(c=0.4)"
    assert repr(NashMTL()) == "NashMTL(max_iter=20, update_weights_every=1)"
    assert repr(MGDA()) == "MGDA(normalize=False)"
    assert repr(UPGrad()) == "UPGrad()"
    assert "normalize=False" in repr(MGDAUB(["a", "b"]))


# --------------------------------------------------------------------------------------------------
# MGDA-UB


class TwoHeads(nn.Module):
    def __init__(self, same_heads: bool):
        super().__init__()
        torch.manual_seed(0)
        self.trunk = nn.Sequential(nn.Linear(4, 6), nn.Tanh())
        self.heads = nn.ModuleList([nn.Linear(6, 1), nn.Linear(6, 1)])
        if same_heads:
            self.heads[1].load_state_dict(self.heads[0].state_dict())

    def forward(self, x):
        self.shared_feature = self.trunk(x)
        return [h(self.shared_feature) for h in self.heads]


def losses_of(model, same_targets: bool):
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(8, 4, generator=gen)
    y1 = torch.randn(8, 1, generator=gen)
    y2 = y1 if same_targets else torch.randn(8, 1, generator=gen)
    out = model(x)
    return torch.stack([((out[0] - y1) ** 2).mean(), ((out[1] - y2) ** 2).mean()])


def test_mgda_ub_weights_on_a_tiny_model():
    model = TwoHeads(same_heads=False)
    losses = losses_of(model, same_targets=False)
    z = model.shared_feature
    weights = MGDAUB(["a", "b"])(losses, StepContext(shared_feature=z))
    assert weights.shape == (2,) and weights.dtype == losses.dtype and not weights.requires_grad
    assert float(weights.min()) >= 0 and abs(float(weights.sum()) - 2) < 1e-6
    # Same weights as MGDA on the explicit Jacobian w.r.t. Z.
    jac = torch.stack([torch.autograd.grad(losses[t], z, retain_graph=True)[0].reshape(-1) for t in range(2)]).double()
    assert torch.allclose(weights.double(), 2 * MGDA().weights(jac), atol=1e-6)
    # The graph is kept: the trainer can still backpropagate the weighted loss.
    (weights * losses).sum().backward()


def test_mgda_ub_equal_gradients_give_equal_weights_and_fallbacks():
    model = TwoHeads(same_heads=True)
    losses = losses_of(model, same_targets=True)
    weights = MGDAUB(["a", "b"])(losses, StepContext(shared_feature=model.shared_feature))
    assert torch.allclose(weights, torch.ones(2), atol=1e-6)
    assert torch.equal(MGDAUB(["a", "b"])(losses, None), torch.ones(2))
    assert torch.equal(MGDAUB(["a", "b"])(losses, StepContext()), torch.ones(2))
    assert torch.equal(MGDAUB(["a", "b"])(losses.detach(), StepContext(shared_feature=model.shared_feature)), torch.ones(2))
