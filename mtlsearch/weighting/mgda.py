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
    """``G G^T`` in float64 on the CPU (:func:`~mtlsearch.weighting.solvers.gram_matrix`: formed in
    the input's dtype on its device); with ``normalize`` the rows are then scaled to unit norm
    (zero rows stay zero)."""
    gram = gram_matrix(matrix)
    if normalize:
        norms = gram.diagonal().clamp(min=0).sqrt()
        inv = torch.where(norms > 0, 1.0 / norms.clamp(min=torch.finfo(torch.float64).tiny), torch.zeros_like(norms))
        gram = gram * inv[:, None] * inv[None, :]
    return gram


@register("mgda")
class MGDA(Aggregator):
    r"""MGDA: Désidéri, "Multiple-gradient descent algorithm (MGDA) for multiobjective
    optimization", C. R. Math. 2012; Sener & Koltun, "Multi-Task Learning as Multi-Objective
    Optimization", NeurIPS 2018 (arXiv:1810.04650).

    The update is the min-norm point of the convex hull of the task gradients ``g_1..g_T`` (the
    rows of ``G``)::

        w* = argmin_{w >= 0, sum w = 1} || sum_t w_t g_t ||^2 = argmin w^T (G G^T) w
        update = T * G^T w*

    Its negative is a common descent direction for every task (``g_t . update >= ||update||^2 / T``
    for all t), or zero at a Pareto-stationary point (zero in the hull: e.g. a zero row or two
    exactly opposite rows). ``w*`` is computed exactly (to rounding) by the solvers of
    :mod:`~mtlsearch.weighting.solvers` (enumeration of the supports for small T, else active
    set) in float64 on the Gram matrix, not by the early-stopped Frank-Wolfe loop of the
    reference code (see ``ENGINES.md``); for T = 2 this is the paper's closed form
    ``w_1 = clip((g_2 - g_1) . g_2 / ||g_1 - g_2||^2, 0, 1)``. The Gram matrix is formed in the
    input's dtype on its device (:func:`~mtlsearch.weighting.solvers.gram_matrix`; float64 for
    degenerate float32 inputs) and the weights are applied in the input's dtype.

    **Scale**: the paper's point has weights summing to 1 (a mean); it is multiplied by T so that,
    like equal weighting (the *sum* of the task gradients), T identical rows ``g`` give ``T g``.

    ``normalize`` (default false; searchable as a choice): when true, the weights are computed from
    the rows scaled to unit norm (``g_t / ||g_t||``, zero rows left zero) and then applied to the
    *original* rows, ``update = T * sum_t w_t g_t``, as in the authors' code where the gradient
    normalisation only enters the solver ("l2" normaliser).

    When the minimiser is not unique (linearly dependent rows) the update is still unique; the
    weights are those reached from the barycentre (equal rows keep equal weights).
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
    r"""MGDA-UB (Sener & Koltun, NeurIPS 2018, arXiv:1810.04650, Section 3.3): MGDA's weights
    computed from the gradients of the task losses with respect to the shared *representation*
    ``Z`` instead of the shared parameters, which minimises an upper bound of the MGDA objective
    (``||sum_t w_t grad_theta L_t|| <= ||dZ/dtheta|| ||sum_t w_t grad_Z L_t||``) at the cost of
    one backward pass per task through the heads only.

    Each step: ``J[t] = dL_t / dZ`` flattened (``Z`` = ``context.shared_feature``, the output of
    the deepest block every task passes through, batch included, so ``J`` is ``(T, N * D)``),
    ``w* = argmin_{w in simplex} w^T (J J^T) w`` (exactly, :mod:`~mtlsearch.weighting.solvers`),
    and the returned loss weights are ``T * w*`` (detached; they sum to T, so equal gradients give
    weights 1, the scale of equal weighting).

    ``normalize`` as in :class:`MGDA` (rows scaled to unit norm for the solver only).

    Fallback: when there is no context, no shared feature (no block is shared by every task), or
    the losses are not in the graph, every weight is 1 (equal weighting). A task whose loss does
    not depend on ``Z`` has a zero row, which makes the min-norm point zero: its weight is then T
    and the others 0 (MGDA's answer at a Pareto-stationary point).
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
            (grad,) = torch.autograd.grad(losses[t], feature, retain_graph=True, allow_unused=True)
            rows.append(
                torch.zeros(feature.numel(), device=feature.device, dtype=feature.dtype)
                if grad is None
                else grad.reshape(-1)
            )
        w = min_norm_weights(_gram(torch.stack(rows), self.normalize))
        return (losses.numel() * w).to(device=losses.device, dtype=losses.dtype)
