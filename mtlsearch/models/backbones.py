"""Backbones as ordered lists of named blocks with known shapes.

A :class:`Backbone` is a *blueprint*, not a module: families that split, gate or route a network
need several independent copies of one block (one per tree node), so a backbone hands out fresh
blocks by index. Everything downstream works on this contract only:

* ``block_names``: the names of the B blocks, in order (used in parameter names and reports);
* ``shapes[b]``: the per-sample ``(input_shape, output_shape)`` of block ``b``;
* ``build_block(b)``: a new, independently initialised ``nn.Module`` for block ``b``;
* ``output_shape``: the per-sample shape after the last block, which task heads consume.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

import torch
from torch import nn

from ..config import as_float, as_int
from ..errors import ConfigError
from ..registry import Registry


class Backbone(ABC):
    """Blueprint of a network cut into named blocks. Subclasses validate their hyperparameters in
    ``__init__`` and implement ``_make_block``; shapes are found by running a zero input once."""

    name: ClassVar[str]

    def __init__(self, input_shape: tuple[int, ...]):
        self.input_shape = tuple(int(s) for s in input_shape)
        shapes = []
        x = torch.zeros(2, *self.input_shape)
        with torch.no_grad():
            for b in range(self.num_blocks):
                block = self._make_block(b).eval()
                y = block(x)
                shapes.append((tuple(x.shape[1:]), tuple(y.shape[1:])))
                x = y
        self.shapes: list[tuple[tuple[int, ...], tuple[int, ...]]] = shapes

    @property
    @abstractmethod
    def num_blocks(self) -> int: ...

    @abstractmethod
    def _make_block(self, index: int) -> nn.Module: ...

    @property
    def block_names(self) -> list[str]:
        return [f"block{b}" for b in range(self.num_blocks)]

    def build_block(self, index: int) -> nn.Module:
        return self._make_block(index)

    @property
    def output_shape(self) -> tuple[int, ...]:
        return self.shapes[-1][1]

    def hyperparameters(self) -> dict:
        return {}

    def __repr__(self) -> str:
        hp = ", ".join(f"{k}={v!r}" for k, v in self.hyperparameters().items())
        return f"{type(self).__name__}(input_shape={self.input_shape}, {hp})"


BACKBONES: Registry[type[Backbone]] = Registry("backbone")


@BACKBONES.register("mlp")
class MLP(Backbone):
    """Fully connected blocks ``Linear -> ReLU`` of constant ``width``; block 0 flattens the input.

    Blocks 1..depth-1 map ``(width,)`` to ``(width,)``, so they can be skipped as identities.
    """

    def __init__(self, input_shape, width: int = 64, depth: int = 3, dropout: float = 0.0):
        self.width = as_int(width, "width", 1, bound="width")
        self.depth = as_int(depth, "depth", 1, bound="depth")
        self.dropout = as_float(dropout, "dropout", 0.0)
        if self.dropout >= 1:
            raise ConfigError("dropout", f"expected a number in [0, 1), found {self.dropout:g}")
        super().__init__(input_shape)

    @property
    def num_blocks(self) -> int:
        return self.depth

    def _make_block(self, index: int) -> nn.Module:
        layers: list[nn.Module] = []
        if index == 0:
            in_features = 1
            for s in self.input_shape:
                in_features *= s
            layers += [nn.Flatten(), nn.Linear(in_features, self.width)]
        else:
            layers.append(nn.Linear(self.width, self.width))
        layers.append(nn.ReLU())
        if self.dropout:
            layers.append(nn.Dropout(self.dropout))
        return nn.Sequential(*layers)

    def hyperparameters(self):
        return {"width": self.width, "depth": self.depth, "dropout": self.dropout}


@BACKBONES.register("cnn")
class CNN(Backbone):
    """Convolutional blocks ``Conv3x3 -> BatchNorm -> ReLU [-> MaxPool2]`` of ``channels`` filters.

    A block halves the spatial size (max-pool) while both its input sides are at least
    ``2 * min_size``; later blocks keep the shape and can be skipped as identities.
    Inputs are ``(C, H, W)`` images.
    """

    def __init__(self, input_shape, channels: int = 32, depth: int = 3, min_size: int = 2):
        if len(tuple(input_shape)) != 3:
            raise ConfigError(
                "name",
                f"backbone `cnn` needs image inputs of shape (C, H, W), found input shape {tuple(input_shape)}; "
                "use `mlp` for vectors",
            )
        self.channels = as_int(channels, "channels", 1, bound="channels")
        self.depth = as_int(depth, "depth", 1, bound="depth")
        self.min_size = as_int(min_size, "min_size", 1)
        self._pool = []
        h, w = int(input_shape[1]), int(input_shape[2])
        for _ in range(self.depth):
            pool = min(h, w) >= 2 * self.min_size
            self._pool.append(pool)
            if pool:
                h, w = h // 2, w // 2
        super().__init__(input_shape)

    @property
    def num_blocks(self) -> int:
        return self.depth

    def _make_block(self, index: int) -> nn.Module:
        c_in = self.input_shape[0] if index == 0 else self.channels
        layers: list[nn.Module] = [
            nn.Conv2d(c_in, self.channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(self.channels),
            nn.ReLU(),
        ]
        if self._pool[index]:
            layers.append(nn.MaxPool2d(2))
        return nn.Sequential(*layers)

    def hyperparameters(self):
        return {"channels": self.channels, "depth": self.depth, "min_size": self.min_size}
