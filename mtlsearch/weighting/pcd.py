"""PCD: follow the first task's gradient, guaranteeing every other task a share of its progress."""

from __future__ import annotations

import torch

from .base import Aggregator, register
from .hyper import check_number
from .pcgrad import combine, gram_float64
from .solvers import nonneg_qp

_F64 = torch.float64


def pcd_coefficients(gram: torch.Tensor, scales: torch.Tensor, tau: float) -> torch.Tensor:
    """Coefficients ``c`` (float64, CPU) with ``update = c @ G`` for PCD's problem.

    With ``h_i = s_i g_i`` (``s`` = ``scales``), ``d = argmin 1/2 ||d - h_1||^2`` subject to
    ``h_j . d >= tau ||h_j||^2`` for ``j >= 2``. Its dual is the non-negative QP
    ``min_{mu >= 0} 1/2 mu^T H mu + mu^T (H_{j1} - tau H_jj)`` on ``H = diag(s) Q diag(s)``, and
    ``d = h_1 + sum_j mu_j h_j``. ``d`` is rescaled to ``T ||g_1||`` (sum-scale). Infeasible constraints are
    dropped (``d = h_1``); ``g_1 = 0`` or ``d = 0`` up to rounding give 0.
    """
    q = gram.detach().to(device="cpu", dtype=_F64)
    s = scales.detach().to(device="cpu", dtype=_F64)
    t = q.shape[0]
    coef = torch.zeros(t, dtype=_F64)
    if not float(q[0, 0]) > 0:
        return coef
    h = q * torch.outer(s, s)
    w = torch.zeros(t, dtype=_F64)
    w[0] = 1.0
    if t > 1:
        sub = h[1:, 1:]
        try:
            w[1:] = nonneg_qp(sub, h[1:, 0] - tau * sub.diagonal())
        except ValueError:  # unbounded dual: the constraints cannot all hold
            pass
    norm_sq = float(w @ h @ w)
    magnitude = float(w.abs() @ h.diagonal().sqrt()) ** 2
    if not norm_sq > 1e-12 * magnitude:
        return coef
    return t * w * s * (float(q[0, 0]) / norm_sq) ** 0.5


@register("pcd")
class PCD(Aggregator):
    """PCD: Priority-Constrained Descent, the first row's gradient as closely as the others allow.

    PCD (Varam et al., TMLR 2026, arXiv:2606.29521; the ``torchjd`` library). With the gradients
    normalised by the root of a bias-corrected moving average of their squared norms, the update is
    the point closest to the first (primary) normalised gradient that gives every other task at
    least a fraction ``tau`` of the first-order progress of its own normalised gradient, rescaled
    to T times the norm of the first gradient. Solved exactly in the dual on the Gram matrix.

    Args:
        tau: the guaranteed fraction, in [0, 1] (default 0.02; searchable).
        beta: the moving average's decay, in [0, 1) (default 0.999; searchable).
        eps: added to the moving average before the root, >= 0 (default 1e-8).

    Returns the ``(P,)`` update in the input's dtype. State: the moving average and the step count.
    See docs/weighting.md#pcd.

    .. note::
        Not symmetric in the tasks: the primary task is the first row, that is the first task of
        the space's task list among those that share the parameters. The paper and torchjd rescale
        to the norm of the primary gradient; here to T times it, so T identical rows ``g`` give
        ``T g`` as with every other method.
    """

    label = "PCD"
    searchable = ("tau", "beta")

    def __init__(self, tau: float = 0.02, beta: float = 0.999, eps: float = 1e-8):
        self.tau = check_number(self.label, "tau", tau, low=0.0, high=1.0)
        self.beta = check_number(self.label, "beta", beta, low=0.0, high=1.0, high_open=True)
        self.eps = check_number(self.label, "eps", eps, low=0.0)
        self.sq_norm_average: torch.Tensor | None = None
        self.steps = 0

    def scales(self, sq_norms: torch.Tensor) -> torch.Tensor:
        """Update the moving average with ``sq_norms`` (a step) and return ``1 / sqrt(avg + eps)``
        (0 where that is infinite)."""
        sq = sq_norms.detach().to(device="cpu", dtype=_F64)
        if self.sq_norm_average is None:
            self.sq_norm_average = torch.zeros_like(sq)
        elif self.sq_norm_average.numel() != sq.numel():
            raise ValueError(
                f"PCD: this instance tracks {self.sq_norm_average.numel()} tasks, got a matrix of {sq.numel()} rows"
            )
        self.sq_norm_average = self.beta * self.sq_norm_average + (1.0 - self.beta) * sq
        self.steps += 1
        root = (self.sq_norm_average / (1.0 - self.beta**self.steps) + self.eps).sqrt()
        return torch.where(root > 0, 1.0 / root, torch.zeros_like(root))

    def __call__(self, matrix: torch.Tensor) -> torch.Tensor:
        gram, low = gram_float64(matrix)
        coef = pcd_coefficients(gram, self.scales(gram.diagonal()), self.tau)
        return combine(coef, matrix, low)
