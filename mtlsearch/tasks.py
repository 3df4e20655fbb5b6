"""Tasks: what a task predicts, how it is trained (loss) and how it is scored (metrics).

A :class:`TaskType` is the extension point: it knows the head's output size, the loss, how targets
are stored, and which metrics make sense. A :class:`TaskSpec` is one concrete task of a problem
(``digit``: a 10-class classification scored by accuracy).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from .errors import ConfigError, show
from .limits import check_bound
from .registry import Registry

HIGHER = "max"
LOWER = "min"


class Metric(ABC):
    """An accumulating metric: ``update`` over batches, then ``compute``.

    ``direction`` is ``"max"`` when higher is better, ``"min"`` when lower is better.
    ``update`` receives the head's raw output and the target tensor of one batch (same device).
    """

    name: ClassVar[str]
    direction: ClassVar[str]

    def __init__(self) -> None:
        self.total = 0.0
        self.count = 0

    @abstractmethod
    def update(self, output: torch.Tensor, target: torch.Tensor) -> None: ...

    def compute(self) -> float:
        if self.count == 0:
            raise ValueError(f"metric `{self.name}` has seen no samples")
        return self.total / self.count


METRICS: Registry[type[Metric]] = Registry("metric")


@METRICS.register("accuracy")
class Accuracy(Metric):
    """Fraction of correct predictions (argmax of logits; a positive logit for binary tasks)."""

    direction = HIGHER

    def update(self, output, target):
        if output.shape[-1] == 1 and target.dtype.is_floating_point:
            pred = (output.squeeze(-1) > 0).to(target.dtype)
        else:
            pred = output.argmax(-1)
        self.total += (pred == target).sum().item()
        self.count += target.numel()


@METRICS.register("cross_entropy")
class CrossEntropy(Metric):
    """Mean cross-entropy (negative log-likelihood) of the targets."""

    direction = LOWER

    def update(self, output, target):
        if output.shape[-1] == 1 and target.dtype.is_floating_point:
            loss = F.binary_cross_entropy_with_logits(output.squeeze(-1), target, reduction="sum")
        else:
            loss = F.cross_entropy(output, target, reduction="sum")
        self.total += loss.item()
        self.count += target.shape[0]


@METRICS.register("mae")
class MeanAbsoluteError(Metric):
    """Mean absolute error over all target entries."""

    direction = LOWER

    def update(self, output, target):
        self.total += (output.reshape(target.shape) - target).abs().sum().item()
        self.count += target.numel()


@METRICS.register("mse")
class MeanSquaredError(Metric):
    """Mean squared error over all target entries."""

    direction = LOWER

    def update(self, output, target):
        self.total += (output.reshape(target.shape) - target).pow(2).sum().item()
        self.count += target.numel()


@METRICS.register("rmse")
class RootMeanSquaredError(MeanSquaredError):
    """Root of the mean squared error over all target entries."""

    def compute(self) -> float:
        return math.sqrt(super().compute())


class TaskType(ABC):
    """How a kind of task is trained and scored.

    Contract: ``output_dim(spec)`` is the size of the head's last dimension; ``loss(output,
    target)`` is a scalar tensor (mean over the batch) for the head's raw output of shape
    ``(N, output_dim)`` and targets of shape ``(N,)`` (or ``(N, d)`` for multi-output regression);
    ``check_targets`` raises a clear error when a dataset's targets do not fit the spec.
    ``default_metrics`` are recorded when a task lists none; ``primary_metrics`` are the ones that
    count in Delta-MTL by default (a quality measure such as accuracy, not a loss).
    """

    name: ClassVar[str]
    default_metrics: ClassVar[tuple[str, ...]]
    allowed_metrics: ClassVar[tuple[str, ...]]
    primary_metrics: ClassVar[tuple[str, ...]]

    @abstractmethod
    def output_dim(self, spec: TaskSpec) -> int: ...

    @abstractmethod
    def loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor: ...

    @abstractmethod
    def check_targets(self, spec: TaskSpec, target: torch.Tensor, where: str) -> None: ...


TASK_TYPES: Registry[type[TaskType]] = Registry("task type")


@TASK_TYPES.register("classification")
class Classification(TaskType):
    """Multi-class classification: integer targets in ``[0, num_classes)``, cross-entropy loss."""

    default_metrics = ("accuracy",)
    allowed_metrics = ("accuracy", "cross_entropy")
    primary_metrics = ("accuracy",)

    def output_dim(self, spec):
        return spec.num_classes

    def loss(self, output, target):
        return F.cross_entropy(output, target)

    def check_targets(self, spec, target, where):
        if target.dtype.is_floating_point or target.dim() != 1:
            raise ConfigError(
                where,
                f"task `{spec.name}` ({self.name}) needs 1-D integer targets, "
                f"found dtype {target.dtype} and shape {tuple(target.shape)}",
            )
        if target.numel() and (int(target.min()) < 0 or int(target.max()) >= spec.num_classes):
            raise ConfigError(
                where,
                f"task `{spec.name}` has targets in [{int(target.min())}, {int(target.max())}], "
                f"outside [0, {spec.num_classes}) allowed by num_classes = {spec.num_classes}",
            )


@TASK_TYPES.register("binary")
class Binary(TaskType):
    """Binary classification: float targets in {0, 1}, one logit, binary cross-entropy loss."""

    default_metrics = ("accuracy",)
    allowed_metrics = ("accuracy", "cross_entropy")
    primary_metrics = ("accuracy",)

    def output_dim(self, spec):
        return 1

    def loss(self, output, target):
        return F.binary_cross_entropy_with_logits(output.squeeze(-1), target)

    def check_targets(self, spec, target, where):
        if not target.dtype.is_floating_point or target.dim() != 1:
            raise ConfigError(
                where,
                f"task `{spec.name}` (binary) needs 1-D float targets in {{0, 1}}, "
                f"found dtype {target.dtype} and shape {tuple(target.shape)}",
            )
        if target.numel() and not bool(((target == 0) | (target == 1)).all()):
            raise ConfigError(where, f"task `{spec.name}` (binary) needs targets in {{0, 1}}, found other values")


@TASK_TYPES.register("regression")
class Regression(TaskType):
    """Regression: float targets of shape ``(N,)`` or ``(N, d)``, mean squared error loss."""

    default_metrics = ("mae",)
    allowed_metrics = ("mae", "mse", "rmse")
    primary_metrics = ("mae",)

    def output_dim(self, spec):
        return spec.output_dim

    def loss(self, output, target):
        return F.mse_loss(output.reshape(target.shape), target)

    def check_targets(self, spec, target, where):
        width = 1 if target.dim() == 1 else (target.shape[1] if target.dim() == 2 else -1)
        if not target.dtype.is_floating_point or width != spec.output_dim:
            raise ConfigError(
                where,
                f"task `{spec.name}` (regression, output_dim = {spec.output_dim}) needs float targets "
                f"of shape (N,) or (N, {spec.output_dim}), found dtype {target.dtype} and shape {tuple(target.shape)}",
            )


@dataclass(frozen=True)
class TaskSpec:
    """One task of a multi-task problem.

    ``metrics`` are recorded on validation (during search) and test (in ``mtlsearch train``).
    Those that count in Delta-MTL are :meth:`delta_metrics`.
    """

    name: str
    type: str
    num_classes: int | None = None
    output_dim: int = 1
    metrics: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.isidentifier():
            raise ConfigError("name", f"expected an identifier (letters, digits, underscore), found {show(self.name)}")
        kind = TASK_TYPES.get(self.type, "type")()
        if self.type == "classification":
            if isinstance(self.num_classes, bool) or not isinstance(self.num_classes, int) or self.num_classes < 2:
                raise ConfigError(
                    "num_classes", f"expected an integer >= 2 for a classification task, found {show(self.num_classes)}"
                )
            check_bound(self.num_classes, "num_classes", "num_classes", 2)
        elif self.num_classes is not None:
            raise ConfigError(
                "num_classes", f"only classification tasks take num_classes; task `{self.name}` is {self.type}"
            )
        if isinstance(self.output_dim, bool) or not isinstance(self.output_dim, int) or self.output_dim < 1:
            raise ConfigError("output_dim", f"expected an integer >= 1, found {show(self.output_dim)}")
        check_bound(self.output_dim, "output_dim", "output_dim", 1)
        metrics = tuple(self.metrics) if self.metrics else kind.default_metrics
        if isinstance(self.metrics, str):
            metrics = (self.metrics,)
        for i, m in enumerate(metrics):
            if m not in kind.allowed_metrics:
                raise ConfigError(
                    f"metrics[{i}]",
                    f"metric `{m}` does not apply to a {self.type} task; "
                    f"choose from: {', '.join(kind.allowed_metrics)}",
                )
        object.__setattr__(self, "metrics", metrics)

    @property
    def kind(self) -> TaskType:
        return TASK_TYPES.get(self.type)()

    def metric_directions(self) -> dict[str, str]:
        return {m: METRICS.get(m).direction for m in self.metrics}

    def delta_metrics(self, chosen: tuple[str, ...] = ()) -> tuple[str, ...]:
        """The metrics that count in Delta-MTL: ``chosen`` (from the space's ``delta_mtl.metrics``)
        if given, else the type's primary metrics among those recorded, else every recorded one."""
        if chosen:
            return chosen
        primary = tuple(m for m in self.metrics if m in self.kind.primary_metrics)
        return primary or self.metrics

    def new_metrics(self) -> list[Metric]:
        return [METRICS.get(m)() for m in self.metrics]

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"name": self.name, "type": self.type}
        if self.num_classes is not None:
            d["num_classes"] = self.num_classes
        if self.type == "regression":
            d["output_dim"] = self.output_dim
        d["metrics"] = list(self.metrics)
        return d
