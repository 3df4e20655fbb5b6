"""MoCo: MGDA's weights, by projected gradient steps, on tracked estimates of the task gradients."""

from __future__ import annotations

import torch

from .base import Aggregator, register
from .hyper import check_number
from .pcgrad import combine, gram_float64
from .solvers import project_simplex

_F64 = torch.float64


def moco_lambda_step(gram: torch.Tensor, lam: torch.Tensor, gamma: float, rho: float) -> torch.Tensor:
    """One projected gradient step on ``1/2 lam^T (Q' + rho I) lam`` over the simplex:
    ``proj_simplex(lam - gamma (Q' + rho I) lam)``, with ``Q'`` the Gram matrix divided by its
    largest diagonal entry (unchanged when that is 0). Float64 on the CPU."""
    q = gram.detach().to(device="cpu", dtype=_F64)
    top = float(q.diagonal().max())
    if top > 0:
        q = q / top
    lam = lam.detach().to(device="cpu", dtype=_F64)
    return project_simplex(lam - gamma * (q @ lam + rho * lam))


@register("moco")
class MoCo(Aggregator):
    """MoCo: MGDA's weights, by projected gradient steps, on tracked estimates of the gradients.

    MoCo (Fernando et al., ICLR 2023, arXiv:2210.12624, Algorithm 1). Each call updates the
    estimates ``y_t <- y_t - beta (y_t - g_t)`` (``y_t = g_t`` at the first call), then the weights
    ``lam <- proj_simplex(lam - gamma (Q' + rho I) lam)`` with ``Q'`` the estimates' Gram matrix
    divided by its largest diagonal entry, and returns ``T sum_t lam_t y_t``. Deterministic.

    Args:
        beta: the estimates' tracking rate, in (0, 1] (default 0.5; 1 tracks nothing; searchable).
        gamma: the weights' step size, > 0 (default 0.1; searchable).
        rho: the weights' regularisation, >= 0 (default 0.0; searchable).

    Returns the ``(P,)`` update in the input's dtype. State: the ``(T, P)`` estimates (in the
    input's dtype and device), the weights and the step count. See docs/weighting.md#moco.

    .. note::
        The paper's update is ``Y lam`` (mean scale); here ``T Y lam``. Its step sizes decay with
        the step and its estimates are projected onto a bounded set (devices of the analysis); here
        the steps are constant, there is no projection, and ``Q`` is scaled so that ``gamma`` does
        not depend on the gradients' scale.
    """

    label = "MoCo"
    searchable = ("beta", "gamma", "rho")

    def __init__(self, beta: float = 0.5, gamma: float = 0.1, rho: float = 0.0):
        self.beta = check_number(self.label, "beta", beta, low=0.0, high=1.0, low_open=True)
        self.gamma = check_number(self.label, "gamma", gamma, low=0.0, low_open=True)
        self.rho = check_number(self.label, "rho", rho, low=0.0)
        self.estimates: torch.Tensor | None = None
        self.lam: torch.Tensor | None = None
        self.steps = 0

    def __call__(self, matrix: torch.Tensor) -> torch.Tensor:
        g = matrix.detach()
        if self.estimates is None or self.lam is None:
            self.estimates = g.clone()
            self.lam = torch.full((g.shape[0],), 1.0 / g.shape[0], dtype=_F64)
        elif self.estimates.shape != g.shape:
            raise ValueError(f"MoCo: this instance tracks a {tuple(self.estimates.shape)} matrix, got {tuple(g.shape)}")
        else:
            self.estimates = self.estimates.to(device=g.device, dtype=g.dtype)
            self.estimates = self.estimates + self.beta * (g - self.estimates)
        gram, low = gram_float64(self.estimates)
        self.lam = moco_lambda_step(gram, self.lam, self.gamma, self.rho)
        self.steps += 1
        return combine(g.shape[0] * self.lam, self.estimates, low)
