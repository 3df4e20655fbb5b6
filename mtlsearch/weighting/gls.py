"""GLS: the geometric mean of the task losses."""

from __future__ import annotations

import torch

from .base import Weighting, register

EPS = 1e-8


def gls_weights(losses: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """``d(T G) / dL_t = G / (L_t + eps)`` with ``G = prod_s (L_s + eps)^(1/T)``, computed in log
    space (negative losses count as 0); detached, in the losses' dtype."""
    logs = torch.log(losses.detach().clamp(min=0) + eps)
    return torch.exp(logs.mean() - logs)


@register("gls")
class GLS(Weighting):
    """GLS: ``total = T (prod_t L_t)^(1/T)``, the geometric mean of the losses.

    Geometric Loss Strategy (Chennupati et al., "MultiNet++", CVPR Workshops 2019,
    arXiv:1904.08492). The weights ``G / L_t`` (``G`` the geometric mean) are detached, so the
    trainer's ``sum_t w_t L_t`` has the gradient of ``T G``; equal losses give weight 1 each. No
    hyperparameters.

    Returns T weights. See docs/weighting.md#gls.

    .. note::
        The paper minimises ``G``; here ``T G``, the scale of equal weighting (only the learning
        rate changes). Every loss is shifted by 1e-8, so a zero loss gives finite weights.
    """

    label = "GLS"

    def forward(self, losses, context=None):
        return gls_weights(losses)
