"""FAMO: task weights from logits that learn how evenly the log losses fall."""

from __future__ import annotations

from typing import Any

import torch

from .base import Weighting, register
from .hyper import check_number

EPS = 1e-8
BETAS = (0.9, 0.999)  # Adam's, as in the authors' code
ADAM_EPS = 1e-8


def famo_weights(losses: torch.Tensor, logits: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """``T c_t`` with ``c_t = (z_t / (L_t + eps)) / sum_s z_s / (L_s + eps)``, ``z = softmax(logits)``:
    the gradient of ``sum_t z_t log(L_t + eps)`` normalised to sum to T. Detached."""
    scaled = torch.softmax(logits.to(losses), dim=0) / (losses.detach().clamp(min=0) + eps)
    return losses.shape[0] * scaled / scaled.sum()


def logit_gradient(logits: torch.Tensor, decrease: torch.Tensor) -> torch.Tensor:
    """``J^T delta`` for the softmax Jacobian ``J = diag(z) - z z^T`` at ``logits``:
    ``z * (delta - z . delta)``."""
    z = torch.softmax(logits, dim=0)
    return z * (decrease - (z * decrease).sum())


def adam_step(
    param: torch.Tensor, first: torch.Tensor, second: torch.Tensor, grad: torch.Tensor, step: int, lr: float
) -> None:
    """Step ``step`` (1-based) of Adam (Kingma & Ba, 2015) in place, as ``torch.optim.Adam``
    (betas 0.9 and 0.999, eps 1e-8; a weight decay is already in ``grad``)."""
    b1, b2 = BETAS
    first.mul_(b1).add_(grad, alpha=1 - b1)
    second.mul_(b2).addcmul_(grad, grad, value=1 - b2)
    param.sub_(lr * (first / (1 - b1**step)) / ((second / (1 - b2**step)).sqrt() + ADAM_EPS))


@register("famo")
class FAMO(Weighting):
    """FAMO: weights ``softmax(xi)_t / L_t`` (normalised), with logits ``xi`` learned from how fast
    each log loss falls, so that all fall at the same rate.

    FAMO (Liu et al., NeurIPS 2023, arXiv:2306.03792). At each step after the first, the
    decrease of the log losses since the previous step, ``delta_t = log L_t(prev) - log L_t(now)``,
    gives the logits the gradient ``J_softmax(xi)^T delta + decay * xi``, applied by an Adam step
    of size ``lr`` (as in the authors' code); the new logits then weigh this step. The weights are
    detached and sum to T; the logits and Adam's moments are buffers (checkpointed).

    Args:
        lr: step size of the logits, > 0 (default 0.025, the authors'; searchable).
        decay: the logits' L2 regularisation (the paper's gamma), >= 0 (default 0.001;
            searchable).

    Returns T weights. See docs/weighting.md#famo.

    .. note::
        The authors evaluate the loss decrease on the same batch, with one more forward pass
        after the update; here it is the change between two consecutive steps' batches, seen
        when the next losses arrive (no extra pass). The weights sum to T, not 1.
    """

    label = "FAMO"
    searchable = ("lr", "decay")

    def __init__(self, tasks, lr: float = 0.025, decay: float = 0.001):
        super().__init__(tasks)
        self.lr = check_number(self.label, "lr", lr, low=0, low_open=True)
        self.decay = check_number(self.label, "decay", decay, low=0)
        count = len(self.tasks)
        self.steps = 0  # Adam steps taken
        self.started = False  # previous_log_losses holds a step's losses
        self.register_buffer("logits", torch.zeros(count))
        self.register_buffer("first_moment", torch.zeros(count))
        self.register_buffer("second_moment", torch.zeros(count))
        self.register_buffer("previous_log_losses", torch.zeros(count))

    def forward(self, losses, context=None):
        with torch.no_grad():
            now = torch.log(losses.detach().clamp(min=0) + EPS).to(self.logits)
            if self.started:
                grad = logit_gradient(self.logits, self.previous_log_losses - now) + self.decay * self.logits
                self.steps += 1
                adam_step(self.logits, self.first_moment, self.second_moment, grad, self.steps, self.lr)
            self.previous_log_losses.copy_(now)
            self.started = True
        return famo_weights(losses, self.logits)

    def get_extra_state(self) -> Any:
        return {"steps": self.steps, "started": self.started}

    def set_extra_state(self, state: Any) -> None:
        self.steps, self.started = int(state["steps"]), bool(state["started"])
