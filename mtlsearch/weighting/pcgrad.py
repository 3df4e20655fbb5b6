"""PCGrad: project each task gradient off the gradients it conflicts with."""

from __future__ import annotations

import torch

from .base import Aggregator, register


@register("pcgrad")
class PCGrad(Aggregator):
    """Projecting Conflicting Gradients of Yu et al., "Gradient Surgery for Multi-Task Learning",
    NeurIPS 2020 (arXiv:2001.06782).

    For each task i, starting from ``g_i' = g_i``, the other tasks j are visited in a random order
    and, whenever the current ``g_i'`` conflicts with the *original* ``g_j``
    (``g_i' . g_j < 0``), ``g_i'`` is projected onto the normal plane of ``g_j``::

        g_i' <- g_i' - (g_i' . g_j / ||g_j||^2) g_j

    The update is the sum of the projected rows, ``sum_i g_i'``; without conflicts it is the plain
    sum of the task gradients. No hyperparameters.

    Conventions: a fresh order is drawn for every task i with ``torch.randperm`` (torch's global
    CPU RNG, so ``torch.manual_seed`` makes a run reproducible; the paper's Algorithm 1 leaves the
    order random, its reference code reshuffles per task). A zero row ``g_j`` never conflicts
    (``g_i' . g_j = 0``), so no division by a zero norm can happen.

    The projections are carried out on the ``T x T`` Gram matrix ``G G^T`` in float64: each
    ``g_i'`` is kept as coefficients ``c_i`` over the original rows (``g_i' = c_i G``), so one pass
    over the ``P`` coordinates builds the Gram matrix and one more forms the update.
    """

    label = "PCGrad"

    def __init__(self):
        pass

    def coefficients(self, gram: torch.Tensor) -> torch.Tensor:
        """The ``(T, T)`` matrix ``C`` with ``g_i' = sum_k C[i, k] g_k``, from the Gram matrix."""
        count = gram.shape[0]
        k = gram.tolist()
        coef = [[1.0 if a == b else 0.0 for b in range(count)] for a in range(count)]
        for i in range(count):
            c = coef[i]
            for j in torch.randperm(count).tolist():
                if j == i or k[j][j] <= 0.0:
                    continue
                dot = sum(c[m] * k[m][j] for m in range(count))  # g_i' . g_j
                if dot < 0.0:
                    c[j] -= dot / k[j][j]
        return torch.tensor(coef, dtype=torch.float64)

    def adjusted(self, matrix: torch.Tensor) -> torch.Tensor:
        """The ``(T, P)`` projected gradients ``g_i'`` (in float64); the update is their sum."""
        g = matrix.to(torch.float64)
        return self.coefficients((g @ g.T).cpu()).to(g.device) @ g

    def __call__(self, matrix: torch.Tensor) -> torch.Tensor:
        g = matrix.to(torch.float64)
        weights = self.coefficients((g @ g.T).cpu()).sum(dim=0).to(g.device)
        return (weights @ g).to(matrix.dtype)
