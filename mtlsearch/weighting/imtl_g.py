"""IMTL-G: the update whose projections onto every task's unit gradient are equal."""

from __future__ import annotations

import torch

from .base import Aggregator, register


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
      pseudo-inverse (``torch.linalg.pinv``) whose singular values below
      ``1e-12 * max_i ||g_i||`` (``D U^T`` scales like the gradients) or ``1e-12`` times the
      largest are treated as 0: the minimum-norm ``alpha`` is used. Equal rows then give their
      plain sum (``[g, g]`` -> ``2 g``) and two exactly opposite rows, of any norms, give 0.

    Computed in float64 and returned in the input dtype.
    """

    label = "IMTL-G"
    TOLERANCE = 1e-12

    def __init__(self):
        pass

    def weights(self, matrix: torch.Tensor) -> torch.Tensor:
        """The ``T`` weights (float64, ``T * alpha`` on the non-zero rows, 0 on zero rows) with
        ``update = weights @ matrix``."""
        g = matrix.to(torch.float64)
        count = g.shape[0]
        norms = g.norm(dim=1)
        alpha = torch.zeros(count, dtype=torch.float64, device=g.device)
        live = torch.nonzero(norms > 0).flatten()
        if live.numel() == 1:
            alpha[live] = 1.0
        elif live.numel() > 1:
            rows, n = g[live], norms[live]
            units = rows / n[:, None]
            d = rows[0] - rows[1:]
            u = units[0] - units[1:]
            system = d @ u.T
            rhs = rows[0] @ u.T
            inverse = torch.linalg.pinv(system, atol=self.TOLERANCE * float(n.max()), rtol=self.TOLERANCE)
            rest = rhs @ inverse
            alpha[live] = torch.cat([(1.0 - rest.sum()).reshape(1), rest])
        return live.numel() * alpha

    def __call__(self, matrix: torch.Tensor) -> torch.Tensor:
        return (self.weights(matrix) @ matrix.to(torch.float64)).to(matrix.dtype)
