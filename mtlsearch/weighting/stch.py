"""STCH: smooth Tchebycheff scalarization of the (log, normalised) task losses."""

from __future__ import annotations

from typing import Any

import torch

from .base import Weighting, register
from .hyper import check_number

EPS = 1e-8


def stch_weights(losses: torch.Tensor, reference: torch.Tensor, mu: float, eps: float = EPS) -> torch.Tensor:
    """``d/dL_t`` of ``T mu log sum_s exp(l_s / mu)`` with ``l_s = log((L_s + eps) / (n_s + eps))``:
    ``T softmax(l / mu)_t / (L_t + eps)``. ``reference`` is ``n``; detached, in the losses' dtype."""
    current = losses.detach().clamp(min=0) + eps
    logs = torch.log(current) - torch.log(reference.to(current).clamp(min=0) + eps)
    return losses.shape[0] * torch.softmax(logs / mu, dim=0) / current


@register("stch")
class STCH(Weighting):
    """STCH: ``total = T mu log sum_t exp(log(L_t / n_t) / mu)``, a smooth maximum of the losses.

    Smooth Tchebycheff scalarization (Lin et al., ICML 2024, arXiv:2402.19078), applied as in its
    multi-task experiments to the log losses, each measured from a reference point ``n_t``: the
    mean of ``L_t`` over the first ``warmup`` steps, during which the sum of the log losses is
    minimised. The weights are the detached derivatives of ``total``; uniform preferences.

    Args:
        mu: smoothing, > 0 (default 1.0; searchable); ``mu -> 0`` is the Tchebycheff (max)
            scalarization, a large ``mu`` the sum of the log losses.
        warmup: steps that estimate the reference point, an integer >= 0 (default 20;
            searchable); 0 takes ``n_t = 1``.

    Returns T weights. See docs/weighting.md#stch.
    """

    label = "STCH"
    searchable = ("mu", "warmup")

    def __init__(self, tasks, mu: float = 1.0, warmup: int = 20):
        super().__init__(tasks)
        self.mu = check_number(self.label, "mu", mu, low=0, low_open=True)
        self.warmup = check_number(self.label, "warmup", warmup, low=0, integer=True)
        self.steps = 0
        self.register_buffer("loss_sum", torch.zeros(len(self.tasks)))
        self.register_buffer("reference", torch.ones(len(self.tasks)))

    def forward(self, losses, context=None):
        if self.steps < self.warmup:
            self.steps += 1
            with torch.no_grad():
                self.loss_sum += losses.detach().to(self.loss_sum)
                if self.steps == self.warmup:
                    self.reference.copy_(self.loss_sum / self.warmup)
            return 1.0 / (losses.detach().clamp(min=0) + EPS)  # the sum of the log losses
        self.steps += 1
        return stch_weights(losses, self.reference, self.mu)

    def get_extra_state(self) -> Any:
        return {"steps": self.steps}

    def set_extra_state(self, state: Any) -> None:
        self.steps = int(state["steps"])
