"""MGDA (an aggregator) and MGDA-UB (a loss weighting): the min-norm point of the task gradients."""

from __future__ import annotations

import torch

from .base import Aggregator, Weighting, register
from .hyper import hyperparameter_error
from .solvers import gram_matrix, min_norm_weights


def _check_normalize(owner: str, value) -> bool:
    if not isinstance(value, bool):
        raise hyperparameter_error(owner, "normalize", "true or false", value)
    return value


def _gram(matrix: torch.Tensor, normalize: bool) -> torch.Tensor:
    """``G G^T`` as float64 on the CPU; with ``normalize`` the rows are scaled to unit norm (zero rows
    stay zero)."""
    gram = gram_matrix(matrix)
    if normalize:
        norms = gram.diagonal().clamp(min=0).sqrt()
        inv = torch.where(norms > 0, 1.0 / norms.clamp(min=torch.finfo(torch.float64).tiny), torch.zeros_like(norms))
        gram = gram * inv[:, None] * inv[None, :]
    return gram


@register("mgda")
class MGDA(Aggregator):
    """MGDA: the min-norm point of the convex hull of the task gradients, times T.

    MGDA (Désidéri, 2012, C. R. Math.; Sener & Koltun, 2018, arXiv:1810.04650). ``w*`` is solved
    exactly (to rounding) on the Gram matrix in float64; the update is ``T * G^T w*``, a common
    descent direction for every task, or 0 at a Pareto-stationary point.

    Args:
        normalize: compute the weights from the rows scaled to unit norm, then apply them to the
            original rows (default false; searchable as a choice).

    Returns the ``(P,)`` update in the input's dtype. See docs/weighting.md#mgda.

    .. note::
        The paper's weights sum to 1 (a mean); here the update is T times that point, so T
        identical rows ``g`` give ``T g``, the scale of equal weighting.
    """

    label = "MGDA"
    searchable = ("normalize",)

    def __init__(self, normalize: bool = False):
        self.normalize = _check_normalize(self.label, normalize)

    def weights(self, matrix: torch.Tensor) -> torch.Tensor:
        """The min-norm weights ``w*`` (summing to 1), float64 on the CPU."""
        return min_norm_weights(_gram(matrix, self.normalize))

    def __call__(self, matrix: torch.Tensor) -> torch.Tensor:
        w = self.weights(matrix)
        coef = (matrix.shape[0] * w).to(device=matrix.device, dtype=matrix.dtype)
        return coef @ matrix


@register("mgda_ub")
class MGDAUB(Weighting):
    """MGDA-UB: MGDA's weights from the gradients with respect to the shared feature.

    MGDA-UB (Sener & Koltun, 2018, arXiv:1810.04650, Section 3.3). One backward pass per task
    through the heads to ``context.shared_feature``; the loss weights are ``T * w*`` (detached,
    summing to T). Without a shared feature, or with losses outside the graph, every weight is 1.

    Args:
        normalize: as in :class:`MGDA` (default false; searchable).

    Returns T weights. See docs/weighting.md#mgda-ub.
    """

    label = "MGDA-UB"
    searchable = ("normalize",)

    def __init__(self, tasks, normalize: bool = False):
        super().__init__(tasks)
        self.normalize = _check_normalize(self.label, normalize)

    def forward(self, losses, context=None):
        feature = None if context is None else context.shared_feature
        if feature is None or not losses.requires_grad or not feature.requires_grad:
            return torch.ones_like(losses).detach()
        rows = []
        for t in range(losses.numel()):
            (grad,) = torch.autograd.grad(context.loss_of(losses, t), feature, retain_graph=True, allow_unused=True)
            rows.append(
                torch.zeros(feature.numel(), device=feature.device, dtype=feature.dtype)
                if grad is None
                else grad.reshape(-1)
            )
        w = min_norm_weights(_gram(torch.stack(rows), self.normalize))
        return (losses.numel() * w).to(device=losses.device, dtype=losses.dtype)
