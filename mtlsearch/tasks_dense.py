"""Dense (per-pixel) task types and their metrics: segmentation, depth, surface normals, edges.

A dense head outputs ``(N, output_dim, H, W)`` at the input's height and width (see
:class:`~mtlsearch.models.heads.DenseHead`). Targets, per sample:

* ``segmentation``: int64 ``(H, W)``, classes in ``[0, num_classes)``, ``-1`` = ignored pixel;
* ``depth``: float ``(1, H, W)`` (or ``(H, W)``), ``0`` = no measurement (invalid pixel);
* ``normals``: float ``(3, H, W)`` unit vectors, all-zero = invalid pixel;
* ``edges``: float ``(1, H, W)`` (or ``(H, W)``) in ``{0, 1}``.

Losses and metrics follow the NYUv2 conventions of LibMTL (Lin & Zhang, 2023, arXiv:2203.14338)
and Vandenhende et al. (TPAMI 2021, arXiv:2004.13379). Every metric accumulates exact counts or
sums over the batches of a split, so the value does not depend on the batch size. Imported by
:mod:`mtlsearch.tasks`, so the types are always registered. See docs/data.md#dense-tasks.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .errors import ConfigError
from .tasks import HIGHER, LOWER, METRICS, TASK_TYPES, Metric, TaskType

IGNORE_INDEX = -1  # segmentation label of a pixel that is neither trained on nor scored
EDGE_POS_WEIGHT = 4.0  # edge pixels are rare (about 1 in 10 on `scenes`): they weigh more in the loss
ANGLE_BIN = 0.01  # degrees: the resolution of the median angle's histogram
ANGLE_BINS = int(round(180 / ANGLE_BIN))


def _channel(t: torch.Tensor) -> torch.Tensor:
    """A one-channel map ``(N, H, W)`` as ``(N, 1, H, W)``; other shapes unchanged."""
    return t.unsqueeze(1) if t.dim() == 3 else t


# Reductions over the channel dimension of (N, C, H, W) are written as elementwise ops and sums:
# torch's CPU `norm(dim=1)` and `argmax(1)` on such tensors ran 10-500x slower (torch 2.9).


def _squared_norm(t: torch.Tensor) -> torch.Tensor:
    """``|t|^2`` over the channel dimension: ``(N, C, H, W) -> (N, H, W)``."""
    return t.pow(2).sum(1)


def _unit(t: torch.Tensor) -> torch.Tensor:
    """``t`` normalised to unit length over the channel dimension (zero vectors stay zero)."""
    return t / _squared_norm(t).clamp(min=1e-24).sqrt().unsqueeze(1)


def _labels(output: torch.Tensor) -> torch.Tensor:
    """The arg-max class per pixel of logits ``(N, K, H, W)``."""
    return output.max(1).indices


def _shape_error(spec, target: torch.Tensor, where: str, needs: str) -> ConfigError:
    return ConfigError(
        where,
        f"task `{spec.name}` ({spec.type}) needs {needs}, found dtype {target.dtype} and shape {tuple(target.shape)}",
    )


def _check_float_map(spec, target: torch.Tensor, where: str, channels: int) -> None:
    """Float targets ``(N, channels, H, W)``, or ``(N, H, W)`` when ``channels`` is 1."""
    ok = target.dtype.is_floating_point and (
        (target.dim() == 4 and target.shape[1] == channels) or (channels == 1 and target.dim() == 3)
    )
    if not ok:
        shapes = f"(N, {channels}, H, W)" + (" or (N, H, W)" if channels == 1 else "")
        raise _shape_error(spec, target, where, f"float targets of shape {shapes}")


# -- losses --------------------------------------------------------------------------------------


def segmentation_loss(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-pixel cross-entropy, mean over the pixels whose label is not ``-1`` (0 if none)."""
    total = F.cross_entropy(output, target, ignore_index=IGNORE_INDEX, reduction="sum")
    return total / (target != IGNORE_INDEX).sum().clamp(min=1)


def depth_loss(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """L1 over the valid pixels (target != 0), as LibMTL's NYUv2 depth loss."""
    target = _channel(target)
    valid = (target != 0).to(output.dtype)
    return ((output - target).abs() * valid).sum() / valid.sum().clamp(min=1)


def normals_loss(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``1 - cos(pred, target)`` over the valid pixels (target not all-zero), the prediction
    normalised to unit length first, as LibMTL's NYUv2 normal loss."""
    valid = (_squared_norm(target) > 0).to(output.dtype)
    cosine = (_unit(output) * target).sum(1)
    return 1 - (cosine * valid).sum() / valid.sum().clamp(min=1)


def edge_loss(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-pixel binary cross-entropy with logits; an edge pixel weighs ``EDGE_POS_WEIGHT``."""
    pos_weight = output.new_tensor(EDGE_POS_WEIGHT)
    return F.binary_cross_entropy_with_logits(output, _channel(target), pos_weight=pos_weight)


# -- task types ----------------------------------------------------------------------------------


class DenseTaskType(TaskType):
    """A per-pixel task: the head's output is ``(N, output_dim, H, W)`` at the input's size."""

    dense = True


@TASK_TYPES.register("segmentation")
class Segmentation(DenseTaskType):
    """Semantic segmentation: int64 labels ``(N, H, W)`` in ``[0, num_classes)`` or ``-1``
    (ignored); per-pixel cross-entropy over the labelled pixels."""

    needs_num_classes = True
    default_metrics = ("miou", "pixel_accuracy")
    allowed_metrics = ("miou", "pixel_accuracy")
    primary_metrics = ("miou",)

    def output_dim(self, spec):
        return spec.num_classes

    def loss(self, output, target):
        return segmentation_loss(output, target)

    def check_targets(self, spec, target, where):
        if target.dtype.is_floating_point or target.dtype == torch.bool or target.dim() != 3:
            raise _shape_error(spec, target, where, "integer targets of shape (N, H, W)")
        if target.numel() and (int(target.min()) < IGNORE_INDEX or int(target.max()) >= spec.num_classes):
            raise ConfigError(
                where,
                f"task `{spec.name}` has labels in [{int(target.min())}, {int(target.max())}], outside "
                f"[-1, {spec.num_classes}) allowed by num_classes = {spec.num_classes} (-1 marks an ignored pixel)",
            )


@TASK_TYPES.register("depth")
class Depth(DenseTaskType):
    """Depth estimation: float ``(N, 1, H, W)``, 0 where there is no measurement; L1 loss on the
    valid pixels."""

    default_metrics = ("abs_err", "rel_err")
    allowed_metrics = ("abs_err", "rel_err")
    primary_metrics = ("abs_err",)

    def output_dim(self, spec):
        return 1

    def loss(self, output, target):
        return depth_loss(output, target)

    def check_targets(self, spec, target, where):
        _check_float_map(spec, target, where, 1)
        if target.numel() and bool((target < 0).any()):
            raise ConfigError(where, f"task `{spec.name}` (depth) needs depths >= 0 (0 = invalid), found negative ones")


@TASK_TYPES.register("normals")
class Normals(DenseTaskType):
    """Surface normal estimation: float ``(N, 3, H, W)`` unit vectors, zeros where invalid;
    loss ``1 - cosine`` with the normalised prediction on the valid pixels."""

    default_metrics = ("mean_angle", "median_angle", "within_11_25", "within_22_5", "within_30")
    allowed_metrics = default_metrics
    primary_metrics = ("mean_angle",)

    def output_dim(self, spec):
        return 3

    def loss(self, output, target):
        return normals_loss(output, target)

    def check_targets(self, spec, target, where):
        _check_float_map(spec, target, where, 3)
        if target.numel():
            norm = _squared_norm(target).sqrt()
            if bool(((norm - 1).abs() > 1e-3)[norm != 0].any()):
                raise ConfigError(
                    where, f"task `{spec.name}` (normals) needs unit vectors (or zeros where invalid), found others"
                )


@TASK_TYPES.register("edges")
class Edges(DenseTaskType):
    """Edge detection: float ``(N, 1, H, W)`` in ``{0, 1}``; per-pixel binary cross-entropy with
    the edge pixels weighted by ``EDGE_POS_WEIGHT``."""

    default_metrics = ("edge_f_at_0_5",)
    allowed_metrics = ("edge_f_at_0_5",)
    primary_metrics = ("edge_f_at_0_5",)

    def output_dim(self, spec):
        return 1

    def loss(self, output, target):
        return edge_loss(output, target)

    def check_targets(self, spec, target, where):
        _check_float_map(spec, target, where, 1)
        if target.numel() and not bool(((target == 0) | (target == 1)).all()):
            raise ConfigError(where, f"task `{spec.name}` (edges) needs targets in {{0, 1}}, found other values")


# -- metrics -------------------------------------------------------------------------------------


class _Ratio(Metric):
    """A metric ``total / count`` over the valid pixels of a split (a batch may have none)."""

    def compute(self) -> float:
        if self.count == 0:
            raise ValueError(f"metric `{self.name}` has seen no valid pixel")
        return self.total / self.count


@METRICS.register("miou")
class MeanIoU(Metric):
    """Mean intersection over union of the classes, from a confusion matrix over every labelled
    pixel of the split: ``IoU_c = TP / (TP + FP + FN)``.

    .. note:: Classes absent from both the predictions and the targets (``TP + FP + FN = 0``) are
       left out of the mean, as LibMTL's ``nanmean`` does; Vandenhende et al. count them as 0.
    """

    direction = HIGHER

    def __init__(self) -> None:
        super().__init__()
        self.confusion: torch.Tensor | None = None  # (target class, predicted class) counts

    def update(self, output, target):
        k = output.shape[1]
        # an ignored pixel lands in the extra bin k * k, which is dropped (no boolean indexing: faster)
        pairs = torch.where(target == IGNORE_INDEX, k * k, target * k + _labels(output))
        counts = torch.bincount(pairs.flatten(), minlength=k * k + 1)[: k * k].view(k, k).cpu()
        self.confusion = counts if self.confusion is None else self.confusion + counts

    def compute(self) -> float:
        if self.confusion is None:
            raise ValueError("metric `miou` has seen no samples")
        tp = self.confusion.diag().double()
        union = self.confusion.sum(0).double() + self.confusion.sum(1).double() - tp
        present = union > 0
        if not bool(present.any()):
            raise ValueError("metric `miou` has seen no labelled pixel")
        return float((tp[present] / union[present]).mean())


@METRICS.register("pixel_accuracy")
class PixelAccuracy(_Ratio):
    """Fraction of labelled pixels (label not ``-1``) whose arg-max class is right."""

    direction = HIGHER

    def update(self, output, target):
        self.total += int((_labels(output) == target).sum())  # an ignored pixel (-1) never matches
        self.count += int((target != IGNORE_INDEX).sum())


@METRICS.register("abs_err")
class AbsoluteError(_Ratio):
    """Mean absolute depth error ``|pred - target|`` over the valid pixels (target != 0)."""

    direction = LOWER

    def update(self, output, target):
        target = _channel(target)
        valid = target != 0
        self.total += float(((output - target).abs() * valid).sum())
        self.count += int(valid.sum())


@METRICS.register("rel_err")
class RelativeError(_Ratio):
    """Mean relative depth error ``|pred - target| / target`` over the valid pixels."""

    direction = LOWER

    def update(self, output, target):
        target = _channel(target)
        valid = target != 0
        self.total += float(((output - target).abs()[valid] / target[valid]).sum())
        self.count += int(valid.sum())


def angles(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Angles in degrees between the predicted and target normals, at the valid pixels."""
    valid = _squared_norm(target) > 0
    cosine = (_unit(output) * target).sum(1)[valid]
    return torch.rad2deg(torch.acos(cosine.clamp(-1.0, 1.0)))


@METRICS.register("mean_angle")
class MeanAngle(_Ratio):
    """Mean angle (degrees) between predicted and target normals over the valid pixels."""

    direction = LOWER

    def update(self, output, target):
        a = angles(output, target)
        self.total += float(a.double().sum())
        self.count += a.numel()


@METRICS.register("median_angle")
class MedianAngle(Metric):
    """Median angle (degrees) over every valid pixel of the split.

    .. note:: The angles are kept as a histogram of ``ANGLE_BIN`` (0.01 degree) bins, so memory
       does not grow with the split; the median is the centre of the bin holding it, within 0.005
       degrees of the exact value.
    """

    direction = LOWER

    def __init__(self) -> None:
        super().__init__()
        self.histogram = torch.zeros(ANGLE_BINS, dtype=torch.int64)

    def update(self, output, target):
        bins = (angles(output, target) / ANGLE_BIN).long().clamp(0, ANGLE_BINS - 1)
        self.histogram += torch.bincount(bins, minlength=ANGLE_BINS).cpu()
        self.count += bins.numel()

    def compute(self) -> float:
        if self.count == 0:
            raise ValueError("metric `median_angle` has seen no valid pixel")
        # the lower median: the first bin where the running count reaches half of the pixels
        index = int(torch.searchsorted(self.histogram.cumsum(0), (self.count + 1) // 2))
        return (index + 0.5) * ANGLE_BIN


class _Within(_Ratio):
    """Fraction of valid pixels whose angle error is below ``threshold`` degrees."""

    direction = HIGHER
    threshold: float

    def update(self, output, target):
        a = angles(output, target)
        self.total += int((a < self.threshold).sum())
        self.count += a.numel()


@METRICS.register("within_11_25")
class Within11(_Within):
    """Fraction of valid pixels with an angle error below 11.25 degrees."""

    threshold = 11.25


@METRICS.register("within_22_5")
class Within22(_Within):
    """Fraction of valid pixels with an angle error below 22.5 degrees."""

    threshold = 22.5


@METRICS.register("within_30")
class Within30(_Within):
    """Fraction of valid pixels with an angle error below 30 degrees."""

    threshold = 30.0


@METRICS.register("edge_f_at_0_5")
class EdgeF(Metric):
    """F-measure of the edge pixels at the fixed probability threshold 0.5 (logit > 0), from the
    true/false positives and false negatives of every pixel of the split:
    ``F = 2 TP / (2 TP + FP + FN)``, 1 when neither prediction nor target has an edge.

    .. note:: Pixel-exact matching at one threshold, not the ODS F-measure of BSDS (best
       threshold over the dataset, with a distance tolerance) that Vandenhende et al. report.
    """

    direction = HIGHER

    def __init__(self) -> None:
        super().__init__()
        self.tp = self.fp = self.fn = 0

    def update(self, output, target):
        pred = output > 0
        truth = _channel(target) > 0.5
        self.tp += int((pred & truth).sum())
        self.fp += int((pred & ~truth).sum())
        self.fn += int((~pred & truth).sum())
        self.count += target.shape[0]

    def compute(self) -> float:
        if self.count == 0:
            raise ValueError("metric `edge_f_at_0_5` has seen no samples")
        denominator = 2 * self.tp + self.fp + self.fn
        return 2 * self.tp / denominator if denominator else 1.0
