"""Task heads: a pooled, flattened feature -> a linear layer of the task's output size."""

from __future__ import annotations

from torch import nn

from ..tasks import TaskSpec


def build_head(feature_shape: tuple[int, ...], task: TaskSpec) -> nn.Module:
    """Global average pooling for ``(C, H, W)`` features, then ``Linear(features, output_dim)``."""
    out = task.kind.output_dim(task)
    if len(feature_shape) == 3:
        return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(feature_shape[0], out))
    features = 1
    for s in feature_shape:
        features *= s
    return nn.Sequential(nn.Flatten(), nn.Linear(features, out))
