"""FairGrad: the update that maximises the tasks' alpha-fair utility of their improvements."""

from __future__ import annotations

import math

import torch

from .base import Aggregator, register
from .hyper import check_number
from .pcgrad import combine, gram_float64
from .solvers import _cholesky, _cholesky_solve, min_norm_weights

_F64 = torch.float64
_TINY = torch.finfo(_F64).tiny
#: ``||G^T w*||`` (the min-norm point of the rows' hull) below this fraction of the largest row norm
#: is taken as 0, as in CAGrad: a norm read from the Gram matrix resolves about sqrt(eps) of it.
_ZERO_NORM = 1e-7
#: Below this relative Newton step ``max |Delta / w|``, times ``1 + 1/alpha`` (the relative
#: curvature of ``w^(-1/alpha)``), the full step is taken without line search.
_FULL_STEP = 0.1


def fairgrad_residual(gram: torch.Tensor, alpha: float, w: torch.Tensor) -> float:
    """Componentwise backward error of ``Q w = w^(-1/alpha)``:
    ``max_i |(Q w)_i - w_i^(-1/alpha)| / ((|Q| w)_i + w_i^(-1/alpha))``; 0 exactly at the solution,
    about the unit roundoff at a solution rounded to float64 (``inf`` for a non-positive ``w``)."""
    q = gram.detach().to(device="cpu", dtype=_F64)
    w = w.detach().to(device="cpu", dtype=_F64)
    if not bool((w > 0).all()):
        return math.inf
    return _backward_error(q, 1.0 / alpha, w)


def _backward_error(q: torch.Tensor, inv: float, w: torch.Tensor) -> float:
    rhs = w.pow(-inv)
    return float(((q @ w - rhs).abs() / (q.abs() @ w + rhs)).max())


def fairgrad_weights(
    gram: torch.Tensor, alpha: float, max_iter: int = 100, tol: float = 1e-13
) -> tuple[torch.Tensor, bool]:
    """Solve ``Q w = w^(-1/alpha)`` (elementwise), ``w > 0``, for a PSD ``Q`` (T x T).

    Newton's method on the strictly convex ``phi(w) = 1/2 w^T Q w + sum_i psi(w_i)``, ``psi'(w) =
    -w^(-1/alpha)`` (``psi = -log`` at ``alpha = 1``: Nash-MTL's problem), whose stationarity
    condition is the equation; only phi's derivatives are evaluated. While the relative step
    ``r = max |Delta / w|`` has ``r (1 + 1/alpha) >= 0.1`` its length comes from a line search on
    the directional derivative of ``phi`` (monotone, and free of ``phi``'s rounding), which keeps
    ``w > 0``; below, full steps (quadratic convergence). Runs on Python floats (T is small).

    Args:
        gram: the ``(T, T)`` matrix ``Q``; a solution exists iff zero is not in the convex hull of
            the rows of ``G`` (the caller checks).
        alpha: the fairness parameter, > 0.
        max_iter: the most Newton steps.
        tol: stop when the relative step is below it, or once full steps stop contracting below
            1e-6 (the rounding floor).

    Returns ``(w, converged)``, float64 on the CPU. See docs/weighting.md#fairgrad.
    """
    rows = gram.detach().to(device="cpu", dtype=_F64).tolist()
    t = len(rows)
    q = [[(rows[i][j] + rows[j][i]) / 2 for j in range(t)] for i in range(t)]
    inv = 1.0 / alpha
    # Start: the solution for orthogonal rows, w_i = Q_ii^(-alpha / (alpha + 1)), then the best
    # multiple c w0 along its ray: c = (sum w0^(1 - 1/alpha) / w0^T Q w0)^(alpha / (alpha + 1)).
    diag = [max(q[i][i], 0.0) for i in range(t)]
    top = max(diag, default=0.0)
    if not top > 0:
        return torch.ones(t, dtype=_F64), False
    w = [(d if d > 0 else top) ** (-alpha / (alpha + 1.0)) for d in diag]
    curv = _dot(w, _matvec(q, w))
    if curv > 0:
        c = (sum(_power(v, 1.0 - inv) for v in w) / curv) ** (alpha / (alpha + 1.0))
        w = [c * v for v in w]

    def slope(x: list[float], direction: list[float]) -> float:
        """``d/dt phi(x + t direction)`` at ``t = 0``: increasing in t, as phi is convex."""
        qx = _matvec(q, x)
        return sum((qx[i] - _power(x[i], -inv)) * direction[i] for i in range(t))

    last = math.inf
    for _ in range(max_iter):
        qw = _matvec(q, w)
        grad = [qw[i] - _power(w[i], -inv) for i in range(t)]
        # Jacobi-scaled Cholesky solve of H delta = -grad, H = Q + diag(w^(-1/alpha - 1) / alpha).
        hdiag = [q[i][i] + inv * _power(w[i], -inv - 1.0) for i in range(t)]
        s = [1.0 / math.sqrt(h) for h in hdiag]
        scaled = [[1.0 if i == j else q[i][j] * s[i] * s[j] for j in range(t)] for i in range(t)]
        low = _cholesky(scaled, range(t))
        if low is None:  # not reached in exact arithmetic (H is positive definite); stay safe
            return torch.tensor(w, dtype=_F64), False
        y = _cholesky_solve(low, [-s[i] * grad[i] for i in range(t)])
        delta = [s[i] * y[i] for i in range(t)]
        size = max(abs(d / v) for d, v in zip(delta, w))
        full = [v + d for v, d in zip(w, delta)]
        if size * (1.0 + inv) < _FULL_STEP and min(full) > 0:
            w = full  # quadratic convergence region
            if size < tol or (size < 1e-6 and size > last / 2):
                return torch.tensor(w, dtype=_F64), True
            last = size
            continue
        # Line search on the directional derivative: the full step when phi still descends there,
        # else bisection towards the derivative's root, keeping the left end (where phi has
        # decreased). The derivative tends to +inf at the boundary w_i = 0.
        hi = min([1.0] + [v / -d for v, d in zip(w, delta) if d < 0])
        step = hi
        if hi < 1.0 or slope(full, delta) > 0:
            lo = 0.0
            for _ in range(60):
                mid = (lo + step) / 2
                if slope([v + mid * d for v, d in zip(w, delta)], delta) <= 0:
                    lo = mid
                else:
                    step = mid
                if step - lo <= 1e-3 * step:
                    break
            step = lo
        if step <= 0.0:
            return torch.tensor(w, dtype=_F64), False  # no descent left: rounding level
        w = [max(v + step * d, _TINY) for v, d in zip(w, delta)]
    return torch.tensor(w, dtype=_F64), False


def _power(x: float, e: float) -> float:
    """``x ** e`` for ``x > 0``, capped at ``exp(700)`` instead of raising ``OverflowError``."""
    return math.exp(min(e * math.log(x), 700.0))


def _matvec(a: list[list[float]], x: list[float]) -> list[float]:
    return [sum(r * v for r, v in zip(row, x)) for row in a]


def _dot(x: list[float], y: list[float]) -> float:
    return sum(a * b for a, b in zip(x, y))


def fairgrad_coefficients(gram: torch.Tensor, alpha: float) -> torch.Tensor:
    """Coefficients ``a`` (float64, CPU) of the update ``G^T a``, from the ``(T, T)`` Gram matrix.

    Zero rows get 0 and the equation is solved on the others, on the Gram matrix divided by its
    Frobenius norm; when zero is in the convex hull of the remaining rows (no solution) every
    coefficient is 0. See docs/weighting.md#fairgrad.
    """
    q = gram.detach().to(device="cpu", dtype=_F64)
    q = (q + q.T) / 2
    t = q.shape[0]
    coef = torch.zeros(t, dtype=_F64)
    live = (q.diagonal() > 0).nonzero().squeeze(1)
    if live.numel() == 0:
        return coef
    sub = q[live][:, live]
    sub = sub / float(torch.linalg.matrix_norm(sub))
    if bool((sub < 0).any()):  # without a conflict, w^T Q w >= sum_i w_i^2 Q_ii > 0 on the simplex
        hull = min_norm_weights(sub)
        if float(hull @ sub @ hull) <= _ZERO_NORM**2 * float(sub.diagonal().max()):
            return coef  # Pareto-stationary: no direction improves every remaining task
    w, _ = fairgrad_weights(sub, alpha)
    coef[live] = w
    return coef


@register("fairgrad")
class FairGrad(Aggregator):
    """FairGrad: the update maximising the tasks' alpha-fair utility of their improvements.

    FairGrad (Ban & Ji, ICML 2024, arXiv:2402.15638). The update is ``G^T w`` with
    ``Q w = w^(-1/alpha)`` (``Q = G G^T``), solved on ``Q`` divided by its Frobenius norm by damped
    Newton on a convex potential, to a relative Newton step below 1e-13 (or the rounding floor).
    ``alpha = 1`` is Nash-MTL's bargaining solution, ``alpha -> 0`` tends to the sum, large
    ``alpha`` to equal improvements ``g_t . d``. Zero rows get weight 0; when zero is in the convex
    hull of the other rows (exactly opposite rows...) there is no solution and the update is 0.

    Args:
        alpha: the fairness parameter, in ``(0, 10]`` (default 1.0, proportional fairness;
            searchable). Above 10 the weights span dozens of orders of magnitude and the solver is
            not verified.

    Returns the ``(P,)`` update in the input's dtype. See docs/weighting.md#fairgrad.

    .. note::
        The authors' code solves the raw equation with ``scipy.optimize.least_squares``; dividing
        ``Q`` by its Frobenius norm keeps the paper's direction but makes the update scale like
        ``G`` (T identical rows ``g`` give ``T g``).
    """

    label = "FairGrad"
    searchable = ("alpha",)

    def __init__(self, alpha: float = 1.0):
        self.alpha = check_number(self.label, "alpha", alpha, low=0.0, high=10.0, low_open=True)

    def weights(self, matrix: torch.Tensor) -> torch.Tensor:
        """The ``T`` weights ``w`` (float64, CPU) with ``update = w @ matrix``."""
        return fairgrad_coefficients(gram_float64(matrix)[0], self.alpha)

    def __call__(self, matrix: torch.Tensor) -> torch.Tensor:
        gram, low = gram_float64(matrix)
        return combine(fairgrad_coefficients(gram, self.alpha), matrix, low)
