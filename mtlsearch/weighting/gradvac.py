"""Gradient Vaccine: pull each pair of task gradients up to a learned target similarity."""

from __future__ import annotations

import math

import torch

from .base import register
from .hyper import check_number
from .pcgrad import RowCombination


@register("gradvac")
class GradVac(RowCombination):
    """Gradient Vaccine of Wang et al., "Gradient Vaccine: Investigating and Improving Multi-task
    Optimization in Massively Multilingual Models", ICLR 2021 (arXiv:2010.05874).

    Each ordered pair of tasks (i, j) has a target cosine similarity ``phi_hat_ij``, an exponential
    moving average of the similarities observed so far (initialised at 0, so the first steps act
    like PCGrad). For each task i, starting from ``g_i' = g_i``, the other tasks j are visited in a
    random order; with ``phi = cos(g_i', g_j)`` (current ``g_i'``, *original* ``g_j``), if
    ``phi < phi_hat_ij`` the smallest multiple of ``g_j`` that lifts the similarity exactly to the
    target is added::

        g_i' <- g_i' + g_j * ||g_i'|| (phi_hat sqrt(1 - phi^2) - phi sqrt(1 - phi_hat^2))
                             / (||g_j|| sqrt(1 - phi_hat^2))

    The update is ``sum_i g_i'``.

    Target update convention: the paper's (Algorithm 1) -- every call, every visited pair,
    ``phi_hat_ij <- (1 - beta) phi_hat_ij + beta phi``, with ``phi`` measured *before* the
    correction at that pair, whether or not a correction was made (not only on conflicts, and not
    with the corrected similarity). ``beta`` is searchable (``gradvac: {beta: {low: 0.001, high:
    0.1, log: true}}``), in [0, 1]; ``beta = 0`` keeps the targets at 0, i.e. PCGrad.

    State: the ``(T, T)`` targets, created on the first call from T (the trainer keeps one instance
    per group of shared parameters, so T is fixed for an instance). The visiting order is drawn per
    task with ``torch.randperm`` (torch's global CPU RNG, reproducible under ``torch.manual_seed``).

    Numerical guards: a pair where ``g_i'`` or ``g_j`` is zero has no similarity; it is skipped
    (no correction, target unchanged). ``phi`` is clipped to [-1, 1]. A target of (almost) 1 can
    only be reached by an unbounded multiple of ``g_j``, so the target used in the correction is
    capped at ``1 - 1e-6`` (reachable only with ``beta`` near 1 and near-parallel gradients).
    Computed on the ``T x T`` Gram matrix (formed in the input dtype, see
    :func:`~mtlsearch.weighting.pcgrad.gram_float64`; the loop runs in float64), with ``g_i'`` kept
    as coefficients over the original rows; the update ``(sum_i c_i) G`` is formed in float32
    when the Gram matrix was, else in float64.
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
