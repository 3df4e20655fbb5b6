"""Random Loss Weighting: fresh random task weights at every step."""

from __future__ import annotations

import torch

from .base import Weighting, register
from .hyper import hyperparameter_error


@register("rlw")
class RLW(Weighting):
    """RLW: fresh random task weights at every step, ``T * softmax(z)`` with ``z ~ N(0, I)``.

    RLW (Lin et al., 2022, arXiv:2111.10603). The weights are detached, sum to T, and come from
    torch's global RNG on the losses' device (reproducible under ``torch.manual_seed``).

    Args:
        distribution: ``"normal"`` (default, the paper's main variant: ``softmax`` of a standard
            normal draw) or ``"dirichlet"`` (uniform on the simplex); searchable.

    Returns T weights. See docs/weighting.md#rlw.

    .. note::
        The paper uses the simplex weights themselves; here they are multiplied by T, the scale
        of equal weighting, which only rescales the total loss.
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
