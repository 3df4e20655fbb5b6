"""Uncertainty weighting: each task's loss divided by a learned (homoscedastic) variance."""

from __future__ import annotations

import torch
from torch import nn

from .base import Weighting, register


@register("uncertainty")
class Uncertainty(Weighting):
    """Homoscedastic-uncertainty weighting of Kendall, Gal & Cipolla, "Multi-Task Learning Using
    Uncertainty to Weigh Losses for Scene Geometry and Semantics", CVPR 2018 (arXiv:1705.07115).

    Each task t has a learned log-variance ``s_t = log sigma_t^2`` (an ``nn.Parameter``, initialised
    to 0, trained by the same optimizer as the network) and the total loss is::

        total = sum_t exp(-s_t) * L_t + s_t

    The paper derives ``1/(2 sigma^2) L + log sigma`` for a Gaussian likelihood (regression) and
    ``1/sigma^2 L + log sigma`` for a softmax one (classification). Here every task uses the common
    simplified form above, whatever its type: it differs from the regression case only by a constant
    factor 2 on the whole objective, and keeps the same minimiser ``exp(s_t) = L_t`` for each task.

    ``forward`` returns ``exp(-s)`` *in the graph* (so the weighted loss trains ``s``), and
    :meth:`regularizer` returns ``sum_t s_t``. There are no hyperparameters.

    Note: a task whose loss stays exactly 0 keeps pushing its ``s_t`` down (the gradient is 1),
    so its weight grows without bound over very long runs; the product ``exp(-s_t) L_t`` stays 0.
    """

    label = "uncertainty weighting"

    def __init__(self, tasks):
        super().__init__(tasks)
        self.log_variances = nn.Parameter(torch.zeros(len(self.tasks)))

    def forward(self, losses, context=None):
        return torch.exp(-self.log_variances).to(device=losses.device, dtype=losses.dtype)

    def regularizer(self):
        return self.log_variances.sum()
