"""SDMGrad: the min-norm direction of the task gradients, pulled towards their mean."""

from __future__ import annotations

import torch

from .base import Aggregator, register
from .hyper import check_number
from .pcgrad import combine, gram_float64
from .solvers import simplex_qp

_F64 = torch.float64


def sdmgrad_weights(gram: torch.Tensor, lam: float) -> torch.Tensor:
    """``w* = argmin_{w in simplex} 1/2 ||G^T w + lam g0||^2`` (``g0`` the mean row), float64 CPU.

    In Gram terms ``1/2 w^T Q w + lam w^T Q 1 / T``, solved exactly by :func:`simplex_qp` on ``Q``
    divided by its largest diagonal entry (the minimiser does not change). See
    docs/weighting.md#sdmgrad.
    """
    q = gram.detach().to(device="cpu", dtype=_F64)
    q = (q + q.T) / 2
    t = q.shape[0]
    top = float(q.diagonal().max()) if t else 0.0
    if not top > 0:
        return torch.full((t,), 1.0 / t, dtype=_F64)
    q = q / top
    return simplex_qp(q, lam * q.mean(dim=1))


def sdmgrad_coefficients(gram: torch.Tensor, lam: float) -> torch.Tensor:
    """Coefficients ``a`` (float64, CPU) of the sum-scale update ``G^T a = T (g_w* + lam g0) /
    (1 + lam)``: ``a = (T w* + lam) / (1 + lam)``."""
    w = sdmgrad_weights(gram, lam)
    return (w.numel() * w + lam) / (1.0 + lam)


@register("sdmgrad")
class SDMGrad(Aggregator):
    """SDMGrad: the min-norm direction of the task gradients, pulled towards their mean.

    SDMGrad (Xiao, Ban & Ji, NeurIPS 2023, arXiv:2305.18409): ``d = (g_w* + lam g0) / (1 + lam)``
    with ``w* = argmin_{w in simplex} 1/2 ||g_w + lam g0||^2``, ``g_w = G^T w`` and ``g0`` the mean
    gradient. ``lam = 0`` is MGDA, a large ``lam`` tends to the mean. ``w*`` is solved exactly (to
    rounding) on the Gram matrix of the step's matrix; the update is ``T d``.

    Args:
        lam: the pull towards the mean gradient, >= 0 (default 0.3; searchable).

    Returns the ``(P,)`` update in the input's dtype. See docs/weighting.md#sdmgrad.

    .. note::
        The paper's stochastic algorithm estimates ``w*`` by projected gradient steps on Gram
        matrices of two further, independent mini-batches, and ``g_w`` and ``g0`` on a third; an
        aggregator sees one gradient matrix per step, so all three are that matrix here, and
        ``w*`` is exact. The update is sum-scale (T times the paper's ``d``).
    """

    label = "SDMGrad"
    searchable = ("lam",)

    def __init__(self, lam: float = 0.3):
        self.lam = check_number(self.label, "lam", lam, low=0.0)

    def weights(self, matrix: torch.Tensor) -> torch.Tensor:
        """``w*`` (summing to 1; float64, CPU)."""
        return sdmgrad_weights(gram_float64(matrix)[0], self.lam)

    def __call__(self, matrix: torch.Tensor) -> torch.Tensor:
        gram, low = gram_float64(matrix)
        return combine(sdmgrad_coefficients(gram, self.lam), matrix, low)
