"""Backbones (blueprints of named blocks), task heads and the multi-task network; see docs/models.md."""

from .backbones import BACKBONES, CNN, MLP, Backbone
from .heads import build_head
from .network import MultiTaskNetwork, PathNetwork, traced_task_parameters

__all__ = [
    "BACKBONES",
    "CNN",
    "MLP",
    "Backbone",
    "MultiTaskNetwork",
    "PathNetwork",
    "build_head",
    "traced_task_parameters",
]
