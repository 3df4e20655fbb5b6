"""Small exact quadratic programs on a T x T Gram matrix, in plain ``torch``.

The min-norm family of aggregators (MGDA, MGDA-UB, CAGrad, UPGrad) reduce to convex quadratic
programs in the *task* space: with ``G`` the ``(T, P)`` matrix of task gradients and
``Q = G G^T`` its Gram matrix, every quantity they need is a function of ``Q`` and of a weight
vector of length T (T is small, at most a few tens). This module solves those programs exactly
up to rounding, with no external solver:

* :func:`simplex_qp`: ``min_w 1/2 w^T A w + b^T w`` over the probability simplex
  ``{w >= 0, sum(w) = 1}``; with ``b = 0`` and ``A = Q`` it is the min-norm point of the convex
  hull of the rows (:func:`min_norm_weights`, Desideri 2012; Sener & Koltun 2018).
* :func:`nonneg_qp`: ``min_z 1/2 z^T A z + b^T z`` over ``z >= 0``; with ``z = v - l`` and
  ``b = A l`` it is ``min_{v >= l} v^T Q v`` (:func:`min_quadratic_above`), the dual of the
  projection onto the dual cone of the rows used by UPGrad (Quinton & Rey 2024).

Both use the same **primal active-set method** (Nocedal & Wright, *Numerical Optimization*,
2nd ed., Algorithm 16.3), which is exact on these problems: it keeps a working set ``W`` of
coordinates held at zero, and repeatedly

1. solves the equality-constrained problem on the free set ``F`` (a linear KKT system:
   ``A_FF p_F + nu 1 = -g_F, 1^T p_F = 0`` on the simplex, ``A_FF p_F = -g_F`` for ``z >= 0``,
   with ``g = A x + b``), by an SVD least-squares solve, so that singular Gram matrices (equal,
   opposite or zero rows) give the minimum-norm step instead of a failure; when the system is
   inconsistent (the quadratic is unbounded on that face, only possible for a linear term outside
   the range of ``A``), the least-squares residual gives a zero-curvature descent ray instead;
2. moves along ``p`` as far as feasibility allows (ratio test); a blocking coordinate joins ``W``;
3. at a minimiser over ``F``, reads the multipliers of the bounds (``lambda_i = g_i - nu`` on the
   simplex, ``lambda_i = g_i`` for ``z >= 0``); if all are ``>= -tol`` the point satisfies the
   KKT conditions and is optimal (the problems are convex), else the most negative one leaves
   ``W``.

The objective decreases strictly at every non-zero step and a released coordinate always moves
into the interior (its multiplier was negative), so the method ends after finitely many steps,
each a ``(T+1) x (T+1)`` solve. Everything runs in float64 on the CPU. The variables are first
rescaled so that the quadratic has a unit diagonal (Jacobi scaling ``x_i = y_i sqrt(m / A_ii)``,
``m = max A_ii``; the simplex becomes ``{y >= 0, d . y = 1}``) and the objective is divided by
its largest coefficient; the minimiser does not change, tolerances become relative, and rows of
very different norms (task gradients 1e-8 times smaller than others) are resolved as well as
equal ones. A final solve on the optimal support polishes the result.

Accuracy: the natural KKT residual (:func:`simplex_kkt_residual`, :func:`nonneg_kkt_residual`,
``|| x - proj(x - grad f(x)) ||_inf`` on the normalised problem; zero exactly at a minimiser)
is about 1e-15 on random, rank-deficient, equal/opposite-row and 1e-8-scaled-row instances
(T = 2..20), and stays below 1e-10 when two rows differ by only 1e-10 relative (the solves then
treat them as equal); the points ``G^T w`` agree with exhaustive enumeration of the supports to
1e-12 (tests: ``tests/test_aggregators_minnorm.py``).

When the minimiser is not unique (``Q`` singular, e.g. equal rows) the solution returned is the
one reached by minimum-norm steps (in the rescaled variables) from the start point: the
barycentre ``1/T`` for the simplex (so T equal rows get equal weights) and ``z = 0`` for
``z >= 0``. The quantities the aggregators use (``G^T w``) are unique.
"""

from __future__ import annotations

import torch

_F64 = torch.float64
_RCOND = 1e-13  # relative singular-value cut-off of the least-squares solves
_TOL = 1e-13  # multiplier / step tolerance, relative to the normalised problem


def _matrix(quad: torch.Tensor) -> torch.Tensor:
    q = torch.as_tensor(quad).detach().to(device="cpu", dtype=_F64)
    if q.dim() != 2 or q.shape[0] != q.shape[1]:
        raise ValueError(f"expected a square matrix, found shape {tuple(q.shape)}")
    return (q + q.T) / 2


def _vector(vec: torch.Tensor | None, n: int) -> torch.Tensor:
    if vec is None:
        return torch.zeros(n, dtype=_F64)
    v = torch.as_tensor(vec).detach().to(device="cpu", dtype=_F64).reshape(-1)
    if v.numel() != n:
        raise ValueError(f"expected a vector of length {n}, found {v.numel()}")
    return v


def _lstsq(matrix: torch.Tensor, rhs: torch.Tensor) -> torch.Tensor:
    """Minimum-norm least-squares solution (SVD based, so rank-deficient systems are fine)."""
    return torch.linalg.lstsq(matrix, rhs.unsqueeze(1), rcond=_RCOND, driver="gelsd").solution.squeeze(1)


def _free_step(quad: torch.Tensor, grad: torch.Tensor, free: torch.Tensor, border: torch.Tensor | None, size: float) -> tuple[torch.Tensor, bool]:
    """The step ``p_F`` to the minimiser of the quadratic over the free coordinates (keeping
    ``border . x`` fixed when ``border`` is given), and whether it is a *ray* instead: when that
    minimum does not exist (the KKT system is inconsistent: a linear term outside the range of
    ``quad``), the least-squares residual ``r`` lies in the null space of the symmetric KKT
    matrix, so its ``p`` part has zero curvature and ``grad . r_p = -||r||^2 < 0``: a descent
    ray, followed until a bound blocks it."""
    sub = quad[free][:, free]
    k = sub.shape[0]
    if border is not None:
        a = border[free]
        a = a / a.max()  # balance the border with the unit-diagonal block
        kkt = torch.zeros(k + 1, k + 1, dtype=_F64)
        kkt[:k, :k] = sub
        kkt[:k, k] = a
        kkt[k, :k] = a
        rhs = torch.cat([-grad[free], torch.zeros(1, dtype=_F64)])
    else:
        kkt, rhs = sub, -grad[free]
    sol = _lstsq(kkt, rhs)
    resid = rhs - kkt @ sol
    # ``size`` (the largest |x_i|) scales the rounding error of ``grad`` (``quad`` is normalised).
    if float(resid.norm()) > 1e-9 * max(1.0, float(rhs.norm()), size):
        return resid[:k], True
    return sol[:k], False


def _active_set(quad: torch.Tensor, lin: torch.Tensor, simplex: bool, max_iter: int | None,
                hint: torch.Tensor | None = None, bounded: bool = True) -> torch.Tensor:
    """The active-set loop (module docstring). ``bounded``: the problem is known to be bounded
    below, so a ray that no bound blocks can only come from rounding and ends the moves on that
    face instead of raising."""
    n = quad.shape[0]
    if n == 0:
        return torch.zeros(0, dtype=_F64)
    # Jacobi scaling x = D y, D = diag(sqrt(m / A_ii)) (m = max_i A_ii; 1 where A_ii = 0), and the
    # objective divided by m: the quadratic in y has a unit diagonal, so rows of very different
    # norms are resolved alike; the simplex becomes {y >= 0, d . y = 1}.
    diag = quad.diagonal().clamp(min=0.0)
    top = float(diag.max())
    d = torch.where(diag > 0, (top / diag).sqrt(), torch.ones_like(diag)) if top > 0 else torch.ones_like(diag)
    quad = quad * d[:, None] * d[None, :]
    lin = lin * d
    # Divide by the quadratic's scale only (a dominant linear term must not make the quadratic
    # block look singular to the least-squares solves).
    scale = float(quad.abs().max()) or float(lin.abs().max())
    border = d if simplex else None
    if simplex:
        y = torch.full((n,), 1.0 / n, dtype=_F64) / d
        free = torch.ones(n, dtype=torch.bool)
        at_min = n == 1
    else:
        y = torch.zeros(n, dtype=_F64)
        # A guess of the optimal free set (``hint``) only changes the first step: from y = 0
        # towards the minimiser over that set, as far as feasibility allows.
        free = torch.zeros(n, dtype=torch.bool) if hint is None else hint.detach().to("cpu", torch.bool).reshape(n).clone()
        at_min = not bool(free.any())
    if scale == 0.0:
        return y * d  # every feasible point is optimal
    quad, lin = quad / scale, lin / scale
    limit = max_iter if max_iter is not None else 50 + 20 * n
    for _ in range(limit):
        grad = quad @ y + lin
        if not at_min:
            idx = free.nonzero().squeeze(1)
            p, ray = _free_step(quad, grad, free, border, float(y.abs().max()))
            # Ratio test; components that are negative only by rounding are ignored (clamped below).
            cut = -_TOL * max(1.0, float(p.abs().max()))
            neg = p < cut
            alpha, block = 1.0, None
            if bool(neg.any()):
                ratios = y[idx][neg] / -p[neg]
                j = int(torch.argmin(ratios))
                if ray or float(ratios[j]) < 1.0:
                    alpha, block = float(ratios[j]), int(idx[neg][j])
            elif ray:
                if not bounded:
                    raise ValueError("the quadratic program is unbounded below")
                at_min = True
                continue
            y[idx] = y[idx] + alpha * p
            y.clamp_(min=0.0)
            if block is None:
                at_min = True
            else:
                y[block] = 0.0
                free[block] = False
                at_min = not bool(free.any())
            if simplex:
                y /= d @ y
            continue
        held = ~free
        if not bool(held.any()):
            break
        if simplex:  # at a minimiser over F: grad_F = -nu d_F
            nu = -float(grad[free] @ d[free]) / float(d[free] @ d[free])
            mult = grad + nu * d
        else:
            mult = grad
        mult = torch.where(held, mult, torch.full_like(mult, float("inf")))
        j = int(torch.argmin(mult))
        if float(mult[j]) >= -_TOL * max(1.0, float(y.abs().max()), float(lin.abs().max())):
            break
        free[j] = True
        at_min = False
    # Polish: one more exact solve on the final support, kept when it stays feasible.
    if bool(free.any()):
        idx = free.nonzero().squeeze(1)
        p, ray = _free_step(quad, quad @ y + lin, free, border, float(y.abs().max()))
        if not ray and bool((y[idx] + p >= 0).all()):
            y[idx] = y[idx] + p
    x = y * d
    if simplex:
        x /= x.sum()
    return x


def simplex_qp(quad: torch.Tensor, linear: torch.Tensor | None = None, max_iter: int | None = None) -> torch.Tensor:
    """``argmin_{w >= 0, sum(w) = 1} 1/2 w^T quad w + linear^T w`` for a symmetric PSD ``quad``.

    Returns a float64 CPU vector. Ties (singular ``quad``) are broken as described in the module
    docstring (minimum-norm steps from the barycentre).
    """
    q = _matrix(quad)
    return _active_set(q, _vector(linear, q.shape[0]), simplex=True, max_iter=max_iter)


def nonneg_qp(quad: torch.Tensor, linear: torch.Tensor, max_iter: int | None = None,
              hint: torch.Tensor | None = None, bounded: bool = False) -> torch.Tensor:
    """``argmin_{z >= 0} 1/2 z^T quad z + linear^T z`` for a symmetric PSD ``quad``.

    The problem must be bounded below (true when ``quad`` is positive definite, or when
    ``linear`` lies in the range of ``quad``, as in :func:`min_quadratic_above`); otherwise a
    ``ValueError`` is raised, unless ``bounded`` says it is bounded (then an unblocked descent
    ray is taken for rounding noise and ignored). ``hint`` (a boolean mask, optional) guesses the coordinates that
    are positive at the optimum: a good guess saves iterations, a bad one costs a few; the result
    is optimal either way. Returns a float64 CPU vector.
    """
    q = _matrix(quad)
    return _active_set(q, _vector(linear, q.shape[0]), simplex=False, max_iter=max_iter, hint=hint, bounded=bounded)


def min_norm_weights(gram: torch.Tensor) -> torch.Tensor:
    """Weights ``w*`` of the min-norm point of the convex hull of the rows of ``G``:
    ``w* = argmin_{w in simplex} w^T Q w`` with ``Q = G G^T`` (the point is ``G^T w*``)."""
    return simplex_qp(gram)


def min_quadratic_above(gram: torch.Tensor, lower: torch.Tensor, hint: torch.Tensor | None = None) -> torch.Tensor:
    """``argmin_{v >= lower} v^T Q v``, solved as :func:`nonneg_qp` in ``z = v - lower``
    (``(l + z)^T Q (l + z) = z^T Q z + 2 (Q l)^T z + const``, bounded below since ``Q l`` is in
    the range of ``Q``). ``hint`` as in :func:`nonneg_qp`."""
    q = _matrix(gram)
    low = _vector(lower, q.shape[0])
    return low + nonneg_qp(q, q @ low, hint=hint, bounded=True)


def project_simplex(y: torch.Tensor) -> torch.Tensor:
    """Euclidean projection onto the probability simplex (sort-based; Held, Wolfe & Crowder
    1974, Michelot 1986): ``max(y - theta, 0)`` with ``theta`` chosen so the result sums to 1."""
    u, _ = torch.sort(y, descending=True)
    css = torch.cumsum(u, 0) - 1.0
    k = torch.arange(1, y.numel() + 1, dtype=y.dtype)
    rho = int((u - css / k > 0).nonzero().max())
    return (y - css[rho] / (rho + 1)).clamp(min=0.0)


def _normalised(quad: torch.Tensor, linear: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    q = _matrix(quad)
    b = _vector(linear, q.shape[0])
    scale = max(float(q.abs().max()), float(b.abs().max()))
    return (q / scale, b / scale) if scale > 0 else (q, b)


def simplex_kkt_residual(quad: torch.Tensor, linear: torch.Tensor | None, w: torch.Tensor) -> float:
    """Natural residual ``|| w - proj_simplex(w - grad) ||_inf`` of :func:`simplex_qp` (on the
    problem divided by its largest coefficient); 0 exactly at a minimiser."""
    q, b = _normalised(quad, linear)
    w = _vector(w, q.shape[0])
    return float((w - project_simplex(w - (q @ w + b))).abs().max())


def nonneg_kkt_residual(quad: torch.Tensor, linear: torch.Tensor, z: torch.Tensor) -> float:
    """Natural residual ``|| min(z, grad) ||_inf`` of :func:`nonneg_qp` (normalised problem);
    0 exactly at a minimiser."""
    q, b = _normalised(quad, linear)
    z = _vector(z, q.shape[0])
    return float(torch.minimum(z, q @ z + b).abs().max())
