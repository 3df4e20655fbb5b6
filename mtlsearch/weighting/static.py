"""Fixed loss weights: equal, or static per-task weights chosen by the search."""

from __future__ import annotations

import torch

from ..config import ParamSpec, check_keys, positive_float
from ..errors import ConfigError, show
from .base import Weighting, register


@register("equal")
class Equal(Weighting):
    """Every task weighs 1: the plain sum of the task losses."""

    label = "equal weighting"

    def forward(self, losses, context=None):
        return torch.ones_like(losses)


@register("static")
class Static(Weighting):
    """Constant per-task weights ``w_t``; the search draws each from ``static.weight``.

    Space section: ``static: {weight: {low: 0.25, high: 4.0, log: true}}`` (the default) or a
    list of choices; each task's weight is the trial parameter ``static.weight.<task>``.
    """

    label = "static weighting"
    DEFAULT_WEIGHT = ParamSpec("float", low=0.25, high=4.0, log=True)

    def __init__(self, tasks, weights: dict[str, float] | None = None):
        super().__init__(tasks)
        weights = dict(weights or {t: 1.0 for t in self.tasks})
        if set(weights) != set(self.tasks):
            raise ConfigError(
                "weights", f"expected one weight per task ({', '.join(self.tasks)}), found {show(sorted(weights))}"
            )
        self.weights = {t: positive_float(weights[t], f"weights.{t}") for t in self.tasks}
        self.register_buffer("_w", torch.tensor([self.weights[t] for t in self.tasks]), persistent=False)

    def forward(self, losses, context=None):
        return self._w.to(device=losses.device, dtype=losses.dtype)

    def hyperparameters(self):
        return {"weights": self.weights}

    @classmethod
    def space(cls, section, path):
        check_keys(section, ["weight"], path)
        if "weight" not in section:
            return {"weight": cls.DEFAULT_WEIGHT}
        return {"weight": ParamSpec.parse(section["weight"], f"{path}.weight", positive_float)}

    @classmethod
    def sample(cls, trial, space, tasks):
        return cls(tasks, {t: space["weight"].suggest(trial, f"static.weight.{t}") for t in tasks})
