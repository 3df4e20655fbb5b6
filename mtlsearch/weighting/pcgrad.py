"""PCGrad: project each task gradient off the gradients it conflicts with.

Also home of the two helpers that the Gram-matrix aggregators (PCGrad, GradVac, IMTL-G,
Aligned-MTL) share: :func:`gram_float64` and :func:`combine`.
"""

from __future__ import annotations

from abc import abstractmethod

import torch

from .base import Aggregator, register
from .solvers import gram_and_precision


def gram_float64(matrix: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """The ``(T, T)`` Gram matrix as float64 on the CPU and whether it was formed in float32 (pass
    that flag on to :func:`combine`); see docs/weighting.md#the-gram-matrix-and-the-float32-trust-rule."""
    return gram_and_precision(matrix)


def combine(weights: torch.Tensor, matrix: torch.Tensor, low: bool) -> torch.Tensor:
    """``weights @ matrix`` on the matrix's device, returned in its dtype: formed in float32 when
    ``low`` (the Gram matrix was formed in float32, see :func:`gram_float64`), else in float64."""
    if low:
        return weights.to(device=matrix.device, dtype=matrix.dtype) @ matrix
    return (weights.to(matrix.device) @ matrix.to(torch.float64)).to(matrix.dtype)


class RowCombination(Aggregator):
    """An aggregator whose corrected task gradients are linear combinations of the original ones:
    subclasses give the ``(T, T)`` coefficients ``C`` from the float64 Gram matrix, the corrected
    rows are ``C G`` and the update is their sum."""

    @abstractmethod
    def coefficients(self, gram: torch.Tensor) -> torch.Tensor: ...

    def adjusted(self, matrix: torch.Tensor) -> torch.Tensor:
        """The ``(T, P)`` corrected gradients ``g_i'`` (in float64); the update is their sum. For a
        stateful subclass (GradVac) this counts as a step."""
        coef = self.coefficients(gram_float64(matrix)[0])
        return coef.to(matrix.device) @ matrix.to(torch.float64)

    def __call__(self, matrix: torch.Tensor) -> torch.Tensor:
        gram, low = gram_float64(matrix)
        return combine(self.coefficients(gram).sum(dim=0), matrix, low)


@register("pcgrad")
class PCGrad(RowCombination):
    """PCGrad: each task gradient projected off the gradients it conflicts with, then summed.

    PCGrad (Yu et al., 2020, arXiv:2001.06782). For each task, the other tasks are visited in a
    fresh random order (``torch.randperm``, reproducible under ``torch.manual_seed``) and the
    current row is projected onto the normal plane of each original row it conflicts with.
    Without conflicts the update is the plain sum. No hyperparameters.

    Returns the ``(P,)`` update in the input's dtype. See docs/weighting.md#pcgrad.
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
