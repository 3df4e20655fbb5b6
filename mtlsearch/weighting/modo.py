"""MoDo: MGDA's weights by one projected gradient step per call, on the current gradients."""

from __future__ import annotations

import torch

from .base import Aggregator, register
from .hyper import check_number
from .pcgrad import combine, gram_float64
from .solvers import project_simplex

_F64 = torch.float64


def modo_lambda_step(gram: torch.Tensor, lam: torch.Tensor, gamma: float, rho: float) -> torch.Tensor:
    """``proj_simplex(lam - gamma (Q + rho I) lam)`` in float64 on the CPU, ``Q`` the Gram matrix."""
    q = gram.detach().to(device="cpu", dtype=_F64)
    lam = lam.detach().to(device="cpu", dtype=_F64)
    return project_simplex(lam - gamma * (q @ lam + rho * lam))


@register("modo")
class MoDo(Aggregator):
    """MoDo: weights moved by one projected gradient step per call; the update is ``T G^T lam``.

    MoDo (Chen, Fernando, Ying & Chen, NeurIPS 2023, arXiv:2305.20057, Algorithm 1). Each call
    takes ``lam <- proj_simplex(lam - gamma (G G^T + rho I) lam)`` (``lam`` starts uniform) and
    returns ``T sum_t lam_t g_t``. Deterministic.

    Args:
        gamma: the weights' step size, > 0 (default 0.1; searchable). It acts on the raw Gram
            matrix, so its useful range depends on the gradients' scale.
        rho: the weights' regularisation, >= 0 (default 0.1; searchable).

    Returns the ``(P,)`` update in the input's dtype. State: the weights and the step count. See
    docs/weighting.md#modo.

    .. note::
        The paper estimates ``G G^T`` from two independent mini-batches and updates the model on a
        third; an aggregator sees one matrix per step, so all three are that matrix here (as
        SDMGrad). torchjd 0.18 and LibMTL give the mean-scale ``G^T lam``; here ``T G^T lam``.
    """

    label = "MoDo"
    searchable = ("gamma", "rho")

    def __init__(self, gamma: float = 0.1, rho: float = 0.1):
        self.gamma = check_number(self.label, "gamma", gamma, low=0.0, low_open=True)
        self.rho = check_number(self.label, "rho", rho, low=0.0)
        self.lam: torch.Tensor | None = None
        self.steps = 0

    def __call__(self, matrix: torch.Tensor) -> torch.Tensor:
        t = matrix.shape[0]
        if self.lam is None:
            self.lam = torch.full((t,), 1.0 / t, dtype=_F64)
        elif self.lam.numel() != t:
            raise ValueError(f"MoDo: this instance weighs {self.lam.numel()} tasks, got a matrix of {t} rows")
        gram, low = gram_float64(matrix)
        self.lam = modo_lambda_step(gram, self.lam, self.gamma, self.rho)
        self.steps += 1
        return combine(t * self.lam, matrix, low)
