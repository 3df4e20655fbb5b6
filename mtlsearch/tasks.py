"""Tasks: what a task predicts, how it is trained (loss) and how it is scored (metrics).

A :class:`TaskType` is the extension point: it knows the head's output size, the loss, how targets
are stored, and which metrics make sense. A :class:`TaskSpec` is one concrete task of a problem
(``digit``: a 10-class classification scored by accuracy).
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import numbers
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from .errors import ConfigError, UserCodeError, show
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


def _labels_and_classes(output: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Predicted and true class indices of a batch, and the number of classes: a binary task's
    one logit predicts class 1 when positive (two classes); otherwise the argmax of the logits."""
    if output.shape[-1] == 1 and target.dtype.is_floating_point:
        return (output.squeeze(-1) > 0).long(), target.long(), 2
    return output.argmax(-1), target.long(), output.shape[-1]


class ConfusionMetric(Metric):
    """A metric of the confusion matrix, which adds up exactly over batches (rows: true class,
    columns: predicted class)."""

    def __init__(self) -> None:
        super().__init__()
        self.matrix: torch.Tensor | None = None

    def update(self, output, target):
        pred, true, k = _labels_and_classes(output.detach(), target.detach())
        counts = torch.bincount((true * k + pred).flatten().cpu(), minlength=k * k).reshape(k, k).double()
        self.matrix = counts if self.matrix is None else self.matrix + counts
        self.count += target.numel()

    def compute(self) -> float:
        if self.matrix is None or self.count == 0:
            raise ValueError(f"metric `{self.name}` has seen no samples")
        return self.score(self.matrix)

    @abstractmethod
    def score(self, matrix: torch.Tensor) -> float: ...


def _per_class_f1(matrix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """F1 of each class, ``2 TP / (2 TP + FP + FN)`` (0 where that is 0/0), and whether the class
    occurs among the targets or the predictions."""
    tp = matrix.diagonal()
    denom = matrix.sum(0) + matrix.sum(1)  # (TP + FP) + (TP + FN)
    f1 = torch.where(denom > 0, 2 * tp / denom.clamp(min=1), torch.zeros_like(tp))
    return f1, denom > 0


@METRICS.register("f1")
class F1(ConfusionMetric):
    """F1 score of the positive class of a binary task, ``2 TP / (2 TP + FP + FN)``; 0 when the
    split has no positive target and no positive prediction (as scikit-learn's ``f1_score``)."""

    direction = HIGHER

    def score(self, matrix):
        return float(_per_class_f1(matrix)[0][1])


@METRICS.register("f1_macro")
class F1Macro(ConfusionMetric):
    """Unweighted mean of the per-class F1 scores over the classes that occur among the targets or
    the predictions (scikit-learn's ``f1_score(average="macro")``)."""

    direction = HIGHER

    def score(self, matrix):
        f1, present = _per_class_f1(matrix)
        return float(f1[present].mean())


@METRICS.register("balanced_accuracy")
class BalancedAccuracy(ConfusionMetric):
    """Mean recall over the classes that occur among the targets (Brodersen et al., ICPR 2010;
    scikit-learn's ``balanced_accuracy_score``)."""

    direction = HIGHER

    def score(self, matrix):
        support = matrix.sum(1)
        present = support > 0
        return float((matrix.diagonal()[present] / support[present]).mean())


@METRICS.register("auroc")
class AUROC(Metric):
    """Area under the ROC curve of a binary task's logit: the probability that a random positive
    scores above a random negative, ties counting one half (Mann-Whitney U with average ranks).

    Every score of the split is kept and the area is computed once, in ``compute``. It is NaN when
    the split's targets hold one class only (the area is undefined).
    """

    direction = HIGHER

    def __init__(self) -> None:
        super().__init__()
        self.scores: list[torch.Tensor] = []
        self.targets: list[torch.Tensor] = []

    def update(self, output, target):
        self.scores.append(output.detach().reshape(target.shape).to("cpu", torch.float64))
        self.targets.append(target.detach().to("cpu"))
        self.count += target.numel()

    def compute(self) -> float:
        if self.count == 0:
            raise ValueError(f"metric `{self.name}` has seen no samples")
        scores, positive = torch.cat(self.scores), torch.cat(self.targets) == 1
        n_pos, n_neg = int(positive.sum()), int((~positive).sum())
        if n_pos == 0 or n_neg == 0:
            return math.nan
        _, inverse, counts = torch.unique(scores, return_inverse=True, return_counts=True)
        ends = counts.cumsum(0).double()
        ranks = (ends - (counts.double() - 1) / 2)[inverse]  # 1-based average rank of each score
        return (float(ranks[positive].sum()) - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


@METRICS.register("poisson_deviance")
class PoissonDeviance(Metric):
    """Mean Poisson deviance ``2 (y log(y / mu) - y + mu)`` (``y log y = 0`` at ``y = 0``) of a count
    task, whose output is the log-rate ``log mu``; as scikit-learn's ``mean_poisson_deviance``."""

    direction = LOWER

    def update(self, output, target):
        log_mu, y = output.detach().reshape(target.shape).double(), target.detach().double()
        deviance = 2 * (torch.xlogy(y, y) - y * log_mu - y + log_mu.exp())
        self.total += deviance.sum().item()
        self.count += target.numel()


class RateMeanAbsoluteError(Metric):
    """``mae`` of a count task: the mean absolute error of the predicted rate ``exp(output)``."""

    name = "mae"
    direction = LOWER

    def update(self, output, target):
        rate = output.detach().reshape(target.shape).double().exp()
        self.total += (rate - target.double()).abs().sum().item()
        self.count += target.numel()


class TaskType(ABC):
    """How a kind of task is trained and scored.

    Contract: ``output_dim(spec)`` is the size of the head's last dimension; ``loss(output,
    target)`` is a scalar tensor (mean over the batch) for the head's raw output of shape
    ``(N, output_dim)`` and targets of shape ``(N,)`` (or ``(N, d)`` for multi-output regression);
    ``check_targets`` raises a clear error when a dataset's targets do not fit the spec.
    ``default_metrics`` are recorded when a task lists none; ``primary_metrics`` are the ones that
    count in Delta-MTL by default (a quality measure such as accuracy, not a loss). A *dense* type
    (``dense = True``, :mod:`mtlsearch.tasks_dense`) gets ``(N, output_dim, H, W)`` outputs and
    per-pixel targets instead.
    """

    name: ClassVar[str]
    default_metrics: ClassVar[tuple[str, ...]]
    allowed_metrics: ClassVar[tuple[str, ...]]
    primary_metrics: ClassVar[tuple[str, ...]]
    dense: ClassVar[bool] = False  # per-pixel outputs (N, output_dim, H, W): see mtlsearch/tasks_dense.py
    needs_num_classes: ClassVar[bool] = False  # the spec must give num_classes (and only then may)

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

    needs_num_classes = True
    default_metrics = ("accuracy",)
    allowed_metrics = ("accuracy", "balanced_accuracy", "cross_entropy", "f1_macro")
    primary_metrics = ("accuracy",)

    def __init__(self, class_weights: tuple[float, ...] | None = None) -> None:
        self.class_weights = class_weights  # the loss weight of each class (TaskSpec.class_weights)

    def output_dim(self, spec):
        return spec.num_classes

    def loss(self, output, target):
        # With weights, the mean is sum_i w_{y_i} l_i / sum_i w_{y_i} (torch's and scikit-learn's).
        weight = None if self.class_weights is None else output.new_tensor(self.class_weights)
        return F.cross_entropy(output, target, weight=weight)

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
    allowed_metrics = ("accuracy", "auroc", "balanced_accuracy", "cross_entropy", "f1", "f1_macro")
    primary_metrics = ("accuracy",)

    def __init__(self, pos_weight: float | None = None) -> None:
        self.pos_weight = pos_weight  # the weight of a positive target in the loss (TaskSpec.pos_weight)

    def output_dim(self, spec):
        return 1

    def loss(self, output, target):
        pos_weight = None if self.pos_weight is None else output.new_tensor(self.pos_weight)
        return F.binary_cross_entropy_with_logits(output.squeeze(-1), target, pos_weight=pos_weight)

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


@TASK_TYPES.register("count")
class Count(TaskType):
    """Counts modelled as Poisson (a log-linear model, McCullagh & Nelder, *Generalized Linear
    Models*, 1989): float targets that are integers >= 0, one output, the log-rate ``log mu``,
    and the Poisson negative log-likelihood ``mean(mu - y log mu)`` (its constant ``log y!`` left
    out). Its ``mae`` is the mean absolute error of the rate ``mu = exp(output)``."""

    default_metrics = ("poisson_deviance", "mae")
    allowed_metrics = ("poisson_deviance", "mae")
    primary_metrics = ("poisson_deviance",)
    metric_overrides: ClassVar[dict[str, type[Metric]]] = {"mae": RateMeanAbsoluteError}

    def output_dim(self, spec):
        return 1

    def loss(self, output, target):
        return F.poisson_nll_loss(output.reshape(target.shape), target, log_input=True)

    def check_targets(self, spec, target, where):
        if not target.dtype.is_floating_point or target.dim() != 1:
            raise ConfigError(
                where,
                f"task `{spec.name}` (count) needs 1-D float targets (integers >= 0), "
                f"found dtype {target.dtype} and shape {tuple(target.shape)}",
            )
        if target.numel() and not bool(((target >= 0) & (target == target.round())).all()):
            raise ConfigError(where, f"task `{spec.name}` (count) needs integer targets >= 0, found other values")


# -- metrics and losses of the user's, named by import path ------------------------------------

IMPORT_PATH = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*")


def is_import_path(name: object) -> bool:
    """``name`` has the form ``package.module:attribute``."""
    return isinstance(name, str) and IMPORT_PATH.fullmatch(name) is not None


def _what(obj: object) -> str:
    return f"the class {obj.__name__}" if isinstance(obj, type) else f"a {type(obj).__name__}"


def check_user_metric(obj: object, path: str, where: str) -> type[Metric]:
    """``obj``, imported from ``path``, if it is a usable metric class: a concrete subclass of
    :class:`Metric` whose ``name`` is an identifier (not a built-in metric's) and whose
    ``direction`` is ``"max"`` or ``"min"``."""
    if not (isinstance(obj, type) and issubclass(obj, Metric)):
        raise ConfigError(
            where,
            f"`{path}` is {_what(obj)}, not a metric; expected a subclass of mtlsearch.tasks.Metric "
            "with class attributes `name` and `direction` and a method `update`",
        )
    if inspect.isabstract(obj):
        missing = ", ".join(sorted(getattr(obj, "__abstractmethods__", ())))
        raise ConfigError(where, f"`{path}` does not implement {missing}; a metric needs update(output, target)")
    name = getattr(obj, "name", None)
    if not isinstance(name, str) or not name.isidentifier():
        found = f"found {show(name)}" if hasattr(obj, "name") else "it has none"
        raise ConfigError(where, f'`{path}` needs a class attribute `name`, an identifier such as "recall"; {found}')
    if name in METRICS:
        raise ConfigError(where, f"`{path}` is named `{name}`, as a built-in metric; give the class another name")
    direction = getattr(obj, "direction", None)
    if direction not in (HIGHER, LOWER):
        found = f"found {show(direction)}" if hasattr(obj, "direction") else "it has none"
        raise ConfigError(
            where,
            f'`{path}` needs a class attribute `direction`, "max" (higher is better) or "min" '
            f"(lower is better); {found}",
        )
    return obj


def check_user_loss(obj: object, path: str, where: str) -> Callable[..., Any]:
    """``obj``, imported from ``path``, if it can be a loss: a function (or a callable object) of
    ``(output, target)``; a class is refused, since calling it would construct one."""
    if isinstance(obj, type) or not callable(obj):
        raise ConfigError(
            where,
            f"`{path}` is {_what(obj)}; expected a function loss(output, target) returning a scalar tensor "
            "(for an nn.Module loss, name an instance of it)",
        )
    return obj


NOT_IMPORTED = "load the task through mtlsearch.load or Problem (TaskSpec.with_user_code)"


class UserLoss:
    """A user's loss, named by import path, in place of a task type's: ``fn(output, target)``
    gets the head's raw output and the batch's targets and must return a scalar tensor."""

    def __init__(self, path: str, fn: Callable[..., Any] | None, task: str):
        self.path = path
        self.fn = fn  # None: not imported (TaskSpec.with_user_code)
        self.task = task

    def __call__(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.fn is None:
            raise ConfigError("loss", f"`{self.path}` of task `{self.task}` is not imported; {NOT_IMPORTED}")
        value = self.fn(output, target)
        if not isinstance(value, torch.Tensor) or value.dim() != 0:
            found = f"a tensor of shape {tuple(value.shape)}" if isinstance(value, torch.Tensor) else _what(value)
            raise UserCodeError("loss", f"`{self.path}` returned {found}; expected a scalar tensor (the batch's loss)")
        return value


MetricClass = type[Metric]  # named here: inside TaskSpec, `type` is the task's type field

PRIMARY, AUXILIARY = "primary", "auxiliary"
ROLES = (PRIMARY, AUXILIARY)  # a task's role: scored (primary) or only trained alongside (auxiliary)


def _positive(value: object) -> bool:
    # bool is a numbers.Real, but `pos_weight: true` is a mistake, not 1.0.
    return (
        isinstance(value, numbers.Real)
        and not isinstance(value, bool)
        and math.isfinite(float(value))
        and float(value) > 0
    )


@dataclass(frozen=True)
class TaskSpec:
    """One task of a multi-task problem.

    ``metrics`` are recorded on validation (during search) and test (in ``mtlsearch train``).
    Those that count in Delta-MTL are :meth:`delta_metrics`. A metric may be a user's
    :class:`Metric` subclass named by import path (``my_metrics:Recall``), and ``loss`` a user's
    ``loss(output, target)`` function; both are imported by :meth:`with_user_code` (the problem
    does it, with the data factory's importer) and recorded under the class's ``name``.
    ``pos_weight`` (binary) weights the positive targets in the loss; ``class_weights``
    (classification) weights each class's targets. ``role``: ``primary`` (counted in Delta-MTL and
    the objectives) or ``auxiliary`` (trained alongside when a candidate includes it, never
    scored for the front; docs/tasks.md#auxiliary-tasks).
    """

    name: str
    type: str
    num_classes: int | None = None
    output_dim: int = 1
    metrics: tuple[str, ...] = field(default=())
    loss: str | None = None
    pos_weight: float | None = None
    class_weights: tuple[float, ...] | None = None
    role: str = PRIMARY
    # import path -> the checked metric class or loss function (filled by with_user_code)
    user_code: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.isidentifier():
            raise ConfigError("name", f"expected an identifier (letters, digits, underscore), found {show(self.name)}")
        kind = TASK_TYPES.get(self.type, "type")()
        if kind.needs_num_classes:
            if isinstance(self.num_classes, bool) or not isinstance(self.num_classes, int) or self.num_classes < 2:
                raise ConfigError(
                    "num_classes", f"expected an integer >= 2 for a {self.type} task, found {show(self.num_classes)}"
                )
            check_bound(self.num_classes, "num_classes", "num_classes", 2)
        elif self.num_classes is not None:
            takers = " and ".join(n for n in TASK_TYPES.names() if TASK_TYPES.get(n).needs_num_classes)
            raise ConfigError("num_classes", f"only {takers} tasks take num_classes; task `{self.name}` is {self.type}")
        if isinstance(self.output_dim, bool) or not isinstance(self.output_dim, int) or self.output_dim < 1:
            raise ConfigError("output_dim", f"expected an integer >= 1, found {show(self.output_dim)}")
        check_bound(self.output_dim, "output_dim", "output_dim", 1)
        metrics = tuple(self.metrics) if self.metrics else kind.default_metrics
        if isinstance(self.metrics, str):
            metrics = (self.metrics,)
        user_names = self._user_metric_sources()
        for i, m in enumerate(metrics):
            if is_import_path(m) or m in user_names:
                continue
            if isinstance(m, str) and (":" in m or "." in m):
                raise ConfigError(
                    f"metrics[{i}]", f"expected a metric name or an import path `module:Class`, found {show(m)}"
                )
            if m not in kind.allowed_metrics:
                raise ConfigError(
                    f"metrics[{i}]",
                    f"metric `{m}` does not apply to a {self.type} task; "
                    f"choose from: {', '.join(kind.allowed_metrics)}",
                )
        object.__setattr__(self, "metrics", metrics)
        self._check_loss_options(kind)
        if self.role not in ROLES:
            raise ConfigError("role", f"unknown role {show(self.role)}; choose one of: {', '.join(ROLES)}")

    def _check_loss_options(self, kind: TaskType) -> None:
        """``loss``, ``pos_weight`` and ``class_weights``: their form, and the types that take them."""
        if self.loss is not None and not is_import_path(self.loss):
            raise ConfigError(
                "loss",
                f"expected an import path `module:function` of a loss(output, target), found {show(self.loss)}",
            )
        if self.pos_weight is not None:
            if not isinstance(kind, Binary):
                raise ConfigError("pos_weight", f"only binary tasks take pos_weight; task `{self.name}` is {self.type}")
            if not _positive(self.pos_weight):
                raise ConfigError("pos_weight", f"expected a finite number > 0, found {show(self.pos_weight)}")
            object.__setattr__(self, "pos_weight", float(self.pos_weight))
        if self.class_weights is not None:
            if not isinstance(kind, Classification):
                raise ConfigError(
                    "class_weights",
                    f"only classification tasks take class_weights; task `{self.name}` is {self.type}"
                    + (" (weight its positive targets with pos_weight)" if isinstance(kind, Binary) else ""),
                )
            weights = self.class_weights
            if (
                not isinstance(weights, (list, tuple))
                or len(weights) != self.num_classes
                or not all(_positive(w) for w in weights)
            ):
                raise ConfigError(
                    "class_weights",
                    f"expected a list of {self.num_classes} finite numbers > 0 (one per class, num_classes = "
                    f"{self.num_classes}), found {show(list(weights) if isinstance(weights, tuple) else weights)}",
                )
            object.__setattr__(self, "class_weights", tuple(float(w) for w in weights))
        if self.loss is not None and (self.pos_weight is not None or self.class_weights is not None):
            raise ConfigError(
                "loss",
                f"task `{self.name}` has its own loss, which pos_weight and class_weights do not reach; drop them",
            )

    def _user_metric_sources(self) -> dict[str, str]:
        """The recorded name of each imported user metric -> its import path."""
        return {
            obj.name: path for path, obj in self.user_code.items() if isinstance(obj, type) and issubclass(obj, Metric)
        }

    def with_user_code(self, load: Callable[[str, str], Any]) -> TaskSpec:
        """This task with the metrics and the loss it names by import path imported and checked.

        Args:
            load: ``load(path, where)`` imports ``module:attribute`` (``where``, e.g. ``metrics[1]``,
                names the field in errors); :class:`~mtlsearch.problem.Problem` passes the data
                factory's importer.

        A metric's import path is replaced by the class's ``name`` in ``metrics`` (what is recorded);
        :meth:`to_dict` writes the import path back.
        """
        wanted = [(f"metrics[{i}]", m) for i, m in enumerate(self.metrics) if is_import_path(m)]
        if self.loss is not None and self.loss not in self.user_code:
            wanted.append(("loss", self.loss))
        if not wanted:
            return self
        user_code = dict(self.user_code)
        metrics = list(self.metrics)
        for where, path in wanted:
            obj = user_code[path] if path in user_code else load(path, where)
            if where == "loss":
                user_code[path] = check_user_loss(obj, path, where)
                continue
            cls = check_user_metric(obj, path, where)
            i = int(where[len("metrics[") : -1])
            if cls.name in metrics:
                raise ConfigError(
                    where,
                    f"`{path}` is named `{cls.name}`, which task `{self.name}` records already; "
                    "give the class another name",
                )
            user_code[path] = cls
            metrics[i] = cls.name
        return dataclasses.replace(self, metrics=tuple(metrics), user_code=user_code)

    def _user_object(self, path: str, where: str) -> Any:
        if path not in self.user_code:
            raise ConfigError(where, f"`{path}` of task `{self.name}` is not imported; {NOT_IMPORTED}")
        return self.user_code[path]

    def metric_class(self, name: str) -> MetricClass:
        """The class that records metric ``name`` for this task: a user's imported class, the
        type's own variant (a count task's ``mae`` is on the rate), or the registered one."""
        sources = self._user_metric_sources()
        if name in sources:
            return self.user_code[sources[name]]
        if is_import_path(name):
            return self._user_object(name, "metrics")
        overrides = getattr(TASK_TYPES.get(self.type), "metric_overrides", {})
        return overrides.get(name) or METRICS.get(name)

    @property
    def kind(self) -> TaskType:
        """This task's type, set up with its loss options (``pos_weight``, ``class_weights``, or the
        user's ``loss``)."""
        options: dict[str, Any] = {}
        if self.pos_weight is not None:
            options["pos_weight"] = self.pos_weight
        if self.class_weights is not None:
            options["class_weights"] = self.class_weights
        kind = TASK_TYPES.get(self.type)(**options)
        if self.loss is not None:
            # The user's loss replaces the type's on this instance only: the output size, target
            # checks and metrics stay the type's.
            setattr(kind, "loss", UserLoss(self.loss, self.user_code.get(self.loss), self.name))
        return kind

    def metric_directions(self) -> dict[str, str]:
        return {m: self.metric_class(m).direction for m in self.metrics}

    def delta_metrics(self, chosen: tuple[str, ...] = ()) -> tuple[str, ...]:
        """The metrics that count in Delta-MTL: ``chosen`` (from the space's ``delta_mtl.metrics``)
        if given, else the type's primary metrics among those recorded, else every recorded one."""
        if chosen:
            return chosen
        primary = tuple(m for m in self.metrics if m in self.kind.primary_metrics)
        return primary or self.metrics

    def new_metrics(self) -> list[Metric]:
        return [self.metric_class(m)() for m in self.metrics]

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"name": self.name, "type": self.type}
        if self.num_classes is not None:
            d["num_classes"] = self.num_classes
        if self.type == "regression":
            d["output_dim"] = self.output_dim
        sources = self._user_metric_sources()
        d["metrics"] = [sources.get(m, m) for m in self.metrics]  # a user's metric as its import path
        if self.loss is not None:
            d["loss"] = self.loss
        if self.pos_weight is not None:
            d["pos_weight"] = self.pos_weight
        if self.class_weights is not None:
            d["class_weights"] = list(self.class_weights)
        if self.role != PRIMARY:  # absent when primary, so older spaces and signatures read the same
            d["role"] = self.role
        return d


from . import tasks_dense  # noqa: E402, F401  (registers the dense task types and metrics)
