"""Task heads: a linear layer on the pooled, flattened feature of the task's last block.

Pooling has no parameters, so a network pools each distinct final feature once (:func:`pool`)
and every task whose path ends there reads the pooled tensor: T heads on one trunk cost one
pooling, not T.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..tasks import TaskSpec


def pooled_size(feature_shape: tuple[int, ...]) -> int:
    """Features per sample after :func:`pool`: channels for ``(C, H, W)``, else all entries."""
    return feature_shape[0] if len(feature_shape) == 3 else math.prod(feature_shape)


def pool(feature: torch.Tensor) -> torch.Tensor:
    """Global average pooling for image features ``(N, C, H, W)``; flattening for the rest."""
    if feature.dim() == 4:
        return feature.mean(dim=(2, 3))
    return feature.flatten(1)


def build_head(feature_shape: tuple[int, ...], task: TaskSpec) -> nn.Module:
    """``Linear(pooled features, output_dim)`` for one task."""
    return nn.Linear(pooled_size(feature_shape), task.kind.output_dim(task))
