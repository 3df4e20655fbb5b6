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

    Clearly non-singular systems (``sigma_min >= 1 / ||system^-1||_F`` at least ``1e4`` times
    above the cut-off, ``sigma_max <= ||system||_F``) are inverted directly: no singular value is cut
    and the pseudo-inverse is the inverse. The others go through one SVD."""
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
    """The gradient part of Impartial Multi-Task Learning, Liu et al., "Towards Impartial
    Multi-task Learning", ICLR 2021.

    IMTL-G looks for ``d = sum_i alpha_i g_i`` with ``sum_i alpha_i = 1`` whose projections onto
    the unit task gradients ``u_i = g_i / ||g_i||`` are all equal, ``d . u_1 = d . u_i``. With
    ``D`` the ``(T-1, P)`` matrix of rows ``g_1 - g_i`` and ``U`` that of rows ``u_1 - u_i``
    (i = 2..T), the closed form is::

        alpha_{2..T} = g_1 U^T (D U^T)^{-1},   alpha_1 = 1 - sum_{i>=2} alpha_i

    Scale convention: the update is ``T * sum_i alpha_i g_i`` (weights summing to T rather than
    1; T counts the non-zero rows, see below), so that, like every aggregator here, gradients that
    do not conflict (identical rows) give the plain sum of task gradients, as equal weighting
    would; the paper's ``sum alpha = 1`` is only a rescaling of the learning rate. No
    hyperparameters.

    Singular cases and fallback, so the result is always finite:

    * Zero rows have no direction; they are left out (weight 0) and the closed form, scale
      included, runs on the remaining rows, the first of them playing ``g_1``. One non-zero row:
      that row (the plain sum). All rows zero: zeros.
    * ``D U^T`` is singular when two rows point the same way (equal or parallel rows: ``U`` has a
      zero row) and can be ill-conditioned when rows nearly coincide. It is inverted with a
      pseudo-inverse (``torch.linalg.pinv``'s rule, from one SVD) whose singular values below
      ``1e-12 * max_i ||g_i||`` (``D U^T`` scales like the gradients) or ``1e-12`` times the
      largest are treated as 0: the minimum-norm ``alpha`` is used. Equal rows then give their
      plain sum (``[g, g]`` -> ``2 g``) and two exactly opposite rows, of any norms, give 0.

    Computed on the ``T x T`` Gram matrix ``Q = G G^T`` only (formed in the input dtype, see
    :func:`~mtlsearch.weighting.pcgrad.gram_float64`; the rest in float64): ``||g_i|| =
    sqrt(Q_ii)``, and since the rows of ``D`` and ``U`` are combinations of the ``g_i``,
    ``G U^T`` has entries ``Q_i1 / ||g_1|| - Q_ik / ||g_k||``, ``g_1 U^T`` is its first row and
    ``D U^T`` its first row minus each other row. The update ``T alpha^T G`` is formed in float32
    when the Gram matrix was, else in float64.
    """

    label = "IMTL-G"
    TOLERANCE = 1e-12

    def __init__(self):
        pass

    def weights_from_gram(self, gram: torch.Tensor) -> torch.Tensor:
        """The ``T`` weights (float64) from the float64 ``(T, T)`` Gram matrix ``G G^T``.

        Plain Python floats on the small matrices (float64 arithmetic, like tensors, without the
        per-operation overhead); the pseudo-inverse of ``D U^T`` keeps the singular values above
        ``max(atol, rtol * sigma_max)``, as ``torch.linalg.pinv(system, atol=..., rtol=...)`` does.
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
