"""Gradient Vaccine: pull each pair of task gradients up to a learned target similarity."""

from __future__ import annotations

import math

import torch

from .base import register
from .hyper import check_number
from .pcgrad import RowCombination


@register("gradvac")
class GradVac(RowCombination):
    """GradVac: each pair of task gradients pulled up to a learned target cosine similarity.

    GradVac (Wang et al., 2021, arXiv:2010.05874). As PCGrad, but a row is corrected whenever its
    similarity with another task's original row is below that pair's target, an exponential
    moving average of the observed similarities (starting at 0, so the first steps act like
    PCGrad). The update is the sum of the corrected rows.

    Args:
        beta: the targets' moving-average rate, in [0, 1] (default 0.01; searchable, e.g.
            ``gradvac: {beta: {low: 0.001, high: 0.1, log: true}}``). ``beta = 0`` is PCGrad.

    Returns the ``(P,)`` update in the input's dtype. State: the ``(T, T)`` targets. See
    docs/weighting.md#gradvac.
    """

    label = "GradVac"
    searchable = ("beta",)
    MAX_TARGET = 1.0 - 1e-6

    def __init__(self, beta: float = 0.01):
        self.beta = check_number(self.label, "beta", beta, low=0.0, high=1.0)
        self._targets: torch.Tensor | None = None

    @property
    def targets(self) -> torch.Tensor | None:
        """A copy of the ``(T, T)`` target similarities ``phi_hat`` (``None`` before the first call)."""
        return None if self._targets is None else self._targets.clone()

    def coefficients(self, gram: torch.Tensor) -> torch.Tensor:
        """The ``(T, T)`` matrix ``C`` with ``g_i' = sum_k C[i, k] g_k``; updates the targets."""
        count = gram.shape[0]
        if self._targets is None:
            self._targets = torch.zeros(count, count, dtype=torch.float64)
        elif self._targets.shape[0] != count:
            raise ValueError(f"GradVac: this instance tracks {self._targets.shape[0]} tasks, got a matrix of {count}")
        k = gram.tolist()
        targets = self._targets.tolist()
        norm = [math.sqrt(max(k[j][j], 0.0)) for j in range(count)]
        coef = [[1.0 if a == b else 0.0 for b in range(count)] for a in range(count)]
        for i in range(count):
            c = coef[i]
            for j in torch.randperm(count).tolist():
                if j == i or norm[j] == 0.0:
                    continue
                kc = [sum(k[a][b] * c[b] for b in range(count)) for a in range(count)]  # G G^T c
                norm_i = math.sqrt(max(sum(c[a] * kc[a] for a in range(count)), 0.0))
                if norm_i == 0.0:
                    continue
                phi = min(max(kc[j] / (norm_i * norm[j]), -1.0), 1.0)
                target = min(targets[i][j], self.MAX_TARGET)
                if phi < target:
                    root_target = math.sqrt(1.0 - target * target)
                    lift = target * math.sqrt(1.0 - phi * phi) - phi * root_target
                    c[j] += norm_i * lift / (norm[j] * root_target)
                targets[i][j] = (1.0 - self.beta) * targets[i][j] + self.beta * phi
        self._targets = torch.tensor(targets, dtype=torch.float64)
        return torch.tensor(coef, dtype=torch.float64)
