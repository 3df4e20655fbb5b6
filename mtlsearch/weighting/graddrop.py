"""GradDrop: per coordinate, keep only one sign of the task gradients, drawn by sign purity."""

from __future__ import annotations

import torch

from .base import Aggregator, register
from .hyper import check_number


@register("graddrop")
class GradDrop(Aggregator):
    """GradDrop: per coordinate, only one sign of the task gradients is kept, drawn by sign purity.

    GradDrop (Chen et al., 2020, arXiv:2010.06808). The positive entries of a coordinate survive
    with probability ``P = 0.5 (1 + sum_i g_i / sum_i |g_i|)``, else the negative ones; one draw
    from torch's global RNG per coordinate.

    Args:
        leak: the share of the plain sum mixed into the update, in [0, 1] (default 0.0;
            searchable); ``leak = 1`` is the plain sum.

    Returns the ``(P,)`` update in the input's dtype. See docs/weighting.md#graddrop.

    .. note::
        The paper drops gradients at an activation layer; here they are dropped on the gradient
        matrix of the shared parameters, one draw per parameter coordinate.
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
