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
    r"""Solve ``Q alpha = 1 / alpha`` (elementwise), ``alpha > 0``, for a PSD ``Q`` (T x T).

    The equation is the stationarity condition of the strictly convex, self-concordant function
    ``phi(alpha) = 1/2 alpha^T Q alpha - sum_t log alpha_t`` on ``alpha > 0``, which is minimised
    by **damped Newton** (Nesterov & Nemirovski; Boyd & Vandenberghe, *Convex Optimization*,
    9.6): step ``Delta = -H^{-1} grad`` with ``H = Q + diag(1 / alpha^2)`` (positive definite),
    Newton decrement ``lambda = sqrt(-grad . Delta)``, step size ``1 / (1 + lambda)`` while
    ``lambda >= 1/4`` and full steps after that (quadratic convergence). Every iterate stays
    positive: the step has local norm < 1, which bounds ``|Delta_t| / alpha_t`` below 1.
    The start (``init``, else ``1 / ||g_t||``, the solution for orthogonal rows) is first rescaled along its ray to the best multiple,
    ``alpha <- alpha sqrt(T / alpha^T Q alpha)``. It stops when ``lambda < tol``
    (``phi - phi* ~ lambda^2 / 2``) or after ``max_iter`` Newton steps.

    A solution exists iff zero is not in the convex hull of the rows of ``G`` (``Q = G G^T``);
    otherwise (a zero row, exactly opposite rows...) ``phi`` is unbounded below along some
    ``d >= 0`` with ``Q d = 0`` and the iterates grow along ``d``: the iteration then ends at
    ``max_iter`` (or when ``alpha`` grew 1e12-fold) with a finite, positive ``alpha`` whose
    growing part has ``G^T d = 0``, and returns ``converged = False``.

    Returns ``(alpha, converged)``, float64 on the CPU.
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
    r"""Nash-MTL of Navon, Shamsian, Achituve, Maron, Kawaguchi, Chechik & Fetaya, "Multi-Task
    Learning as a Bargaining Game", ICML 2022 (arXiv:2202.01017).

    The update ``d = G^T alpha`` is the Nash bargaining solution of the tasks, characterised by
    ``g_t . d = 1 / alpha_t`` for every t, i.e. (the paper's equation, with ``Q = G G^T``)::

        Q alpha = 1 / alpha,  alpha > 0

    The paper solves it by a sequence of convex approximations with cvxpy; here it is solved by
    damped Newton on the equivalent convex problem (:func:`nash_weights`), to a Newton decrement
    below 1e-11 (about 1e-13 relative residual of the equation) when a solution exists.

    **Scale**: the solution of the raw equation is scale-free (``G -> s G`` gives the same
    ``d``). As in the authors' code, the Gram matrix is divided by its Frobenius norm first, so
    ``Q' alpha = 1/alpha`` with ``Q' = Q / ||Q||_F`` and the update ``d = G^T alpha`` has norm
    ``sqrt(T ||Q||_F)``: T identical rows ``g`` give exactly ``T g``, the scale of equal weighting
    (the sum). ``Q`` is formed in the input's dtype on its device
    (:func:`~mtlsearch.weighting.solvers.gram_matrix`; float64 for degenerate float32 inputs),
    ``alpha`` is solved for in float64 on the CPU and applied in the input's dtype. The authors'
    optional clipping of the update norm (``max_norm``) is not applied.

    Hyperparameters (searchable): ``max_iter`` (integer >= 1, default 20): Newton steps per
    solve (the paper's default number of iterations of its own solver); ``update_weights_every``
    (integer >= 1, default 1): ``alpha`` is recomputed on every k-th call and reused (applied to
    the new matrix) in between, as in the paper's speed-up. State: the step count, the last
    ``alpha``, and the last *converged* ``alpha`` (the warm start of the next solve).

    Fallbacks (no NaN): an all-zero matrix gives zero (``alpha = 1``). When zero is in the convex
    hull of the rows (zero or exactly opposite rows, where no solution exists), the last Newton
    iterate is used; it is finite and positive and its growing part is cancelled by ``G`` (e.g.
    ``g`` and ``-g`` give 0, ``g`` and ``0`` give a multiple of ``g``).
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
