"""ExcessMTL: task weights raised by each task's estimated excess risk (distance to convergence)."""

from __future__ import annotations

from typing import Any

import torch

from .base import Weighting, register
from .hyper import check_number

EPS = 1e-8


def excess_risk(grad: torch.Tensor, squares: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """``g^T diag(1 / sqrt(s + eps)) g``: the Taylor estimate of the excess risk, with the AdaGrad
    diagonal ``sqrt(s)`` (``s`` the sum of the squared gradients so far) standing for the Hessian."""
    return (grad * grad / (squares + eps).sqrt()).sum()


@register("excess_mtl")
class ExcessMTL(Weighting):
    """ExcessMTL: weights ``T softmax(eta sum_k r_t^k)``, ``r_t`` task t's excess-risk estimate
    relative to its first one, so tasks farther from convergence weigh more.

    ExcessMTL (He et al., ICML 2024, arXiv:2402.02009). At every step, with ``g_t`` task t's
    gradient on the shared parameters it uses and ``s_t`` the running sum of ``g_t^2``
    (coordinate-wise, this step included), the excess risk is estimated as
    ``e_t = g_t^T diag(s_t + eps)^(-1/2) g_t``; ``r_t = e_t / e_t^0`` with ``e_t^0`` the task's first
    non-zero estimate, and the weights follow the exponentiated-gradient update
    ``w_t <- w_t exp(eta r_t)``, renormalised to sum to T. The weights are detached; the sums and
    the weights are checkpointed. Needs a :class:`~mtlsearch.weighting.base.StepContext`; costs
    one ``autograd.grad`` per task.

    Args:
        step_size: ``eta``, the step of the exponentiated-gradient update, > 0 (default 0.01;
            searchable).

    Returns T weights. See docs/weighting.md#excessmtl.

    .. note::
        The weights sum to T, not 1 (the paper's simplex). The first estimate is the baseline,
        as in the authors' code (the paper's appendix also describes averaging over warm-up
        steps); a task whose gradient is still 0 keeps its weight until its first non-zero one.
    """

    label = "ExcessMTL"
    searchable = ("step_size",)

    def __init__(self, tasks, step_size: float = 0.01):
        super().__init__(tasks)
        self.step_size = check_number(self.label, "step_size", step_size, low=0, low_open=True)
        count = len(self.tasks)
        self.register_buffer("log_weights", torch.zeros(count))
        self.register_buffer("baseline", torch.zeros(count))
        self.squares: dict[str, torch.Tensor] = {}  # task -> running sum of its squared gradient

    def forward(self, losses, context=None):
        if context is None:
            raise ValueError("ExcessMTL needs a StepContext with the parameters each task uses")
        shared = {id(p) for p in context.shared_parameters}
        risks = []
        for i, task in enumerate(self.tasks):
            params = [p for p in context.task_parameters.get(task, []) if id(p) in shared]
            if not params:
                risks.append(losses.new_zeros(()))
                continue
            found = (None,) * len(params)
            if losses.requires_grad:
                with torch.enable_grad():
                    found = torch.autograd.grad(
                        context.loss_of(losses, i), params, retain_graph=True, allow_unused=True
                    )
            grad = torch.cat(
                [(torch.zeros_like(p) if g is None else g.detach()).reshape(-1) for p, g in zip(params, found)]
            )
            before = self.squares.get(task)
            squares = grad * grad if before is None or before.shape != grad.shape else before.to(grad) + grad * grad
            self.squares[task] = squares
            risks.append(excess_risk(grad, squares).to(losses.dtype))
        with torch.no_grad():
            risk = torch.stack(risks).to(self.baseline)
            new = (self.baseline == 0) & (risk > 0)
            self.baseline.copy_(torch.where(new, risk, self.baseline))
            known = (self.baseline > 0) & ~new
            ratio = torch.where(
                known, risk / self.baseline.clamp(min=torch.finfo(risk.dtype).tiny), torch.zeros_like(risk)
            )
            self.log_weights.add_(self.step_size * ratio)
            self.log_weights.sub_(self.log_weights.max())  # same softmax, bounded logits
        return len(self.tasks) * torch.softmax(self.log_weights.to(device=losses.device, dtype=losses.dtype), dim=0)

    def get_extra_state(self) -> Any:
        return {"squares": dict(self.squares)}

    def set_extra_state(self, state: Any) -> None:
        self.squares = dict(state["squares"])
