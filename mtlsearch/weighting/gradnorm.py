"""GradNorm: learned task weights that balance the gradient norms on the shared parameters."""

from __future__ import annotations

import torch
from torch import nn

from .base import Weighting, register
from .hyper import check_number


@register("gradnorm")
class GradNorm(Weighting):
    """GradNorm: learned task weights that balance the gradient norms on the shared parameters.

    GradNorm (Chen et al., 2018, arXiv:1711.02257). ``forward`` sets the gradient of the learned
    weights (an ``nn.Parameter``, stepped by the network's optimizer) and returns them detached,
    renormalised to sum to T. Needs a :class:`~mtlsearch.weighting.base.StepContext`.

    Args:
        alpha: how strongly tasks that train more slowly are pushed up, >= 0 (default 1.5;
            searchable); ``alpha = 0`` asks for equal gradient norms.

    Returns T weights. See docs/weighting.md#gradnorm.

    .. note::
        The norms are taken over every parameter all tasks share, not only the last shared layer.
    """

    label = "GradNorm"
    searchable = ("alpha",)
    FLOOR = 1e-6

    def __init__(self, tasks, alpha: float = 1.5):
        super().__init__(tasks)
        self.alpha = check_number(self.label, "alpha", alpha, low=0)
        count = len(self.tasks)
        self.loss_weights = nn.Parameter(torch.ones(count))
        self.register_buffer("initial_losses", torch.full((count,), float("nan")))

    def forward(self, losses, context=None):
        if context is None:
            raise ValueError("GradNorm needs a StepContext with the parameters each task uses")
        w = self.loss_weights
        count = w.shape[0]
        with torch.no_grad():
            w.clamp_(min=self.FLOOR)
            w.mul_(count / w.sum())
        current = losses.detach().to(w)
        with torch.no_grad():  # remember L(0) on the first call, without reading the device
            self.initial_losses.copy_(torch.where(torch.isnan(self.initial_losses), current, self.initial_losses))
        norms = self._gradient_norms(losses, context).to(w)

        initial = self.initial_losses
        ratio = torch.where(
            initial > 0, current / initial.clamp(min=torch.finfo(initial.dtype).tiny), torch.ones_like(current)
        )
        mean_ratio = ratio.mean()
        relative = torch.where(
            mean_ratio > 0, ratio / mean_ratio.clamp(min=torch.finfo(ratio.dtype).tiny), torch.ones_like(ratio)
        )
        with torch.enable_grad():
            weights = w.detach().requires_grad_(True)
            g = weights * norms
            target = (g.mean() * relative.pow(self.alpha)).detach()
            (w.grad,) = torch.autograd.grad((g - target).abs().sum(), weights)
        return w.detach().to(device=losses.device, dtype=losses.dtype)

    def _gradient_norms(self, losses, context):
        """``||grad_W L_t||`` for every task (0 where a loss is not in the graph)."""
        shared = list(context.shared_parameters)
        if context.task_parameters:
            used = [{id(p) for p in context.task_parameters.get(t, [])} for t in self.tasks]
            shared = [p for p in shared if all(id(p) in ids for ids in used)]
        norms = []
        for i, task in enumerate(self.tasks):
            params = shared or list(context.task_parameters.get(task, []))
            loss = context.loss_of(losses, i)
            if not params or not loss.requires_grad:
                norms.append(losses.new_zeros(()))
                continue
            with torch.enable_grad():
                grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
            squares = [g.detach().pow(2).sum() for g in grads if g is not None]
            norms.append(torch.stack(squares).sum().sqrt().to(losses.dtype) if squares else losses.new_zeros(()))
        return torch.stack(norms)
