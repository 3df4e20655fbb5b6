"""Backbones (blueprints of named blocks), task heads and the multi-task network."""

from .backbones import BACKBONES, CNN, MLP, Backbone
from .heads import build_head
from .network import PathNetwork

__all__ = ["BACKBONES", "CNN", "MLP", "Backbone", "PathNetwork", "build_head"]
