"""Random Loss Weighting: fresh random task weights at every step."""

from __future__ import annotations

import torch

from .base import Weighting, register
from .hyper import hyperparameter_error


@register("rlw")
class RLW(Weighting):
    """Random Loss Weighting of Lin et al., "Reasonable Effectiveness of Random Weighting: A Litmus
    Test for Multi-Task Learning", TMLR 2022 (arXiv:2111.10603).

    At every step new weights are drawn and normalised onto the simplex:

    * ``distribution="normal"`` (the default; the paper's main variant):
      ``z ~ N(0, I_T)``, ``lambda = softmax(z)``;
    * ``distribution="dirichlet"``: ``lambda ~ Dirichlet(1, ..., 1)`` (uniform on the simplex).

    The returned weights are ``T * lambda``: they sum to T like equal weighting, so switching
    between the two does not change the effective learning rate (the paper uses ``lambda`` itself;
    the factor T is only a rescaling of the total loss). Draws come from torch's global RNG on the
    losses' device, so a run is reproducible under ``torch.manual_seed``. The weights are constants
    (detached). ``distribution`` is searchable (``rlw: {distribution: [normal, dirichlet]}``).
    """

    label = "RLW"
    searchable = ("distribution",)
    DISTRIBUTIONS = ("normal", "dirichlet")

    def __init__(self, tasks, distribution: str = "normal"):
        super().__init__(tasks)
        if not isinstance(distribution, str) or distribution not in self.DISTRIBUTIONS:
            raise hyperparameter_error(self.label, "distribution", "one of `normal`, `dirichlet`", distribution)
        self.distribution = distribution

    def forward(self, losses, context=None):
        count = losses.shape[0]
        if self.distribution == "normal":
            z = torch.randn(count, device=losses.device, dtype=losses.dtype)
            simplex = torch.softmax(z, dim=0)
        else:
            concentration = torch.ones(count, device=losses.device, dtype=losses.dtype)
            simplex = torch.distributions.Dirichlet(concentration).sample()
        return count * simplex
