"""GREAT: gradient adversarial training, as a training strategy."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .hyper import check_number
from .strategy import STRATEGIES, TrainingStrategy


def gradient_features(grads: Sequence[torch.Tensor]) -> torch.Tensor:
    """The adversary's inputs: each task's per-sample gradient of the shared feature, pooled over
    space for image features (``(N, C, H, W)`` -> ``(N, C)``), flattened otherwise, and divided by
    its norm, stacked task after task: ``(T * N, D)``."""
    rows = []
    for g in grads:
        g = g.mean(dim=(2, 3)) if g.dim() == 4 else g.flatten(1)
        rows.append(g / g.norm(dim=1, keepdim=True).clamp_min(1e-12))
    return torch.cat(rows)


@STRATEGIES.register("great")
class GREAT(TrainingStrategy):
    """GREAT: an adversary learns which task a gradient of the shared feature came from; the
    network is trained so that it cannot tell.

    GREAT (Sinha, Chen, Badrinarayanan & Rabinovich, 2018, arXiv:1806.08028, Section 3.2 for
    multi-task learning). Per batch, the gradients ``g_t = dL_t / dh`` of the shared feature ``h``
    (kept in the graph) are pooled per sample, normalised and classified by the adversary, an MLP
    ``D``, with the task index as the label: cross-entropy ``L_adv``. ``D`` takes an Adam step on
    ``L_adv`` (learning rate ``lr``); the network's objective gets ``-lam * L_adv``, the gradient
    reversal, whose gradient runs through the per-task gradients (double back-propagation).

    Args:
        lam: the weight of the reversed adversarial loss, >= 0 (default 0.1; searchable).
        lr: the adversary's Adam learning rate, > 0 (default 1e-3; searchable).
        hidden: the adversary's hidden width, an integer >= 1 (default 32).

    Without a feature shared by every task (a tree that splits at its first block), it does
    nothing. See docs/weighting.md#great.

    .. note::
        The paper's adversary sees the full gradient tensor and its network a task-specific
        auxiliary loss per application; here the adversary sees the spatially pooled, normalised
        per-sample gradient, so that its size does not depend on the image size.
    """

    label = "GREAT"
    searchable = ("lam", "lr")

    def __init__(self, tasks: Sequence[str], lam: float = 0.1, lr: float = 1e-3, hidden: int = 32):
        super().__init__(tasks)
        self.lam = check_number(self.label, "lam", lam, low=0.0)
        self.lr = check_number(self.label, "lr", lr, low=0.0, low_open=True)
        self.hidden = check_number(self.label, "hidden", hidden, low=1, integer=True)
        self.adversary: nn.Module | None = None
        self.optimizer: torch.optim.Optimizer | None = None
        self._grads: list[torch.Tensor] | None = None
        self.last_adversary_loss = float("nan")

    def setup(self, feature_shape: tuple[int, ...] | None, device: torch.device) -> None:
        if feature_shape is None:
            return
        width = feature_shape[0] if len(feature_shape) == 3 else int(torch.Size(feature_shape).numel())
        self.adversary = nn.Sequential(
            nn.Linear(width, self.hidden), nn.ReLU(), nn.Linear(self.hidden, len(self.tasks))
        ).to(device)
        self.optimizer = torch.optim.Adam(self.adversary.parameters(), lr=self.lr)

    def loss(self, losses: torch.Tensor, feature: torch.Tensor | None) -> torch.Tensor | float:
        if self.adversary is None or feature is None or not feature.requires_grad:
            return 0.0
        count = len(self.tasks)
        grads = [torch.autograd.grad(self.loss_of(losses, t), feature, create_graph=True)[0] for t in range(count)]
        inputs = gradient_features(grads)
        labels = torch.arange(count, device=inputs.device).repeat_interleave(feature.shape[0])
        adversary_loss = F.cross_entropy(self.adversary(inputs), labels)
        params = list(self.adversary.parameters())
        self._grads = [g.detach() for g in torch.autograd.grad(adversary_loss, params, retain_graph=True)]
        self.last_adversary_loss = float(adversary_loss.detach())
        return -self.lam * adversary_loss

    def after_backward(self) -> None:
        if self.adversary is None or self.optimizer is None or self._grads is None:
            return
        for p, g in zip(self.adversary.parameters(), self._grads):
            p.grad = g  # its own gradient of L_adv, not the reversed one the network's backward left
        self.optimizer.step()
        self._grads = None

    def checkpoint_state(self) -> dict[str, Any]:
        if self.adversary is None or self.optimizer is None:
            return {}
        return {"adversary": self.adversary.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_checkpoint_state(self, state: Mapping[str, Any]) -> None:
        if self.adversary is not None and self.optimizer is not None and state:
            self.adversary.load_state_dict(state["adversary"])
            self.optimizer.load_state_dict(state["optimizer"])
