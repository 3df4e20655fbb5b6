"""IMTL-L: the loss-balance half of Impartial Multi-Task Learning."""

from __future__ import annotations

import torch
from torch import nn

from .base import Weighting, register


@register("imtl_l")
class IMTLL(Weighting):
    """IMTL-L of Liu et al., "Towards Impartial Multi-task Learning", ICLR 2021.

    Each task t has a learned scale parameter ``s_t`` (an ``nn.Parameter``, initialised to 0,
    trained by the same optimizer as the network); the raw loss is scaled by ``exp(s_t)`` and
    ``s_t`` is subtracted::

        total = sum_t exp(s_t) * L_t - s_t

    Minimising over ``s_t`` gives ``exp(s_t) L_t = 1``: every scaled loss is driven to the same
    value, so no task dominates by the scale of its loss (the paper's loss-balance condition);
    the network receives ``exp(s_t) grad L_t``. The gradient-balance half (IMTL-G) is the
    separate aggregator ``imtl_g``.

    ``forward`` returns ``exp(s)`` *in the graph* (so the weighted loss trains ``s``), and
    :meth:`regularizer` returns ``-sum_t s_t``. There are no hyperparameters.

    Note: a task whose loss stays exactly 0 keeps pushing its ``s_t`` up (the gradient is -1),
    so its weight grows without bound over very long runs; the product ``exp(s_t) L_t`` stays 0.
    """

    label = "IMTL-L"

    def __init__(self, tasks):
        super().__init__(tasks)
        self.scales = nn.Parameter(torch.zeros(len(self.tasks)))

    def forward(self, losses, context=None):
        return torch.exp(self.scales).to(device=losses.device, dtype=losses.dtype)

    def regularizer(self):
        return -self.scales.sum()
