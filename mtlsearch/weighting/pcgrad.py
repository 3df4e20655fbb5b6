"""PCGrad: project each task gradient off the gradients it conflicts with.

Also home of the two helpers that the Gram-matrix aggregators (PCGrad, GradVac, IMTL-G,
Aligned-MTL) share: :func:`gram_float64` and :func:`combine`.
"""

from __future__ import annotations

import math

import torch

from .base import Aggregator, register

#: Smallest eigenvalue of the rows' correlation matrix (their Gram matrix scaled to a unit diagonal)
#: for which a float32 Gram matrix is trusted; below it (two rows with ``|cos| > 0.999``, or rows
#: close to linearly dependent) :func:`gram_float64` recomputes the Gram matrix in float64.
GRAM_RECHECK = 1e-3


def _well_conditioned(k: list[list[float]], tiny: float) -> bool:
    """Whether a float32-computed Gram matrix ``k`` is finite, has squared row norms of at least
    ``tiny`` (no zero or underflowing row) and a correlation matrix with smallest eigenvalue above
    :data:`GRAM_RECHECK` (Cholesky of ``corr - GRAM_RECHECK * I``)."""
    count = len(k)
    if not all(math.isfinite(v) for row in k for v in row):
        return False
    if not all(k[i][i] >= tiny for i in range(count)):
        return False
    if count > 8:
        scale = torch.tensor([k[i][i] for i in range(count)], dtype=torch.float64).rsqrt()
        corr = torch.tensor(k, dtype=torch.float64) * scale[:, None] * scale[None, :]
        corr.diagonal().sub_(GRAM_RECHECK)
        return int(torch.linalg.cholesky_ex(corr).info) == 0
    scale = [1.0 / math.sqrt(k[i][i]) for i in range(count)]
    low = [[0.0] * count for _ in range(count)]
    for j in range(count):
        pivot = 1.0 - GRAM_RECHECK - sum(low[j][p] ** 2 for p in range(j))
        if not pivot > 0.0:
            return False
        low[j][j] = math.sqrt(pivot)
        for i in range(j + 1, count):
            corr = k[i][j] * scale[i] * scale[j]
            low[i][j] = (corr - sum(low[i][p] * low[j][p] for p in range(j))) / low[j][j]
    return True


def gram_float64(matrix: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """The ``(T, T)`` Gram matrix ``G G^T`` of a ``(T, P)`` matrix as float64 on the CPU, and
    whether it was formed in float32 (pass that flag on to :func:`combine`).

    float64 input: formed in float64. float32 input: formed in float32 on the input's device (one
    pass over ``G``, no copy), only the ``T x T`` result being cast, as long as that result can be
    trusted -- finite, every squared row norm at least ``tiny / eps`` of float32 (no zero or
    underflowing row) and rows clearly independent (see :data:`GRAM_RECHECK`); its entries are
    then exact to about float32 rounding relative to ``||g_i|| ||g_j||``. Otherwise (zero,
    parallel, opposite or nearly dependent rows, overflow), and for any other dtype, it is formed
    from a float64 copy of ``G`` as before, so degenerate cases keep their float64 handling.
    """
    if matrix.dtype == torch.float32:
        gram = (matrix @ matrix.T).to(device="cpu", dtype=torch.float64)
        info = torch.finfo(torch.float32)
        if _well_conditioned(gram.tolist(), info.tiny / info.eps):
            return gram, True
    elif matrix.dtype == torch.float64:
        return (matrix @ matrix.T).cpu(), False
    g = matrix.to(torch.float64)
    return (g @ g.T).cpu(), False


def combine(weights: torch.Tensor, matrix: torch.Tensor, low: bool) -> torch.Tensor:
    """``weights @ matrix`` on the matrix's device, returned in its dtype: formed in float32 when
    ``low`` (the Gram matrix was formed in float32, see :func:`gram_float64`), else in float64."""
    if low:
        return weights.to(device=matrix.device, dtype=matrix.dtype) @ matrix
    return (weights.to(matrix.device) @ matrix.to(torch.float64)).to(matrix.dtype)


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

    The projections are carried out on the ``T x T`` Gram matrix ``G G^T`` (see
    :func:`gram_float64`: formed in the input dtype, the small logic in float64): each ``g_i'`` is
    kept as coefficients ``c_i`` over the original rows (``g_i' = c_i G``), so one pass over the
    ``P`` coordinates builds the Gram matrix and one more forms the update, in the input dtype.
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
        coef = self.coefficients(gram_float64(matrix)[0])
        return coef.to(matrix.device) @ matrix.to(torch.float64)

    def __call__(self, matrix: torch.Tensor) -> torch.Tensor:
        gram, low = gram_float64(matrix)
        return combine(self.coefficients(gram).sum(dim=0), matrix, low)
