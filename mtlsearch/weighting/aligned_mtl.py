"""Aligned-MTL: make the task gradients orthogonal with equal norms before summing them."""

from __future__ import annotations

import torch

from .base import Aggregator, register
from .pcgrad import combine, gram_float64


@register("aligned_mtl")
class AlignedMTL(Aggregator):
    """Aligned-MTL: the task gradients made orthogonal with equal norms, then summed.

    Aligned-MTL (Senushkin et al., 2023, arXiv:2305.19000). ``G`` becomes ``B G``, whose singular
    values all equal the smallest non-zero one of ``G``; the update is the sum of its rows (equal
    task weights). Eigenvalues below 1e-10 times the largest are dropped, so ``[g, g]`` gives
    ``2 g`` and ``[g, -g]`` gives 0. No hyperparameters.

    Returns the ``(P,)`` update in the input's dtype. See docs/weighting.md#aligned-mtl.
    """

    label = "Aligned-MTL"
    TOLERANCE = 1e-10

    def __init__(self):
        pass

    def balance(self, gram: torch.Tensor) -> torch.Tensor:
        """The ``(T, T)`` matrix ``B`` (``aligned = B G``), from the float64 Gram matrix."""
        eigenvalues, vectors = torch.linalg.eigh(gram)
        largest = float(eigenvalues.max())
        if not largest > 0.0:
            return torch.zeros_like(gram)
        keep = eigenvalues > self.TOLERANCE * largest
        eigenvalues, vectors = eigenvalues[keep], vectors[:, keep]
        scale = eigenvalues.min().sqrt()
        return scale * (vectors * eigenvalues.rsqrt()) @ vectors.T

    def adjusted(self, matrix: torch.Tensor) -> torch.Tensor:
        """The ``(T, P)`` aligned matrix ``B G`` (float64); the update is the sum of its rows."""
        return self.balance(gram_float64(matrix)[0]).to(matrix.device) @ matrix.to(torch.float64)

    def __call__(self, matrix: torch.Tensor) -> torch.Tensor:
        gram, low = gram_float64(matrix)
        return combine(self.balance(gram).sum(dim=0), matrix, low)
