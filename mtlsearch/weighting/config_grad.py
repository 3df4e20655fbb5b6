"""ConFIG: the conflict-free direction at equal angles to every task gradient."""

from __future__ import annotations

import torch

from .base import Aggregator, register
from .pcgrad import combine, gram_float64

_F64 = torch.float64
#: Eigenvalues of the unit rows' Gram matrix below this fraction of the largest are treated as 0
#: in its pseudo-inverse (IMTL-G's cut-off): rows that are parallel or opposite to rounding.
RCOND = 1e-12


def config_weights(gram: torch.Tensor) -> torch.Tensor:
    """Coefficients ``a`` (float64, CPU) with ``update = G^T a``, from the ``(T, T)`` Gram matrix.

    With unit rows ``u_i = g_i / ||g_i||`` (zero rows left out), ``y = pinv(U) 1 = U^T C^+ 1``
    (``C = U U^T``, the rows' cosines) and ``update = (sum_i g_i . y / ||y||) y / ||y||``; 0 when
    ``y = 0``. See docs/weighting.md#config.
    """
    q = gram.detach().to(device="cpu", dtype=_F64)
    q = (q + q.T) / 2
    t = q.shape[0]
    coef = torch.zeros(t, dtype=_F64)
    norms = q.diagonal().clamp(min=0).sqrt()
    live = (norms > 0).nonzero().squeeze(1)
    if live.numel() == 0:
        return coef
    n = norms[live]
    cos = q[live][:, live] / (n[:, None] * n[None, :])
    cos.diagonal().fill_(1.0)
    vals, vecs = torch.linalg.eigh(cos)
    keep = vals > RCOND * float(vals.max())
    ones = torch.ones(live.numel(), dtype=_F64)
    b = (vecs[:, keep] / vals[keep]) @ (vecs[:, keep].T @ ones)  # C^+ 1: y = U^T b
    length2 = float(b @ cos @ b)  # ||y||^2
    if not length2 > 0:
        return coef
    scale = float(n @ (cos @ b)) / length2  # (sum_i g_i . y) / ||y||^2
    coef[live] = scale * b / n
    return coef


@register("config")
class ConFIG(Aggregator):
    """ConFIG: the conflict-free direction at equal angles to every task gradient.

    ConFIG (Liu, Chen & Thuerey, 2024, arXiv:2408.11104), with equal task weights: the direction
    ``y = pinv([u_1, ..., u_T]^T) 1`` of the unit gradients ``u_t``, scaled by the sum of the task
    gradients' projections onto it: ``update = (sum_t g_t . y_hat) y_hat``. With independent rows
    every ``u_t . y`` is 1, so no task conflicts with the update. Computed on the Gram matrix; zero
    rows are left out; two exactly opposite rows give 0. No hyperparameters.

    Returns the ``(P,)`` update in the input's dtype. See docs/weighting.md#config.
    """

    label = "ConFIG"

    def __init__(self):
        pass

    def weights(self, matrix: torch.Tensor) -> torch.Tensor:
        """The ``T`` coefficients (float64, CPU) with ``update = weights @ matrix``."""
        return config_weights(gram_float64(matrix)[0])

    def __call__(self, matrix: torch.Tensor) -> torch.Tensor:
        gram, low = gram_float64(matrix)
        return combine(config_weights(gram), matrix, low)
