"""Uncertainty weighting: each task's loss divided by a learned (homoscedastic) variance."""

from __future__ import annotations

import torch
from torch import nn

from .base import Weighting, register


@register("uncertainty")
class Uncertainty(Weighting):
    """Uncertainty weighting: ``total = sum_t exp(-s_t) L_t + s_t`` with a learned ``s_t``.

    Uncertainty weighting (Kendall, Gal & Cipolla, 2018, arXiv:1705.07115). ``s_t = log sigma_t^2``
    is an ``nn.Parameter`` (initialised to 0, trained by the network's optimizer); ``forward``
    returns ``exp(-s)`` in the graph and :meth:`regularizer` returns ``sum_t s_t``. No
    hyperparameters.

    Returns T weights. See docs/weighting.md#uncertainty.

    .. note::
        The paper has one form for regression and one for classification; every task uses the
        simplified form above, with the same minimiser ``exp(s_t) = L_t``.
    """

    label = "uncertainty weighting"

    def __init__(self, tasks):
        super().__init__(tasks)
        self.log_variances = nn.Parameter(torch.zeros(len(self.tasks)))

    def forward(self, losses, context=None):
        return torch.exp(-self.log_variances).to(device=losses.device, dtype=losses.dtype)

    def regularizer(self):
        return self.log_variances.sum()
