"""Backbones (blueprints of named blocks), task heads and the multi-task network; see docs/models.md."""

from .backbones import BACKBONES, CNN, MLP, Backbone
from .heads import DenseHead, build_head
from .network import MultiTaskNetwork, PathNetwork, traced_task_parameters
from .torchvision_backbones import TorchvisionBackbone  # registers resnet18, ..., efficientnet_b0

__all__ = [
    "BACKBONES",
    "CNN",
    "MLP",
    "Backbone",
    "DenseHead",
    "MultiTaskNetwork",
    "PathNetwork",
    "TorchvisionBackbone",
    "build_head",
    "traced_task_parameters",
]
