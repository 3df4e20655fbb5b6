"""UPGrad: every task gradient projected onto the dual cone of all of them, then summed."""

from __future__ import annotations

import torch

from .base import Aggregator, register
from .solvers import gram_matrix, min_quadratic_above_rows


def upgrad_weights(gram: torch.Tensor) -> torch.Tensor:
    """Coefficients ``a`` (float64, CPU) with ``update = G^T a = sum_i proj(g_i)``: the sum over i
    of ``v_i = argmin_{v >= e_i} v^T Q v``, solved exactly by
    :func:`~mtlsearch.weighting.solvers.min_quadratic_above_rows`: for small T all T problems in
    one batched enumeration of the supports; otherwise (or for a problem the enumeration does not
    settle) the active-set method, starting with the rows that conflict with ``g_i``
    (``Q_ij < 0``) as its guess of the support, which is usually close."""
    q = gram.detach().to(device="cpu", dtype=torch.float64)
    t = q.shape[0]
    return min_quadratic_above_rows(q, torch.eye(t, dtype=torch.float64), hints=q < 0).sum(dim=0)


@register("upgrad")
class UPGrad(Aggregator):
    r"""UPGrad of Quinton & Rey, "Jacobian Descent for Multi-Objective Optimization", 2024
    (arXiv:2406.16232; the ``torchjd`` library).

    Each task gradient ``g_i`` is projected onto the dual cone of the rows,
    ``C* = {x : g_t . x >= 0 for all t}`` (the directions that conflict with no task), and the
    projections are added. The projection is computed in the dual, on the Gram matrix
    ``Q = G G^T`` (the paper's Proposition: ``proj_{C*}(G^T u) = G^T v`` with
    ``v = argmin_{v >= u} v^T Q v``)::

        v_i = argmin_{v >= e_i} v^T Q v          (exact, no ridge: solvers.min_quadratic_above_rows)
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

    **Precision**: ``Q`` is formed by :func:`~mtlsearch.weighting.solvers.gram_matrix` (in the
    input's dtype on its device, float64 for degenerate float32 inputs), the problems are solved
    in float64 on the CPU, and the coefficients are applied in the input's dtype.
    """

    label = "UPGrad"

    def __init__(self):
        pass

    def __call__(self, matrix: torch.Tensor) -> torch.Tensor:
        coef = upgrad_weights(gram_matrix(matrix))
        return coef.to(device=matrix.device, dtype=matrix.dtype) @ matrix
