"""Task heads: a linear layer on the pooled feature for vector tasks, a light convolutional
decoder (:class:`DenseHead`) on the spatial feature for dense (per-pixel) tasks.

Pooling has no parameters, so a network pools each distinct final feature once (:func:`pool`)
and every vector task whose path ends there reads the pooled tensor: T heads on one trunk cost
one pooling, not T. Dense heads read the raw ``(N, C, h, w)`` feature (:func:`head_input`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from ..errors import ConfigError
from ..tasks import TaskSpec

DILATIONS = (1, 2, 4)


def pooled_size(feature_shape: tuple[int, ...]) -> int:
    """Features per sample after :func:`pool`: channels for ``(C, H, W)``, else all entries."""
    return feature_shape[0] if len(feature_shape) == 3 else math.prod(feature_shape)


def pool(feature: torch.Tensor) -> torch.Tensor:
    """Global average pooling for image features ``(N, C, H, W)``; flattening for the rest."""
    if feature.dim() == 4:
        return feature.mean(dim=(2, 3))
    return feature.flatten(1)


class DenseHead(nn.Module):
    """A light ASPP-style decoder for one dense task: ``(N, C, h, w) -> (N, out, H, W)``.

    Parallel 3x3 convolutions at ``dilations`` (atrous spatial pyramid pooling, Chen et al.,
    DeepLab v3, arXiv:1706.05587, without the image-level branch), concatenated, BN + ReLU; a 1x1
    projection to ``channels``, BN + ReLU; a 1x1 convolution to ``out_channels``; bilinear
    upsampling to ``size``.

    Args:
        in_channels: ``C``, the channels of the backbone feature.
        out_channels: the task's output channels (classes, 1 for depth, 3 for normals...).
        size: ``(H, W)``, the output's height and width (the input image's).
        channels: the width of each branch and of the projection (default ``in_channels``).
        dilations: one branch per dilation.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        size: Sequence[int],
        channels: int | None = None,
        dilations: Sequence[int] = DILATIONS,
    ):
        super().__init__()
        self.size = (int(size[0]), int(size[1]))
        width = channels or in_channels
        self.branches = nn.ModuleList(
            nn.Conv2d(in_channels, width, 3, padding=d, dilation=d, bias=False) for d in dilations
        )
        self.merge = nn.Sequential(
            nn.BatchNorm2d(width * len(dilations)),
            nn.ReLU(),
            nn.Conv2d(width * len(dilations), width, 1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(),
        )
        self.out = nn.Conv2d(width, out_channels, 1)

    def forward(self, feature: torch.Tensor) -> torch.Tensor:
        y = self.merge(torch.cat([b(feature) for b in self.branches], 1))
        y = self.out(y)
        if tuple(y.shape[-2:]) != self.size:
            y = F.interpolate(y, size=self.size, mode="bilinear", align_corners=False)
        return y

    def extra_repr(self) -> str:
        return f"size={self.size}"


def is_dense(task: TaskSpec) -> bool:
    return task.kind.dense


def build_head(feature_shape: tuple[int, ...], task: TaskSpec, input_shape: Sequence[int] | None = None) -> nn.Module:
    """The head of one task on features of per-sample shape ``feature_shape``.

    Vector tasks: ``Linear(pooled features, output_dim)``, read from :func:`pool`'s output.
    Dense tasks: ``DenseHead(C, output_dim, size=input_shape[-2:])`` on the raw ``(C, h, w)``
    feature; ``input_shape`` is the network's ``(C_in, H, W)`` (default: the feature's own
    height and width).
    """
    if not is_dense(task):
        return nn.Linear(pooled_size(feature_shape), task.kind.output_dim(task))
    if len(feature_shape) != 3:
        raise ConfigError(
            "backbone",
            f"task `{task.name}` ({task.type}) needs image features (C, H, W) from the backbone, found "
            f"{tuple(feature_shape)}; use a convolutional backbone such as `cnn`",
        )
    size = tuple(input_shape[-2:]) if input_shape is not None else tuple(feature_shape[-2:])
    if input_shape is not None and len(input_shape) != 3:
        raise ConfigError(
            "data",
            f"task `{task.name}` ({task.type}) needs image inputs (C, H, W), found input shape {tuple(input_shape)}",
        )
    return DenseHead(feature_shape[0], task.kind.output_dim(task), size)


def apply_heads(
    heads: nn.ModuleDict, dense: Mapping[str, bool], features: Mapping[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """``{task: heads[task](its input)}`` for ``features`` (per task, its final feature): a dense
    task's head reads the raw feature; a feature that vector tasks read is pooled once, however
    many tasks share it."""
    pooled: dict[int, torch.Tensor] = {}
    out = {}
    for t, feature in features.items():
        if dense[t]:
            out[t] = heads[t](feature)
        else:
            if id(feature) not in pooled:  # the same tensor object: the same feature
                pooled[id(feature)] = pool(feature)
            out[t] = heads[t](pooled[id(feature)])
    return out
