"""Training strategies: the third extension point of a training step, for methods that train
something besides the network (GREAT's adversarial network) and add a term to the step.

Contract of :class:`TrainingStrategy` (an ``nn.Module``: its auxiliary modules are its children):

* ``__init__(tasks, **hyperparameters)`` validates its hyperparameters (as weightings do) and shows
  them in ``repr``; it builds nothing that depends on the model.
* ``setup(feature_shape, device)``: called once by the trainer before the first step, with the
  per-sample shape of the model's shared feature (``None`` when the model has none); builds the
  auxiliary modules and their own optimizer. A strategy that needs a shared feature does nothing
  without one. A strategy that cannot train this candidate raises :class:`StrategyError` here
  (a search records it as the trial's ``fail_reason``).
* ``batch(inputs, outputs)``: called by the trainer with each batch's inputs and the model's
  ``{task: output}`` (in the graph) before ``loss``; the default ignores them.
* ``loss(losses, feature)``: the term added to the network's objective for this batch (a tensor
  in the graph of ``losses`` and ``feature``, or the float 0.0). It may compute, but must not
  apply, updates of its own modules: the network's backward pass still needs their current values.
  A strategy that differentiates each task's loss takes ``self.loss_of(losses, t)``, not
  ``losses[t]``: the trainer sets ``task_losses`` (the losses before stacking) around the call.
* ``after_backward()``: called after the network's backward pass and before its optimizer step;
  applies the strategy's own updates.
* ``checkpoint_state()`` / ``load_checkpoint_state(state)``: the auxiliary modules and optimizer
  state, saved in the per-epoch checkpoints (tensors and numbers only).
* ``needs_teachers``: True for a strategy that learns from the study's single-task networks
  (distillation); the trial gives them, with each task's type, through
  ``set_teachers({task: module}, {task: type})`` before training.

It composes with every weighting and aggregator: the trainer adds ``loss`` to the weighted sum of
the losses, or back-propagates it after the aggregated gradients are set, so its gradient is
added to theirs. Strategies are searched like weightings: ``search_space.strategies`` (trial
parameter ``strategy``) and a section per strategy for its hyperparameters.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import torch
from torch import nn

from ..config import ParamSpec
from ..errors import MTLSearchError
from ..registry import Registry
from .base import own_loss
from .hyper import Searchable


class StrategyError(MTLSearchError):
    """A strategy cannot train this candidate (raised by ``setup``); a search fails the trial."""


class TrainingStrategy(Searchable, nn.Module):
    """Base of every training strategy (see the module docstring for the contract); as a class of
    its own it is the strategy ``none``, which adds nothing."""

    #: False for a strategy that never changes a step (the trainer then skips its hooks).
    acts: ClassVar[bool] = True
    #: True for a strategy that needs the study's single-task networks (``set_teachers``).
    needs_teachers: ClassVar[bool] = False

    def __init__(self, tasks: Sequence[str]):
        super().__init__()
        self.tasks = list(tasks)
        self.task_losses: list[torch.Tensor] = []  # set by the trainer around ``loss``

    def loss_of(self, losses: torch.Tensor, i: int) -> torch.Tensor:
        """Task ``i``'s loss to differentiate (:func:`~mtlsearch.weighting.base.own_loss`)."""
        return own_loss(losses, self.task_losses, i)

    def setup(self, feature_shape: tuple[int, ...] | None, device: torch.device) -> None:
        pass

    def set_teachers(self, teachers: Mapping[str, nn.Module], task_types: Mapping[str, str]) -> None:
        pass

    def batch(self, inputs: torch.Tensor, outputs: Mapping[str, torch.Tensor]) -> None:
        pass

    def loss(self, losses: torch.Tensor, feature: torch.Tensor | None) -> torch.Tensor | float:
        return 0.0

    def after_backward(self) -> None:
        pass

    def checkpoint_state(self) -> dict[str, Any]:
        return {}

    def load_checkpoint_state(self, state: Mapping[str, Any]) -> None:
        pass

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.hyperparameters().items())

    @classmethod
    def _probe(cls, **hyperparameters: Any) -> TrainingStrategy:
        return cls(["task_a", "task_b"], **hyperparameters)

    @classmethod
    def sample(cls, trial: Any, space: Mapping[str, ParamSpec], tasks: Sequence[str]) -> TrainingStrategy:
        return cls(tasks, **cls.suggest_hyperparameters(trial, space))


STRATEGIES: Registry[type[TrainingStrategy]] = Registry("training strategy")


@STRATEGIES.register("none")
class NoStrategy(TrainingStrategy):
    """The plain step: the network's objective is the weighted losses (or the aggregated gradients)."""

    acts = False
