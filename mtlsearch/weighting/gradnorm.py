"""GradNorm: learned task weights that balance the gradient norms on the shared parameters."""

from __future__ import annotations

import torch
from torch import nn

from .base import Weighting, register
from .hyper import check_number


@register("gradnorm")
class GradNorm(Weighting):
    """GradNorm of Chen, Badrinarayanan, Lee & Rabinovich, "GradNorm: Gradient Normalization for
    Adaptive Loss Balancing in Deep Multitask Networks", ICML 2018 (arXiv:1711.02257).

    Learned weights ``w_t`` (an ``nn.Parameter``, initialised to 1). At each step, with ``W`` the
    shared parameters::

        G_t   = || grad_W (w_t L_t) ||                     (= w_t ||grad_W L_t||)
        r_t   = (L_t / L_t(0)) / mean_j (L_j / L_j(0))     (relative inverse training rate)
        L_grad = sum_t | G_t - mean_j(G_j) * r_t^alpha |    (the target is a constant)

    ``forward`` sets ``w.grad = dL_grad/dw`` (the optimizer of the network, which also holds ``w``,
    then steps it) and returns the current weights detached, so the network is trained on
    ``sum_t w_t L_t``. At the start of every ``forward`` the weights are renormalised in place so
    that ``sum_t w_t = T`` (after clamping at a tiny positive floor, so a step that pushed a weight
    below zero cannot flip a task's loss); the returned weights therefore always sum to T.

    Conventions of this implementation:

    * ``W`` is every parameter that *all* tasks share (those of ``context.shared_parameters`` that
      appear in every ``context.task_parameters[t]``; all of ``shared_parameters`` when no
      per-task lists are given), not only the last shared layer the paper suggests: it needs no
      knowledge of the architecture, and every ``G_t`` is a norm over the same parameters (in a
      tree, a node shared by only some tasks is left out). When no parameter is common to all
      tasks (single-task networks, trees that split at the first block), task t's norm is taken
      over its own parameters (``context.task_parameters[t]``) instead.
    * ``L_t(0)`` are the losses of the first ``forward`` call (stored in a buffer, so they are kept
      in checkpoints). A task whose initial loss is 0 gets ratio 1; when every ratio is 0 all
      ``r_t`` are 1.
    * As ``G_t = w_t ||grad_W L_t||`` with the target held constant, ``dL_grad/dw`` needs only the
      first-order gradients ``grad_W L_t`` (one ``torch.autograd.grad`` per task, keeping the graph
      for the trainer's backward), no double back-propagation.
    * ``w`` uses the network's optimizer and learning rate (the paper allows a separate one).

    ``alpha`` (>= 0, default 1.5, searchable) sets how strongly tasks that train more slowly are
    pushed up; ``alpha = 0`` asks for equal gradient norms.
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
            loss = losses[i]
            if not params or not loss.requires_grad:
                norms.append(losses.new_zeros(()))
                continue
            with torch.enable_grad():
                grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
            squares = [g.detach().pow(2).sum() for g in grads if g is not None]
            norms.append(torch.stack(squares).sum().sqrt().to(losses.dtype) if squares else losses.new_zeros(()))
        return torch.stack(norms)
