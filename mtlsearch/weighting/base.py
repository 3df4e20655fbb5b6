"""The two extension points of how tasks are balanced in a training step.

A **weighting** decides how much each task's *loss* counts: it returns per-task weights and the
trainer applies them, ``total = sum_t w_t * L_t (+ regularizer())``, then runs one backward pass.

An **aggregator** combines the per-task *gradients* of the parameters that several tasks share: it
is a function of the ``(T, P)`` matrix whose row t is task t's gradient, returning the ``(P,)``
update. The trainer builds that matrix once per step and only for shared parameters, grouped by the
set of tasks that use them (for a tree: per node, with the tasks that pass through it); parameters
used by one task keep that task's own gradient. Each group has its own aggregator instance, so a
method's state (GradVac's targets, Nash-MTL's last weights) is kept per group.

No trainer code branches on a method's name: it dispatches on these two types.

Contract of :class:`Weighting` (an ``nn.Module``, so learnable weightings keep their parameters and
state in the optimizer and in checkpoints):

* ``__init__(tasks, **hyperparameters)`` validates its hyperparameters (raising
  :class:`~mtlsearch.errors.ConfigError`, see :func:`~mtlsearch.weighting.hyper.hyperparameter_error`)
  and shows them in ``repr``.
* ``forward(losses, context)``: ``losses`` is the 1-D tensor of the T task losses of one step (in
  task order, still in the graph); returns T weights on the same device and dtype. The trainer
  treats the weights as constants unless the method keeps them in the graph on purpose. It may
  update its own state (a loss history) and may set ``.grad`` of its own parameters (GradNorm),
  but must not call ``backward``. ``context`` (:class:`StepContext`) gives the parameters each task
  uses, the deepest feature shared by all tasks and the unstacked losses, for methods that need
  gradients: differentiate ``context.loss_of(losses, t)``, not ``losses[t]``.
* ``regularizer()``: a tensor added to the weighted loss, or the float 0.0 for none.

Contract of :class:`Aggregator` (a plain object, not a module: it has no learnable parameters):

* ``__init__(**hyperparameters)`` validated as above, shown in ``repr``.
* ``__call__(matrix)``: ``matrix`` is a ``(T, P)`` tensor, T >= 2; returns a ``(P,)`` tensor on
  the same device and dtype. Deterministic given its state and ``torch``'s RNG; never NaN for
  finite input (zero and exactly opposite rows included).

Both kinds read their searchable hyperparameters from ``search_space.<method>`` (trial parameters
``<method>.<name>``; see :class:`~mtlsearch.weighting.hyper.Searchable`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..config import ParamSpec
from ..registry import Registry
from .hyper import Searchable


@dataclass
class StepContext:
    """What a weighting may need besides the losses.

    ``task_parameters[t]``: the parameters task t's output depends on. ``shared_parameters``: those
    used by two or more tasks (empty when nothing is shared). ``shared_feature``: the output of the
    deepest block that every task passes through, in the graph (``None`` when there is none).
    ``task_losses``: this step's T losses before they were stacked (empty when not given).
    """

    task_parameters: dict[str, list[nn.Parameter]] = field(default_factory=dict)
    shared_parameters: list[nn.Parameter] = field(default_factory=list)
    shared_feature: torch.Tensor | None = None
    task_losses: list[torch.Tensor] = field(default_factory=list)

    def loss_of(self, losses: torch.Tensor, i: int) -> torch.Tensor:
        """Task ``i``'s loss to differentiate (:func:`own_loss`)."""
        return own_loss(losses, self.task_losses, i)


def own_loss(losses: torch.Tensor, task_losses: Sequence[torch.Tensor], i: int) -> torch.Tensor:
    """Task ``i``'s own loss, from before stacking, when the T of them are given; else ``losses[i]``.
    A gradient pass from ``losses[i]`` gives the same gradient but also runs through every other
    task's head and branch (the stack's backward hands each of them a zero)."""
    return task_losses[i] if len(task_losses) == len(losses) else losses[i]


class Weighting(Searchable, nn.Module, ABC):
    """Base of every loss weighting (see the module docstring for the contract)."""

    def __init__(self, tasks: Sequence[str]):
        super().__init__()
        self.tasks = list(tasks)

    @abstractmethod
    def forward(self, losses: torch.Tensor, context: StepContext | None = None) -> torch.Tensor: ...

    def regularizer(self) -> torch.Tensor | float:
        return 0.0

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.hyperparameters().items())

    @classmethod
    def _probe(cls, **hyperparameters: Any) -> Weighting:
        return cls(["task_a", "task_b"], **hyperparameters)

    @classmethod
    def sample(cls, trial: Any, space: Mapping[str, ParamSpec], tasks: Sequence[str]) -> Weighting:
        return cls(tasks, **cls.suggest_hyperparameters(trial, space))


class Aggregator(Searchable, ABC):
    """Base of every gradient aggregator (see the module docstring for the contract)."""

    @abstractmethod
    def __call__(self, matrix: torch.Tensor) -> torch.Tensor: ...

    @classmethod
    def sample(cls, trial: Any, space: Mapping[str, ParamSpec], tasks: Sequence[str]) -> Aggregator:
        return cls(**cls.suggest_hyperparameters(trial, space))

    def state_dict(self) -> dict[str, Any]:
        """The state an aggregator carries between steps (GradVac's targets, Nash-MTL's warm
        start...): every attribute that is not a hyperparameter. Values are tensors, numbers,
        booleans or ``None``, so a checkpoint loads with ``torch.load(weights_only=True)``."""
        hyper = self.hyperparameters()
        return {k: v for k, v in vars(self).items() if k not in hyper}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        vars(self).update(state)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.hyperparameters().items())})"


Method = Weighting | Aggregator

WEIGHTINGS: Registry[type[Weighting]] = Registry("weighting")
AGGREGATORS: Registry[type[Aggregator]] = Registry("aggregator")
METHODS: Registry[type[Weighting] | type[Aggregator]] = Registry("weighting or aggregation method")


def register(name: str):
    """Register a weighting or an aggregator under ``name`` (one namespace for the search space)."""

    def decorator(cls):
        (AGGREGATORS if issubclass(cls, Aggregator) else WEIGHTINGS).register(name)(cls)
        METHODS.register(name)(cls)
        return cls

    return decorator
