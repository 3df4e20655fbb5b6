"""CAGrad: conflict-averse gradient descent."""

from __future__ import annotations

import math

import torch

from .base import Aggregator, register
from .hyper import check_number
from .solvers import gram_matrix, min_quadratic_above, project_simplex, simplex_qp

_F64 = torch.float64
# ||g_w*|| below this fraction of the largest row norm is taken as 0: a norm computed from the
# Gram matrix (sqrt(w^T Q w)) resolves only about sqrt(machine epsilon) of the row norms.
_ZERO_NORM = 1e-7


def cagrad_kkt_residual(gram: torch.Tensor, c: float, w: torch.Tensor) -> float:
    """Natural residual ``|| w - proj_simplex(w - grad F(w)) ||_inf`` of CAGrad's dual problem.

    0 exactly at the minimiser; ``inf`` where ``F`` is not differentiable (``G^T w = 0``). See
    docs/weighting.md#cagrad.
    """
    q = gram.detach().to(device="cpu", dtype=_F64)
    top = float(q.diagonal().max())
    w = w.detach().to(device="cpu", dtype=_F64)
    norm = math.sqrt(max(float(w @ q @ w), 0.0) / top) if top > 0 else 0.0
    if norm == 0.0:
        return float("inf")
    q = q / top
    t = q.shape[0]
    b = q.sum(1) / t
    s = c * math.sqrt(max(float(q.sum()), 0.0)) / t
    grad = b + s * (q @ w) / norm
    return float((w - project_simplex(w - grad)).abs().max())


def cagrad_weights(gram: torch.Tensor, c: float) -> tuple[torch.Tensor, float | None]:
    """Solve CAGrad's dual problem ``argmin_{w in simplex} g_w . g0 + c ||g0|| ||g_w||`` exactly.

    Args:
        gram: the ``(T, T)`` Gram matrix ``G G^T``.
        c: the radius factor, in ``[0, 1)``.

    Returns ``(w, ratio)``: the float64 CPU weights and ``ratio = c ||g0|| / ||g_w*||``, so that the
    direction is ``d = g0 + ratio * g_w*``; ``ratio = 0`` when ``c ||g0|| = 0`` and ``None`` when
    ``g_w* = 0`` (see :func:`cagrad_coefficients`). See docs/weighting.md#cagrad.
    """
    q = gram.detach().to(device="cpu", dtype=_F64)
    q = (q + q.T) / 2
    t = q.shape[0]
    uniform = torch.full((t,), 1.0 / t, dtype=_F64)
    top = float(q.diagonal().max())
    if top <= 0:
        return uniform, 0.0
    q = q / top  # the minimiser is scale-free; now max_t ||g_t|| = 1
    b = q.sum(1) / t
    s = c * math.sqrt(max(float(q.sum()), 0.0)) / t
    if s <= 1e-15:
        return uniform, 0.0

    def inner(tau: float) -> tuple[torch.Tensor, float]:
        w = simplex_qp(q * (s / tau), b)
        return w, math.sqrt(max(float(w @ q @ w), 0.0))

    def finish(support: torch.Tensor) -> tuple[torch.Tensor, float] | None:
        k = int(support.sum())
        kkt = torch.zeros(k + 1, k + 1, dtype=_F64)
        kkt[:k, :k] = q[support][:, support]
        kkt[:k, k] = 1.0
        kkt[k, :k] = 1.0
        rhs = torch.zeros(k + 1, 2, dtype=_F64)
        rhs[k, 0] = 1.0  # w0: Q w0 = nu0 1, sum = 1
        rhs[:k, 1] = -b[support]  # w1: Q w1 = nu1 1 - b, sum = 0
        sol = torch.linalg.lstsq(kkt, rhs, rcond=1e-13, driver="gelsd").solution[:k]
        w0, w1 = sol[:, 0], sol[:, 1]
        qs = q[support][:, support]
        a0, a1, a2 = float(w0 @ qs @ w0), float(w0 @ qs @ w1), float(w1 @ qs @ w1)
        # tau^2 = a0 + 2 (tau/s) a1 + (tau/s)^2 a2  <=>  (1 - a2/s^2) tau^2 - 2 (a1/s) tau - a0 = 0
        qa, qb, qc = 1.0 - a2 / s**2, -2.0 * a1 / s, -a0
        disc = qb * qb - 4 * qa * qc
        if qa <= 0 or disc < 0:
            return None
        tau = (-qb + math.sqrt(disc)) / (2 * qa)
        if not tau > 0:
            return None
        ws = w0 + (tau / s) * w1
        if float(ws.min()) < -1e-12:
            return None
        w = torch.zeros(t, dtype=_F64)
        w[support] = ws.clamp(min=0.0)
        w /= w.sum()
        norm = math.sqrt(max(float(w @ q @ w), 0.0))
        if norm <= _ZERO_NORM or cagrad_kkt_residual(q, c, w) > 1e-12:
            return None
        return w, norm

    lo, hi = 0.0, 1.0
    tau = 0.5
    best: tuple[torch.Tensor, float] | None = None
    for _ in range(200):
        w, norm = inner(tau)
        best = (w, norm)
        found = finish(w > 1e-14)
        if found is not None:
            return found[0], s / found[1]
        if norm > tau:
            lo = tau  # h'(tau) < 0: the root is larger
        else:
            hi = tau
        if hi - lo <= 1e-15 * hi or hi <= _ZERO_NORM:
            break
        tau = hi / 8 if lo == 0.0 else (lo + hi) / 2  # geometric while the root may be at 0
    assert best is not None  # the loop runs at least once
    w, norm = best
    if norm <= _ZERO_NORM or hi <= _ZERO_NORM:
        return w, None
    return w, s / norm


def cagrad_coefficients(gram: torch.Tensor, c: float) -> torch.Tensor:
    """Coefficients ``a`` (float64, CPU) of the sum-scale CAGrad update ``G^T a = T d / (1 + c^2)``.

    When ``g_w* = 0``, ``d`` is the projection of ``g0`` onto the dual cone of the rows. See
    docs/weighting.md#cagrad.
    """
    q = gram.detach().to(device="cpu", dtype=_F64)
    t = q.shape[0]
    w, ratio = cagrad_weights(q, c)
    if ratio is None:
        v = min_quadratic_above(q, torch.full((t,), 1.0 / t, dtype=_F64))
        return t * v / (1.0 + c * c)
    return (1.0 + t * ratio * w) / (1.0 + c * c)


@register("cagrad")
class CAGrad(Aggregator):
    """CAGrad: the update in a ball around the mean gradient that helps the worst task most.

    CAGrad (Liu et al., 2021, arXiv:2110.14048). The dual is solved exactly on the Gram matrix and
    the update is ``T d / (1 + c^2)``, with ``d`` the paper's direction; it never is NaN.

    Args:
        c: the ball's radius relative to ``||g0||``, in ``[0, 1)`` (default 0.4, the paper's
            choice for most benchmarks; searchable).

    Returns the ``(P,)`` update in the input's dtype. See docs/weighting.md#cagrad.

    .. note::
        The paper's update is mean-scale; here it is multiplied by T (``c = 0`` gives the sum of
        the task gradients). The paper's factor ``(1 + c) / (1 + c^2)`` on identical rows is kept.
    """

    label = "CAGrad"
    searchable = ("c",)

    def __init__(self, c: float = 0.4):
        self.c = check_number(self.label, "c", c, low=0.0, high=1.0, high_open=True)

    def __call__(self, matrix: torch.Tensor) -> torch.Tensor:
        coef = cagrad_coefficients(gram_matrix(matrix), self.c)
        return coef.to(device=matrix.device, dtype=matrix.dtype) @ matrix
