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
    """Natural residual ``|| w - proj_simplex(w - grad F(w)) ||_inf`` of CAGrad's dual problem
    ``F(w) = w^T b + s ||G^T w||`` (``b = Q 1 / T``, ``s = c ||g0||``) on the Gram matrix scaled
    to unit largest diagonal; 0 exactly at the minimiser. ``inf`` where ``F`` is not
    differentiable (``G^T w = 0``)."""
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
    r"""Solve CAGrad's dual problem exactly on the Gram matrix ``Q = G G^T``.

    ``w* = argmin_{w in simplex} F(w)``, ``F(w) = g_w . g0 + s ||g_w||`` with ``g_w = G^T w``,
    ``g0 = G^T 1 / T``, ``s = c ||g0||``; in Gram terms ``F(w) = w^T b + s sqrt(w^T Q w)``,
    ``b = Q 1 / T``.

    Method (exact to rounding, no step sizes): the variational form of the norm,
    ``||x|| = min_{tau > 0} ||x||^2 / (2 tau) + tau / 2``, turns the problem into
    ``min_tau h(tau)`` with ``h(tau) = min_{w in simplex} [w^T b + s w^T Q w / (2 tau)] + s tau / 2``,
    a convex function of tau whose inner problem is a simplex QP solved exactly
    (:func:`~mtlsearch.weighting.solvers.simplex_qp`) and whose derivative is
    ``h'(tau) = s/2 (1 - ||g_w(tau)||^2 / tau^2)`` (envelope theorem). The root ``tau* = ||g_w*||``
    is bracketed in ``(0, max_t ||g_t||]`` and found by safeguarded bisection; at every iterate
    the support of ``w(tau)`` is tried for a closed-form finish: on a fixed support the KKT
    conditions ``b + s Q w / tau = mu 1`` give ``w = w0 + (tau / s) w1`` (two linear solves) and
    ``tau^2 = w^T Q w`` a quadratic equation in tau; the candidate is accepted when it is feasible
    and its KKT residual (:func:`cagrad_kkt_residual`) is below 1e-12.

    Returns ``(w, ratio)`` with ``ratio = s / ||g_w*||`` so that the CAGrad direction is
    ``d = g0 + ratio * g_w*``; ``ratio = 0`` when ``s = 0`` (``c = 0`` or ``g0 = 0``: the ball is
    the point ``g0``), and ``ratio = None`` when the optimum has ``g_w* = 0`` (below
    ``1e-7 max_t ||g_t||``; zero is then in the hull and the dual optimum is 0), where the
    formula for ``d`` is undefined: see :func:`cagrad_coefficients`.
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
    best = None
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
    w, norm = best
    if norm <= _ZERO_NORM or hi <= _ZERO_NORM:
        return w, None
    return w, s / norm


def cagrad_coefficients(gram: torch.Tensor, c: float) -> torch.Tensor:
    r"""Coefficients ``a`` (float64, CPU) of the sum-scale CAGrad update ``G^T a = T d / (1 + c^2)``.

    Regular case: ``a = (1 + T * ratio * w*) / (1 + c^2)`` from :func:`cagrad_weights`.
    When ``g_w* = 0`` the dual optimum is 0, so by strong duality the ball meets the dual cone
    ``C* = {x : G x >= 0}``; its primal solutions are the ``d`` in that intersection, and the one
    used is the point of ``C*`` nearest to ``g0``: ``d = G^T v``, ``v = argmin_{v >= 1/T} v^T Q v``
    (the projection of ``g0`` onto ``C*``, solved exactly as in UPGrad).
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
    r"""CAGrad of Liu, Liu, Jin, Stone & Liu, "Conflict-Averse Gradient Descent for Multi-task
    Learning", NeurIPS 2021 (arXiv:2110.14048).

    With ``g0 = (1/T) sum_t g_t`` the average gradient, CAGrad looks for the update ``d`` in the
    ball ``||d - g0|| <= c ||g0||`` that maximises the worst task improvement ``min_t g_t . d``.
    Its dual, with ``phi = c^2 ||g0||^2`` and ``g_w = sum_t w_t g_t``::

        w* = argmin_{w in simplex} g_w . g0 + sqrt(phi) ||g_w||
        d  = g0 + sqrt(phi) / ||g_w*|| * g_w*

    and the paper (its Algorithm 1 and code, ``rescale = 1``) steps along ``d / (1 + c^2)``.
    ``w*`` is solved exactly (to rounding) by :func:`cagrad_weights`, not by a generic solver
    stopped at ~1e-2 as in torchjd, which also leaves out the ``1 / (1 + c^2)`` rescaling.

    **Scale**: the paper's update is mean-scale (``c = 0`` gives ``g0``, the mean); it is
    multiplied by T, so the update is ``T d / (1 + c^2)``: ``c = 0`` gives the *sum* of the task
    gradients, like equal weighting. For T identical rows ``g`` the paper's math gives
    ``d = (1 + c) g``, so the update is ``T (1 + c) / (1 + c^2) g``, not ``T g`` (equal only at
    ``c = 0``); this factor is the paper's and is kept.

    ``c`` in ``[0, 1)`` (default 0.4, the paper's choice for most benchmarks) is searchable.
    Degenerate cases (no NaN): ``g0 = 0`` (e.g. exactly opposite rows, all-zero matrix) gives 0
    (the ball is the point 0). When the optimum has ``g_w* = 0`` (zero in the hull, e.g. a zero
    row or two opposite rows among others, and the ball reaches directions that conflict with no
    task), the formula's ``g_w / ||g_w||`` is undefined; ``d`` is then the projection of ``g0``
    onto the dual cone of the rows, a solution of the paper's primal problem
    (:func:`cagrad_coefficients`). ``||g_w*||`` below ``1e-7 max_t ||g_t||`` counts as zero: a
    norm computed from the Gram matrix cannot resolve less.

    **Precision**: the Gram matrix is formed in the input's dtype on its device
    (:func:`~mtlsearch.weighting.solvers.gram_matrix`; float64 for degenerate float32 inputs),
    the dual problem is solved in float64 on the CPU, and the coefficients are applied in the
    input's dtype.
    """

    label = "CAGrad"
    searchable = ("c",)

    def __init__(self, c: float = 0.4):
        self.c = check_number(self.label, "c", c, low=0.0, high=1.0, high_open=True)

    def __call__(self, matrix: torch.Tensor) -> torch.Tensor:
        coef = cagrad_coefficients(gram_matrix(matrix), self.c)
        return coef.to(device=matrix.device, dtype=matrix.dtype) @ matrix
