"""IMTL-G: the update whose projections onto every task's unit gradient are equal."""

from __future__ import annotations

import math

import torch

from .base import Aggregator, register
from .pcgrad import combine, gram_float64


def _inverse(system: list[list[float]]) -> list[list[float]] | None:
    """The inverse of a small square matrix by Gauss-Jordan elimination with partial pivoting, or
    ``None`` when a pivot is exactly zero."""
    size = len(system)
    rows = [list(r) + [1.0 if i == j else 0.0 for j in range(size)] for i, r in enumerate(system)]
    for col in range(size):
        best = max(range(col, size), key=lambda r: abs(rows[r][col]))
        if rows[best][col] == 0.0:
            return None
        rows[col], rows[best] = rows[best], rows[col]
        pivot = rows[col]
        scale = 1.0 / pivot[col]
        pivot[:] = [v * scale for v in pivot]
        for r in range(size):
            if r != col and rows[r][col] != 0.0:
                factor = rows[r][col]
                rows[r] = [a - factor * b for a, b in zip(rows[r], pivot)]
    return [r[size:] for r in rows]


def _times_pinv(row: list[float], system: list[list[float]], atol: float, rtol: float) -> list[float]:
    """``row @ pinv(system)`` for a small square ``system``, singular values at most
    ``max(atol, rtol * sigma_max)`` treated as 0 (``torch.linalg.pinv``'s rule).

    Clearly non-singular systems are inverted directly; see docs/weighting.md#imtl-g.
    """
    size = len(system)
    if size == 1:
        value = system[0][0]
        keep = abs(value) > max(atol, rtol * abs(value))
        return [row[0] / value if keep else 0.0]
    if size <= 8:
        inverse = _inverse(system)
        if inverse is not None:
            frobenius = math.sqrt(sum(v * v for r in system for v in r))
            inverse_frobenius = math.sqrt(sum(v * v for r in inverse for v in r))
            if inverse_frobenius * 1e4 * max(atol, rtol * frobenius) < 1.0:
                return [sum(row[a] * inverse[a][b] for a in range(size)) for b in range(size)]
    left, singular, right_h = torch.linalg.svd(torch.tensor(system, dtype=torch.float64))
    left, singular, right_h = left.tolist(), singular.tolist(), right_h.tolist()
    cutoff = max(atol, rtol * singular[0])
    # system = L diag(s) R^H, pinv = R diag(1 / s) L^T over the kept singular values, so
    # row @ pinv = ((row @ R) / s) @ L^T
    scaled = [
        sum(row[a] * right_h[r][a] for a in range(size)) / s if s > cutoff else 0.0 for r, s in enumerate(singular)
    ]
    return [sum(scaled[r] * left[b][r] for r in range(size)) for b in range(size)]


@register("imtl_g")
class IMTLG(Aggregator):
    """IMTL-G: the update whose projections onto every task's unit gradient are equal.

    IMTL-G, the gradient half of Impartial Multi-Task Learning (Liu et al., 2021, ICLR). Closed
    form on the Gram matrix, with weights summing to T over the non-zero rows. Zero rows get
    weight 0, and a pseudo-inverse handles parallel rows: ``[g, g]`` gives ``2 g`` and two exactly
    opposite rows give 0. No hyperparameters.

    Returns the ``(P,)`` update in the input's dtype. See docs/weighting.md#imtl-g.

    .. note::
        The paper's weights sum to 1; here to T, so identical rows give the plain sum, as equal
        weighting would.
    """

    label = "IMTL-G"
    TOLERANCE = 1e-12

    def __init__(self):
        pass

    def weights_from_gram(self, gram: torch.Tensor) -> torch.Tensor:
        """The ``T`` weights (float64) from the float64 ``(T, T)`` Gram matrix ``G G^T``.

        Computed on plain Python floats; see docs/weighting.md#imtl-g.
        """
        k = gram.tolist()
        count = len(k)
        norms = [math.sqrt(max(k[i][i], 0.0)) for i in range(count)]
        live = [i for i in range(count) if norms[i] > 0]
        alpha = [0.0] * count
        if len(live) == 1:
            alpha[live[0]] = 1.0
        elif len(live) > 1:
            first, others = live[0], live[1:]
            inv = {i: 1.0 / norms[i] for i in live}
            # G U^T restricted to the live rows: g_i . (u_1 - u_k) = Q_i1 / ||g_1|| - Q_ik / ||g_k||
            rows_u = {i: [k[i][first] * inv[first] - k[i][j] * inv[j] for j in others] for i in live}
            rhs = rows_u[first]  # g_1 U^T
            system = [[a - b for a, b in zip(rhs, rows_u[i])] for i in others]  # D U^T
            atol = self.TOLERANCE * max(norms[i] for i in live)
            rest = _times_pinv(rhs, system, atol, self.TOLERANCE)
            alpha[first] = 1.0 - sum(rest)
            for i, a in zip(others, rest):
                alpha[i] = a
        return len(live) * torch.tensor(alpha, dtype=torch.float64)

    def weights(self, matrix: torch.Tensor) -> torch.Tensor:
        """The ``T`` weights (float64, ``T * alpha`` on the non-zero rows, 0 on zero rows) with
        ``update = weights @ matrix``."""
        return self.weights_from_gram(gram_float64(matrix)[0])

    def __call__(self, matrix: torch.Tensor) -> torch.Tensor:
        gram, low = gram_float64(matrix)
        return combine(self.weights_from_gram(gram), matrix, low)
