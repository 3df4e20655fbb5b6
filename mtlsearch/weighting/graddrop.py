"""GradDrop: per coordinate, keep only one sign of the task gradients, drawn by sign purity."""

from __future__ import annotations

import torch

from .base import Aggregator, register
from .hyper import check_number


@register("graddrop")
class GradDrop(Aggregator):
    """Gradient Sign Dropout of Chen et al., "Just Pick a Sign: Optimizing Deep Multitask Models
    with Gradient Sign Dropout", NeurIPS 2020 (arXiv:2010.06808).

    Per coordinate p of the shared parameters, the sign purity of the task gradients is::

        P_p = 0.5 (1 + sum_i g_ip / sum_i |g_ip|)        (P = 1: all positive, 0: all negative)

    One ``U_p ~ Uniform[0, 1)`` is drawn per coordinate; the positive entries are kept where
    ``U_p < P_p`` and the negative ones where ``U_p >= P_p`` (so exactly one sign survives at every
    coordinate, the positive one with probability ``P_p``). The update mixes the masked sum with
    the plain sum through the leak ``l`` (the paper's per-task leak, one value for all tasks)::

        d = l sum_i g_i + (1 - l) sum_i M_i * g_i,   M_ip = [g_ip > 0][U_p < P_p] + [g_ip < 0][U_p >= P_p]

    Differences from the paper, on purpose:

    * The paper applies GradDrop at an activation layer (to gradients w.r.t. a shared feature map,
      batch-summed); here it is applied directly to the gradient matrix of the shared *parameters*,
      one draw per parameter coordinate.
    * The paper writes both conditions strictly (``P > U``, ``P < U``); the tie ``U = P`` is given
      to the negative sign, which only matters on a set of measure zero and makes the all-same-sign
      case exact (``P = 0`` keeps the negatives even when ``U = 0`` is drawn).

    A coordinate where every task's gradient is 0 has purity 0/0; it is set to 0.5 and the update
    there is 0. ``U`` comes from torch's global RNG on the matrix's device (reproducible under
    ``torch.manual_seed``). ``leak`` (default 0.0, in [0, 1]) is searchable; ``leak = 1`` is the
    plain sum.
    """

    label = "GradDrop"
    searchable = ("leak",)

    def __init__(self, leak: float = 0.0):
        self.leak = check_number(self.label, "leak", leak, low=0.0, high=1.0)

    def __call__(self, matrix: torch.Tensor) -> torch.Tensor:
        # One (T, P) buffer is reused for |g| and then for the kept entries; everything else is
        # P-sized. Only one sign survives per coordinate, so the masked sum is, with s = +1 where
        # the positive sign is kept and -1 elsewhere, s * sum_i max(s g_ip, 0): the same terms added
        # in the same order as sum_i M_ip g_ip (negation is exact), hence the same result.
        total = matrix.sum(dim=0)
        buffer = matrix.abs()
        magnitude = buffer.sum(dim=0)
        purity = (total / torch.where(magnitude > 0, magnitude, 1.0)).add_(1.0).mul_(0.5)
        u = torch.rand(matrix.shape[1], device=matrix.device, dtype=matrix.dtype)
        keep_positive = u < purity
        sign = u.fill_(-1.0).masked_fill_(keep_positive, 1.0)
        torch.mul(matrix, sign, out=buffer)
        dropped = buffer.clamp_(min=0).sum(dim=0).mul_(sign)
        if self.leak == 0.0:
            return dropped
        return self.leak * total + (1.0 - self.leak) * dropped
