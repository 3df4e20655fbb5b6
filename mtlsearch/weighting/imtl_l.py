"""IMTL-L: the loss-balance half of Impartial Multi-Task Learning."""

from __future__ import annotations

import torch
from torch import nn

from .base import Weighting, register


@register("imtl_l")
class IMTLL(Weighting):
    """IMTL-L: ``total = sum_t exp(s_t) L_t - s_t`` with a learned ``s_t``, balancing the losses.

    IMTL-L, the loss half of Impartial Multi-Task Learning (Liu et al., 2021, ICLR). ``s_t`` is an
    ``nn.Parameter`` (initialised to 0, trained by the network's optimizer); at the optimum every
    scaled loss ``exp(s_t) L_t`` is 1. ``forward`` returns ``exp(s)`` in the graph and
    :meth:`regularizer` returns ``-sum_t s_t``. No hyperparameters; the gradient half is
    ``imtl_g``.

    Returns T weights. See docs/weighting.md#imtl-l.
    """

    label = "IMTL-L"

    def __init__(self, tasks):
        super().__init__(tasks)
        self.scales = nn.Parameter(torch.zeros(len(self.tasks)))

    def forward(self, losses, context=None):
        return torch.exp(self.scales).to(device=losses.device, dtype=losses.dtype)

    def regularizer(self):
        return -self.scales.sum()
