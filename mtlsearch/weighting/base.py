"""The loss-weighting extension point.

A *weighting* decides how much each task's loss counts in a training step. It computes weights;
the trainer applies them (``total = sum_t w_t * L_t + regularizer()``). No trainer code branches
on a method's name.

Contract of :class:`Weighting` (an ``nn.Module``, so learnable weightings keep their parameters
and state in the optimizer and in checkpoints):

* ``__init__(tasks, **hyperparameters)`` validates its hyperparameters (raising
  :class:`~mtlsearch.errors.ConfigError` naming the field) and shows them in ``repr``.
* ``forward(losses)``: ``losses`` is a 1-D tensor of the T task losses of one step (in task
  order); returns a 1-D tensor of T weights on the same device and dtype. It may update its own
  state (a loss history) but must not call ``backward``.
* ``regularizer()``: a scalar added to the weighted loss (0 unless the method has one).
* ``space(section, path)`` / ``sample(trial, space, tasks)``: what of the method the search
  tunes, read from the space's ``search_space.<method>`` section, and how a trial draws it
  (parameter names start with ``"<method>."``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import torch
from torch import nn

from ..config import ParamSpec, check_keys
from ..registry import Registry


class Weighting(nn.Module, ABC):
    """Base of every loss weighting (see the module docstring for the contract)."""

    name: ClassVar[str]

    def __init__(self, tasks: Sequence[str]):
        super().__init__()
        self.tasks = list(tasks)

    @abstractmethod
    def forward(self, losses: torch.Tensor) -> torch.Tensor: ...

    def regularizer(self) -> torch.Tensor | float:
        return 0.0

    def hyperparameters(self) -> dict[str, Any]:
        return {}

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.hyperparameters().items())

    @classmethod
    def space(cls, section: Mapping[str, Any], path: str) -> dict[str, ParamSpec]:
        check_keys(section, [], path)
        return {}

    @classmethod
    def sample(cls, trial: Any, space: Mapping[str, ParamSpec], tasks: Sequence[str]) -> "Weighting":
        return cls(tasks)


WEIGHTINGS: Registry[type[Weighting]] = Registry("weighting")
