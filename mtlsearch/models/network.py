"""The multi-task network of a path-based candidate.

A candidate gives, for every task, a *path*: for each block, the key of the module that computes
that block for the task, or ``None`` to skip it (identity). Modules with the same key at the same
block are one module (shared weights). The forward pass computes every distinct path *prefix*
once: tasks whose paths agree up to block b share all computation up to b, so hard sharing runs the
trunk once for all tasks, and a tree runs each node once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from ..errors import ConfigError
from ..tasks import TaskSpec
from .backbones import Backbone
from .heads import build_head, pool

Path = tuple[str | None, ...]


class PathNetwork(nn.Module):
    """Blocks per distinct module key, one linear head per task; ``forward(x) -> {task: output}``.

    The last block's distinct features are pooled once each (:func:`~mtlsearch.models.heads.pool`)
    and shared by the heads of the tasks whose paths end there.

    Parameter names are ``blocks.<block_name>.<key>.*`` and ``heads.<task>.*``, so a rebuilt
    candidate has the same names as the one that was trained. After a forward pass,
    ``shared_feature`` is the output of the deepest block every task passes through (or ``None``),
    and ``task_parameters()`` says which parameters each task uses (for gradient aggregation).
    """

    def __init__(self, backbone: Backbone, tasks: Sequence[TaskSpec], paths: Mapping[str, Path]):
        super().__init__()
        names = backbone.block_names
        self.task_names = [t.name for t in tasks]
        self.paths = {t: tuple(paths[t]) for t in self.task_names}
        for t, path in self.paths.items():
            if len(path) != len(names):
                raise ConfigError(f"paths.{t}", f"expected {len(names)} entries (one per block), found {len(path)}")
        self.blocks = nn.ModuleDict()
        for b, block_name in enumerate(names):
            keys = sorted({p[b] for p in self.paths.values() if p[b] is not None})
            in_shape, out_shape = backbone.shapes[b]
            if any(p[b] is None for p in self.paths.values()) and in_shape != out_shape:
                raise ConfigError(
                    f"paths.{block_name}",
                    f"block `{block_name}` cannot be skipped: its input shape {in_shape} differs from its output shape {out_shape}",
                )
            self.blocks[block_name] = nn.ModuleDict({k: backbone.build_block(b) for k in keys})
        self.heads = nn.ModuleDict({t.name: build_head(backbone.output_shape, t) for t in tasks})
        # The plan: per block, each distinct prefix -> (its parent prefix, module key or None).
        self._plan: list[dict[Path, tuple[Path, str | None]]] = []
        for b in range(len(names)):
            level: dict[Path, tuple[Path, str | None]] = {}
            for path in self.paths.values():
                level.setdefault(path[: b + 1], (path[:b], path[b]))
            self._plan.append(level)
        self._block_names = list(names)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        features: dict[Path, torch.Tensor] = {(): x}
        self.shared_feature = None
        for block_name, level in zip(self._block_names, self._plan):
            modules = self.blocks[block_name]
            features = {
                prefix: features[parent] if key is None else modules[key](features[parent])
                for prefix, (parent, key) in level.items()
            }
            if len(features) == 1:  # every task passes through this feature
                self.shared_feature = next(iter(features.values()))
        pooled = {prefix: pool(f) for prefix, f in features.items()}
        return {t: self.heads[t](pooled[self.paths[t]]) for t in self.task_names}

    def task_parameters(self) -> dict[str, list[nn.Parameter]]:
        """The parameters each task's output depends on: its path's blocks and its head."""
        out = {}
        for t, path in self.paths.items():
            params = [p for name, key in zip(self._block_names, path) if key is not None for p in self.blocks[name][key].parameters()]
            out[t] = params + list(self.heads[t].parameters())
        return out

    def distinct_prefixes(self) -> list[int]:
        """How many block computations each block runs per forward (de-duplicated)."""
        return [sum(1 for _, key in level.values() if key is not None) for level in self._plan]
