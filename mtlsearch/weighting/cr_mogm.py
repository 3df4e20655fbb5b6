"""CR-MOGM: another aggregator's task weights, smoothed by a moving average across steps."""

from __future__ import annotations

from collections.abc import Callable

import torch

from .base import Aggregator, register
from .dualproj import dualproj_weights
from .fairgrad import fairgrad_coefficients
from .hyper import check_number, hyperparameter_error
from .pcgrad import combine, gram_float64
from .solvers import min_norm_weights
from .upgrad import upgrad_weights

_F64 = torch.float64

#: The aggregators whose update is ``c @ G`` for coefficients ``c`` of the Gram matrix, by name.
SMOOTHABLE: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "mgda": lambda gram: gram.shape[0] * min_norm_weights(gram),
    "upgrad": upgrad_weights,
    "dualproj": dualproj_weights,
    "fairgrad": lambda gram: fairgrad_coefficients(gram, 1.0),
}


@register("cr_mogm")
class CRMOGM(Aggregator):
    """CR-MOGM: the coefficients of a base aggregator, averaged over steps, ``c_k = alpha c_{k-1} +
    (1 - alpha) c_hat_k`` (``c_1 = c_hat_1``); the update is ``c_k @ G``.

    CR-MOGM (Zhou et al., NeurIPS 2022, "On the Convergence of Stochastic Multi-Objective Gradient
    Manipulation and Beyond"): the weight smoothing that makes stochastic MGDA-like methods
    converge. Its base is one of :data:`SMOOTHABLE` with its default hyperparameters.

    Args:
        base: the aggregator whose coefficients are smoothed (default ``mgda``; searchable).
        alpha: the weight of the previous coefficients, in [0, 1] (default 0.9; 0 is the base
            itself; searchable).

    Returns the ``(P,)`` update in the input's dtype. State: the smoothed coefficients and the step
    count. See docs/weighting.md#cr-mogm.

    .. note::
        The paper lets ``alpha`` grow towards 1 as the learning rate decays; here it is constant,
        as in torchjd's ``CRMOGMWeighting``. The base's scale is kept (sum-scale for every base).
    """

    label = "CR-MOGM"
    searchable = ("base", "alpha")

    def __init__(self, base: str = "mgda", alpha: float = 0.9):
        if base not in SMOOTHABLE:
            raise hyperparameter_error(self.label, "base", f"one of {', '.join(SMOOTHABLE)}", base)
        self.base = base
        self.alpha = check_number(self.label, "alpha", alpha, low=0.0, high=1.0)
        self.coefficients: torch.Tensor | None = None
        self.steps = 0

    def __call__(self, matrix: torch.Tensor) -> torch.Tensor:
        gram, low = gram_float64(matrix)
        fresh = SMOOTHABLE[self.base](gram).to(_F64)
        if self.coefficients is None:
            self.coefficients = fresh
        elif self.coefficients.numel() != fresh.numel():
            raise ValueError(
                f"CR-MOGM: this instance weighs {self.coefficients.numel()} tasks, got a matrix of {fresh.numel()} rows"
            )
        else:
            self.coefficients = self.alpha * self.coefficients + (1.0 - self.alpha) * fresh
        self.steps += 1
        return combine(self.coefficients, matrix, low)
