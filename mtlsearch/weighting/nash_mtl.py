"""Nash-MTL: the Nash bargaining solution of the tasks' gradients."""

from __future__ import annotations

import math

import torch

from .base import Aggregator, register
from .hyper import check_number
from .solvers import gram_matrix

_F64 = torch.float64


def nash_weights(
    gram: torch.Tensor, max_iter: int = 20, init: torch.Tensor | None = None, tol: float = 1e-11
) -> tuple[torch.Tensor, bool]:
    """Solve ``Q alpha = 1 / alpha`` (elementwise), ``alpha > 0``, for a PSD ``Q`` (T x T).

    Damped Newton on ``1/2 alpha^T Q alpha - sum_t log alpha_t`` (Boyd & Vandenberghe, *Convex
    Optimization*, 9.6).

    Args:
        gram: the ``(T, T)`` matrix ``Q``.
        max_iter: the most Newton steps.
        init: a warm start (used when positive, finite and of length T), else ``1 / ||g_t||``.
        tol: stop when the Newton decrement is below it.

    Returns ``(alpha, converged)``, float64 on the CPU; ``converged`` is false when no solution
    exists (zero in the convex hull of the rows). See docs/weighting.md#nash-mtl.
    """
    q = gram.detach().to(device="cpu", dtype=_F64)
    q = (q + q.T) / 2
    t = q.shape[0]
    alpha = None if init is None else init.detach().to(device="cpu", dtype=_F64).clone()
    if alpha is None or alpha.shape != (t,) or not bool((alpha > 0).all()) or not bool(torch.isfinite(alpha).all()):
        # the solution when the rows are orthogonal (zero rows get the largest norm's value)
        diag = q.diagonal().clamp(min=0)
        top = float(diag.max()) if t else 0.0
        alpha = (
            1.0 / torch.where(diag > 0, diag, torch.full_like(diag, top)).sqrt()
            if top > 0
            else torch.ones(t, dtype=_F64)
        )
    curv = float(alpha @ q @ alpha)
    if curv > 0:
        alpha = alpha * math.sqrt(t / curv)
    start = float(alpha.max())
    eye = torch.eye(t, dtype=_F64)
    for _ in range(max_iter):
        grad = q @ alpha - 1.0 / alpha
        hess = q + torch.diag(1.0 / alpha**2)
        chol, info = torch.linalg.cholesky_ex(hess)
        if int(info) == 0:
            delta = -torch.cholesky_solve(grad.unsqueeze(1), chol).squeeze(1)
        else:  # not reached in exact arithmetic (H is positive definite); stay safe
            delta = -torch.linalg.lstsq(
                hess + 1e-15 * float(hess.diagonal().max()) * eye, grad.unsqueeze(1), driver="gelsd"
            ).solution.squeeze(1)
        lam = math.sqrt(max(-float(grad @ delta), 0.0))
        if lam < tol:
            return alpha + delta if bool((alpha + delta > 0).all()) else alpha, True
        step = 1.0 if lam < 0.25 else 1.0 / (1.0 + lam)
        new = alpha + step * delta
        if not bool((new > 0).all()):  # rounding only
            new = torch.maximum(new, alpha / 2)
        alpha = new
        if float(alpha.max()) > 1e12 * start:
            break
    return alpha, False


@register("nash_mtl")
class NashMTL(Aggregator):
    """Nash-MTL: the Nash bargaining solution ``Q alpha = 1 / alpha`` of the tasks.

    Nash-MTL (Navon et al., 2022, arXiv:2202.01017). ``alpha`` is solved by damped Newton on the
    Gram matrix divided by its Frobenius norm (as in the authors' code), so T identical rows ``g``
    give ``T g``; the update is ``G^T alpha``. An all-zero matrix gives 0; without a solution the
    last finite Newton iterate is used.

    Args:
        max_iter: Newton steps per solve, an integer >= 1 (default 20; searchable).
        update_weights_every: recompute ``alpha`` on every k-th call and reuse it in between, an
            integer >= 1 (default 1; searchable).

    Returns the ``(P,)`` update in the input's dtype. See docs/weighting.md#nash-mtl.

    .. note::
        The paper solves with cvxpy and may clip the update norm (``max_norm``); here the
        equation is solved by Newton to a decrement below 1e-11 and no clipping is applied.
    """

    label = "Nash-MTL"
    searchable = ("max_iter", "update_weights_every")

    def __init__(self, max_iter: int = 20, update_weights_every: int = 1):
        self.max_iter = check_number(self.label, "max_iter", max_iter, low=1, integer=True)
        self.update_weights_every = check_number(
            self.label, "update_weights_every", update_weights_every, low=1, integer=True
        )
        self._step = 0
        self._alpha: torch.Tensor | None = None
        self._warm: torch.Tensor | None = None
        self.converged = False

    def weights(self, matrix: torch.Tensor) -> torch.Tensor:
        """Solve for ``alpha`` on ``matrix`` (updates the warm start); float64 on the CPU."""
        gram = gram_matrix(matrix)
        fro = float(torch.linalg.matrix_norm(gram))
        if not fro > 0:
            self.converged = False
            return torch.ones(matrix.shape[0], dtype=_F64)
        alpha, self.converged = nash_weights(gram / fro, self.max_iter, self._warm)
        if self.converged:
            self._warm = alpha
        return alpha

    def __call__(self, matrix: torch.Tensor) -> torch.Tensor:
        if self._alpha is None or self._alpha.numel() != matrix.shape[0] or self._step % self.update_weights_every == 0:
            self._alpha = self.weights(matrix)
        self._step += 1
        return self._alpha.to(device=matrix.device, dtype=matrix.dtype) @ matrix
