"""Aligned-MTL: make the task gradients orthogonal with equal norms before summing them."""

from __future__ import annotations

import torch

from .base import Aggregator, register
from .pcgrad import combine, gram_float64


@register("aligned_mtl")
class AlignedMTL(Aggregator):
    """Aligned-MTL of Senushkin et al., "Independent Component Alignment for Multi-Task Learning",
    CVPR 2023 (arXiv:2305.19000).

    The gradient matrix ``G`` (rows ``g_i``) is replaced by the closest matrix, up to a scale,
    whose rows are orthogonal with equal norms, i.e. whose condition number is 1. With the Gram
    matrix ``G G^T = V diag(lambda) V^T``::

        B = sqrt(lambda_min) V diag(1 / sqrt(lambda)) V^T,     aligned = B G

    If ``G = V Sigma W^T`` then ``B G = sigma_min V W^T``: every singular value becomes the smallest
    one, ``sigma_min = sqrt(lambda_min)`` (the paper's default scale). The update is the sum of the
    aligned rows (equal task weights ``w = 1``), ``1^T B G = sum_i (B 1)_i g_i``. No
    hyperparameters (the task weights are not exposed).

    Rank-deficient ``G`` (equal, parallel or exactly opposite rows, zero rows): only the non-zero
    spectrum is used -- eigenvalues below ``1e-10`` times the largest are dropped, with their
    eigenvectors, and ``lambda_min`` is the smallest one kept. ``[g, g]`` thus gives ``2 g``,
    ``[g, -g]`` gives 0, and an all-zero matrix gives zeros. Permuting the tasks permutes the
    aligned rows, so the update does not depend on the task order. Computed on the ``T x T`` Gram
    matrix, formed in the input dtype (see :func:`~mtlsearch.weighting.pcgrad.gram_float64`), with
    the eigendecomposition in float64 on the CPU; the update ``(B 1)^T G`` is formed in float32
    when the Gram matrix was, else in float64.
    """

    label = "Aligned-MTL"
    TOLERANCE = 1e-10

    def __init__(self):
        pass

    def balance(self, gram: torch.Tensor) -> torch.Tensor:
        """The ``(T, T)`` matrix ``B`` of the module docstring, from the float64 Gram matrix."""
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
