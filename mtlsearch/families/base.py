"""The search-family extension point.

A *family* is a kind of multi-task architecture (hard sharing, a branched tree, layer gating...).
It turns trial parameters into an :class:`Architecture` and an architecture into a model.

Contract of :class:`Family`:

* ``__init__(**hyperparameters)`` takes the family's fixed settings from the space
  (``search_space.tree: {max_groups: 3}``), validates them and raises
  :class:`~mtlsearch.errors.ConfigError` naming the field; ``repr`` shows them.
* ``sample(trial, tasks, block_names)`` draws the architecture through an Optuna-like trial
  (``Trial``, ``FixedTrial``); its parameter names start with ``"<family name>."``. Replaying the
  same parameters through ``FixedTrial`` returns the same architecture: this is how an exported
  candidate is rebuilt.
* ``build(architecture, backbone, tasks)`` returns an ``nn.Module`` whose ``forward(x)`` returns
  ``{task name: head output}``. Path families use :class:`~mtlsearch.models.PathNetwork`.
* Any labelling the sampler can produce must be a valid architecture (no rejection).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from torch import nn

from ..models.backbones import Backbone
from ..models.network import Path, PathNetwork
from ..registry import Registry
from ..tasks import TaskSpec


@dataclass(frozen=True)
class Architecture:
    """A sampled architecture: per task, per block, the key of the module that computes it."""

    family: str
    paths: Mapping[str, Path]

    def to_dict(self) -> dict[str, Any]:
        return {"family": self.family, "paths": {t: list(p) for t, p in self.paths.items()}}

    def sharing(self, block_names: Sequence[str]) -> list[list[list[str]]]:
        """Per block, the groups of tasks that share that block's computation (same prefix)."""
        out = []
        for b in range(len(block_names)):
            groups: dict[Path, list[str]] = {}
            for t, p in self.paths.items():
                groups.setdefault(tuple(p[: b + 1]), []).append(t)
            out.append(list(groups.values()))
        return out

    def describe(self, block_names: Sequence[str]) -> str:
        """One line per block: ``block1: left+right | sum``."""
        lines = []
        for name, groups in zip(block_names, self.sharing(block_names)):
            lines.append(f"{name}: " + " | ".join("+".join(g) for g in groups))
        return "\n".join(lines)


class Family(ABC):
    """Base of every search family (see the module docstring for the contract)."""

    name: ClassVar[str]
    citation: ClassVar[str] = ""

    def __init__(self) -> None:  # families without hyperparameters
        pass

    @abstractmethod
    def sample(self, trial: Any, tasks: Sequence[str], block_names: Sequence[str]) -> Architecture: ...

    def build(self, architecture: Architecture, backbone: Backbone, tasks: Sequence[TaskSpec]) -> nn.Module:
        return PathNetwork(backbone, tasks, architecture.paths)

    def hyperparameters(self) -> dict[str, Any]:
        return {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.hyperparameters().items())})"


FAMILIES: Registry[type[Family]] = Registry("family")
