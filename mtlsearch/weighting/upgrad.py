"""UPGrad: every task gradient projected onto the dual cone of all of them, then summed."""

from __future__ import annotations

import torch

from .base import Aggregator, register
from .solvers import gram_matrix, min_quadratic_above_rows


def upgrad_weights(gram: torch.Tensor) -> torch.Tensor:
    """Coefficients ``a`` (float64, CPU) with ``update = G^T a = sum_i proj(g_i)``.

    ``a = sum_i v_i`` with ``v_i = argmin_{v >= e_i} v^T Q v``, solved exactly. See
    docs/weighting.md#upgrad.
    """
    q = gram.detach().to(device="cpu", dtype=torch.float64)
    t = q.shape[0]
    return min_quadratic_above_rows(q, torch.eye(t, dtype=torch.float64), hints=q < 0).sum(dim=0)


@register("upgrad")
class UPGrad(Aggregator):
    """UPGrad: every task gradient projected onto the dual cone of all of them, then summed.

    UPGrad (Quinton & Rey, 2024, arXiv:2406.16232; the ``torchjd`` library). The update conflicts
    with no task; it is the plain sum when no two rows conflict, and exactly opposite rows give
    zero. The projections are solved exactly in float64 on the Gram matrix, with no ridge. No
    hyperparameters.

    Returns the ``(P,)`` update in the input's dtype. See docs/weighting.md#upgrad.

    .. note::
        The paper and torchjd average the projections; here they are summed, so T identical rows
        ``g`` give ``T g``, like equal weighting.
    """

    label = "UPGrad"

    def __init__(self):
        pass

    def __call__(self, matrix: torch.Tensor) -> torch.Tensor:
        coef = upgrad_weights(gram_matrix(matrix))
        return coef.to(device=matrix.device, dtype=matrix.dtype) @ matrix
