"""DualProj: the sum of the task gradients projected onto the dual cone of all of them."""

from __future__ import annotations

import torch

from .base import Aggregator, register
from .pcgrad import combine, gram_float64
from .solvers import min_quadratic_above


def dualproj_weights(gram: torch.Tensor) -> torch.Tensor:
    """Coefficients ``v`` (float64, CPU) with ``update = G^T v = proj_{C*}(sum_t g_t)``.

    ``v = argmin_{v >= 1} v^T Q v``, solved exactly; the rows that conflict with the sum
    (``(Q 1)_i < 0``) are the active-set method's first guess. See docs/weighting.md#dualproj.
    """
    q = gram.detach().to(device="cpu", dtype=torch.float64)
    ones = torch.ones(q.shape[0], dtype=torch.float64)
    return min_quadratic_above(q, ones, hint=q.sum(dim=1) < 0)


@register("dualproj")
class DualProj(Aggregator):
    """DualProj: the sum of the task gradients projected onto the dual cone of all of them.

    DualProj (Quinton & Rey, 2024, arXiv:2406.16232, the ``torchjd`` library; the projection is
    that of GEM, Lopez-Paz & Ranzato, 2017, arXiv:1706.08840). The update is the vector closest to
    ``sum_t g_t`` that has a non-negative inner product with every task gradient, solved exactly in
    the dual on the Gram matrix (no ridge). It is the plain sum when the sum conflicts with no task;
    two exactly opposite rows give 0. No hyperparameters.

    Returns the ``(P,)`` update in the input's dtype. See docs/weighting.md#dualproj.

    .. note::
        torchjd projects the mean; here the sum (the projection onto a cone is positively
        homogeneous, so this is T times torchjd's update), so T identical rows ``g`` give ``T g``.
    """

    label = "DualProj"

    def __init__(self):
        pass

    def weights(self, matrix: torch.Tensor) -> torch.Tensor:
        """The ``T`` coefficients ``v >= 1`` (float64, CPU) with ``update = v @ matrix``."""
        return dualproj_weights(gram_float64(matrix)[0])

    def __call__(self, matrix: torch.Tensor) -> torch.Tensor:
        gram, low = gram_float64(matrix)
        return combine(dualproj_weights(gram), matrix, low)
