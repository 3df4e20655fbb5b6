"""DB-MTL: log losses (loss-scale balancing) and max-norm gradient balancing."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .base import StepContext, Weighting, register
from .hyper import check_number

EPS = 1e-8


def max_norm_update(rows: torch.Tensor) -> torch.Tensor:
    """``sum_t (max_s ||r_s|| / ||r_t||) r_t`` over the non-zero rows of ``rows`` ``(T, P)``:
    every row rescaled to the largest norm, then summed; zeros for an all-zero matrix."""
    norms = torch.linalg.vector_norm(rows, dim=1)
    scale = torch.where(
        norms > 0, norms.max() / norms.clamp(min=torch.finfo(norms.dtype).tiny), torch.zeros_like(norms)
    )
    return scale @ rows


def ema_factor(beta: float, sigma: float, step: int) -> float:
    """The weight of the past in the moving average at ``step`` (1-based): ``beta / step^sigma``."""
    return beta / step**sigma


def shared_groups(context: StepContext, tasks: list[str]) -> dict[tuple[str, ...], list[nn.Parameter]]:
    """The shared parameters grouped by the tasks that use them (in task order), as the trainer
    groups them for an aggregator."""
    shared = {id(p) for p in context.shared_parameters}
    users: dict[int, list[str]] = {}
    by_id: dict[int, nn.Parameter] = {}
    for t in tasks:
        for p in context.task_parameters.get(t, []):
            if id(p) in shared and t not in users.get(id(p), []):
                users.setdefault(id(p), []).append(t)
                by_id[id(p)] = p
    groups: dict[tuple[str, ...], list[nn.Parameter]] = {}
    for pid, names in users.items():
        if len(names) > 1:
            groups.setdefault(tuple(names), []).append(by_id[pid])
    return groups


@register("db_mtl")
class DBMTL(Weighting):
    """DB-MTL: minimise ``sum_t log L_t``, with each shared group's update rescaled so that every
    task's (moving-average) gradient has the largest task's norm.

    Dual-Balancing Multi-Task Learning (Lin et al., 2023, arXiv:2308.12029). Loss-scale
    balancing: the weights are ``1 / L_t`` (detached), the gradient of ``log L_t``, so every
    parameter of one task gets ``grad log L_t``. Gradient-magnitude balancing: per group of shared
    parameters (as the aggregators' groups), with ``g_t = grad log L_t`` on the group, the moving
    average ``h_t <- b_k h_t + (1 - b_k) g_t`` (``h_t = g_t`` at the first step, ``b_k = beta /
    k^sigma`` at step k) gives the update ``sum_t (max_s ||h_s|| / ||h_t||) h_t``. That update
    replaces ``sum_t g_t`` through :meth:`regularizer`, a term of value 0 that is linear in the
    shared parameters. Needs a :class:`~mtlsearch.weighting.base.StepContext`; costs one
    ``autograd.grad`` per task, like an aggregator.

    Args:
        beta: weight of the past in the moving average, in [0, 1] (default 0.9; searchable);
            0 uses the current gradients only.
        sigma: decay of that weight with the step, ``beta / k^sigma``, >= 0 (default 0.5;
            searchable).

    Returns T weights. See docs/weighting.md#db-mtl.
    """

    label = "DB-MTL"
    searchable = ("beta", "sigma")

    def __init__(self, tasks, beta: float = 0.9, sigma: float = 0.5):
        super().__init__(tasks)
        self.beta = check_number(self.label, "beta", beta, low=0, high=1)
        self.sigma = check_number(self.label, "sigma", sigma, low=0)
        self.steps = 0
        self.averages: dict[str, torch.Tensor] = {}  # "a+b" -> (T_group, P_group) moving averages
        self._corrections: list[tuple[list[nn.Parameter], torch.Tensor]] = []

    def forward(self, losses, context=None):
        if context is None:
            raise ValueError("DB-MTL needs a StepContext with the parameters each task uses")
        shifted = losses.detach().clamp(min=0) + EPS
        weights = 1.0 / shifted
        self._corrections = []
        groups = shared_groups(context, self.tasks)
        if not groups:
            return weights
        self.steps += 1
        past = ema_factor(self.beta, self.sigma, self.steps) if self.steps > 1 else 0.0
        grads = self._log_loss_gradients(losses, shifted, groups, context)
        for users, params in groups.items():
            rows = torch.stack([torch.cat([grads[t][id(p)].reshape(-1) for p in params]) for t in users])
            key = "+".join(users)
            average = self.averages.get(key)
            if average is not None and average.shape == rows.shape:
                rows_avg = torch.lerp(rows, average.to(rows), past) if past else rows
            else:
                rows_avg = rows
            self.averages[key] = rows_avg
            correction = max_norm_update(rows_avg) - rows.sum(0)
            self._corrections.append((params, correction))
        return weights

    def _log_loss_gradients(
        self,
        losses: torch.Tensor,
        shifted: torch.Tensor,
        groups: dict[tuple[str, ...], list[nn.Parameter]],
        context: StepContext,
    ) -> dict[str, dict[int, torch.Tensor]]:
        """``grad log(L_t + eps) = grad L_t / (L_t + eps)`` on the shared parameters task t uses."""
        grads: dict[str, dict[int, torch.Tensor]] = {}
        for i, task in enumerate(self.tasks):
            params = list({id(p): p for users, ps in groups.items() if task in users for p in ps}.values())
            found: tuple[torch.Tensor | None, ...] = (None,) * len(params)
            if params and losses.requires_grad:
                with torch.enable_grad():
                    found = torch.autograd.grad(
                        context.loss_of(losses, i), params, retain_graph=True, allow_unused=True
                    )
            scale = 1.0 / shifted[i]
            grads[task] = {
                id(p): torch.zeros_like(p) if g is None else g.detach() * scale.to(g) for p, g in zip(params, found)
            }
        return grads

    def regularizer(self):
        """``sum <p - p.detach(), c>`` over the shared parameters: value 0, gradient ``c``, the
        balanced update minus the plain sum ``sum_t g_t`` that the weights already give."""
        terms = [
            ((p - p.detach()) * piece.view_as(p)).sum()
            for params, correction in self._corrections
            for p, piece in zip(params, correction.split([p.numel() for p in params]))
        ]
        return torch.stack(terms).sum() if terms else 0.0

    def get_extra_state(self) -> Any:
        return {"steps": self.steps, "averages": dict(self.averages)}

    def set_extra_state(self, state: Any) -> None:
        self.steps = int(state["steps"])
        self.averages = dict(state["averages"])
