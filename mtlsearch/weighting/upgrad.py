"""UPGrad: every task gradient projected onto the dual cone of all of them, then summed."""

from __future__ import annotations

import torch

from .base import Aggregator, register
from .solvers import min_quadratic_above


def upgrad_weights(gram: torch.Tensor) -> torch.Tensor:
    """Coefficients ``a`` (float64, CPU) with ``update = G^T a = sum_i proj(g_i)``: the sum over i
    of ``v_i = argmin_{v >= e_i} v^T Q v``, solved exactly by
    :func:`~mtlsearch.weighting.solvers.min_quadratic_above`. Each solve starts with the rows
    that conflict with ``g_i`` (``Q_ij < 0``) as its guess of the support, which is usually close."""
    q = gram.detach().to(device="cpu", dtype=torch.float64)
    t = q.shape[0]
    eye = torch.eye(t, dtype=torch.float64)
    total = torch.zeros(t, dtype=torch.float64)
    for i in range(t):
        total += min_quadratic_above(q, eye[i], hint=q[i] < 0)
    return total


@register("upgrad")
class UPGrad(Aggregator):
    r"""UPGrad of Quinton & Rey, "Jacobian Descent for Multi-Objective Optimization", 2024
    (arXiv:2406.16232; the ``torchjd`` library).

    Each task gradient ``g_i`` is projected onto the dual cone of the rows,
    ``C* = {x : g_t . x >= 0 for all t}`` (the directions that conflict with no task), and the
    projections are added. The projection is computed in the dual, on the Gram matrix
    ``Q = G G^T`` (the paper's Proposition: ``proj_{C*}(G^T u) = G^T v`` with
    ``v = argmin_{v >= u} v^T Q v``)::

        v_i = argmin_{v >= e_i} v^T Q v          (exact, no ridge: solvers.min_quadratic_above)
        update = sum_i G^T v_i = G^T (sum_i v_i)

    Properties: the update is in ``C*`` (a non-negative inner product with every row, from the
    KKT condition ``Q v_i >= 0``), and it equals ``sum_t g_t`` when no two rows conflict (every
    row is then in ``C*``). Exactly opposite rows span a line whose dual cone is orthogonal to
    it, so they give zero. torchjd instead solves a ridge-regularised problem (``+1e-4 I`` on the
    normalised Gram) and returns the plain mean when ``||G||^2 < 1e-4``; here no regularisation
    is used (singular Gram matrices are handled by the least-squares steps of the active-set
    solver), and an all-zero matrix gives zero.

    **Scale**: the paper (and torchjd) average the projections; here they are *summed*, so T
    identical rows ``g`` give ``T g`` and non-conflicting rows give their sum, like equal
    weighting. No hyperparameters.
    """

    label = "UPGrad"

    def __init__(self):
        pass

    def __call__(self, matrix: torch.Tensor) -> torch.Tensor:
        g = matrix.detach().to(torch.float64)
        coef = upgrad_weights((g @ g.T).cpu())
        return coef.to(device=matrix.device, dtype=matrix.dtype) @ matrix
