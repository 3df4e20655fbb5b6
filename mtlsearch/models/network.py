"""Multi-task networks: the :class:`MultiTaskNetwork` contract, and the network of a path-based
candidate (:class:`PathNetwork`).

A candidate gives, for every task, a *path*: for each block, the key of the module that computes
that block for the task, or ``None`` to skip it (identity). Modules with the same key at the same
block are one module (shared weights). The forward pass computes every distinct path *prefix*
once: tasks whose paths agree up to block b share all computation up to b, so hard sharing runs the
trunk once for all tasks, and a tree runs each node once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import cast

import torch
from torch import nn

from ..errors import ConfigError
from ..tasks import TaskSpec
from .backbones import Backbone
from .heads import apply_heads, build_head

Path = tuple[str | None, ...]


class MultiTaskNetwork(nn.Module):
    """Base of every network a family builds.

    Contract:

    * ``forward(x)`` takes a batch ``(N, *input_shape)`` and returns ``{task name: head output}``
      for every task in ``task_names``, on the input's device;
    * after a forward pass, ``shared_feature`` is a tensor that every task's output depends on and
      that depends on all parameters every task shares (used by feature-level methods such as
      MGDA-UB), or ``None`` where there is no such tensor;
    * ``task_parameters()`` returns, per task, the parameters that task's output depends on. The
      default finds them once by back-propagating each task's output of a zero batch (in eval mode,
      so no running statistic moves) and caches the answer; subclasses with a cheaper exact answer
      override it. Gradient aggregation relies on it: a parameter a task uses but that is not
      listed would miss that task's gradient.
    """

    def __init__(self, task_names: Sequence[str], input_shape: Sequence[int]):
        super().__init__()
        self.task_names = list(task_names)
        self.input_shape = tuple(input_shape)
        self.shared_feature: torch.Tensor | None = None
        self._task_parameters: dict[str, list[nn.Parameter]] | None = None

    def task_parameters(self) -> dict[str, list[nn.Parameter]]:
        if self._task_parameters is None:
            self._task_parameters = traced_task_parameters(self, self.input_shape)
        return self._task_parameters


def traced_task_parameters(model: nn.Module, input_shape: Sequence[int]) -> dict[str, list[nn.Parameter]]:
    """Per task, the parameters its output is connected to in the autograd graph of one forward."""
    params = [p for p in model.parameters() if p.requires_grad]
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad():
            x = torch.zeros(2, *input_shape, device=params[0].device if params else None)
            out = model(x)
            found = {}
            names = list(out)
            for i, t in enumerate(names):
                grads = torch.autograd.grad(out[t].sum(), params, retain_graph=i < len(names) - 1, allow_unused=True)
                found[t] = [p for p, g in zip(params, grads) if g is not None]
    finally:
        model.train(was_training)
    return found


class PathNetwork(MultiTaskNetwork):
    """Blocks per distinct module key, one head per task; ``forward(x) -> {task: output}``.

    The last block's distinct features are pooled once each (:func:`~mtlsearch.models.heads.pool`)
    and shared by the linear heads of the vector tasks whose paths end there; a dense task's head
    reads the raw feature (:func:`~mtlsearch.models.heads.apply_heads`).

    Parameter names are ``blocks.<block_name>.<key>.*`` and ``heads.<task>.*``, so a rebuilt
    candidate has the same names as the one that was trained. After a forward pass,
    ``shared_feature`` is the output of the deepest block every task passes through (or ``None``),
    and ``task_parameters()`` says which parameters each task uses (for gradient aggregation).
    """

    def __init__(self, backbone: Backbone, tasks: Sequence[TaskSpec], paths: Mapping[str, Path]):
        super().__init__([t.name for t in tasks], backbone.input_shape)
        names = backbone.block_names
        self.paths = {t: tuple(paths[t]) for t in self.task_names}
        for t, path in self.paths.items():
            if len(path) != len(names):
                raise ConfigError(f"paths.{t}", f"expected {len(names)} entries (one per block), found {len(path)}")
        self.blocks = nn.ModuleDict()
        for b, block_name in enumerate(names):
            keys = sorted({key for p in self.paths.values() if (key := p[b]) is not None})
            in_shape, out_shape = backbone.shapes[b]
            if any(p[b] is None for p in self.paths.values()) and in_shape != out_shape:
                raise ConfigError(
                    f"paths.{block_name}",
                    f"block `{block_name}` cannot be skipped: its input shape {in_shape} differs from its "
                    f"output shape {out_shape}",
                )
            self.blocks[block_name] = nn.ModuleDict({k: backbone.build_block(b) for k in keys})
        self.heads = nn.ModuleDict({t.name: build_head(backbone.output_shape, t, backbone.input_shape) for t in tasks})
        self._dense = {t.name: t.kind.dense for t in tasks}
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
            modules = cast(nn.ModuleDict, self.blocks[block_name])
            features = {
                prefix: features[parent] if key is None else modules[key](features[parent])
                for prefix, (parent, key) in level.items()
            }
            if len(features) == 1:  # every task passes through this feature
                self.shared_feature = next(iter(features.values()))
        return apply_heads(self.heads, self._dense, {t: features[self.paths[t]] for t in self.task_names})

    def task_parameters(self) -> dict[str, list[nn.Parameter]]:
        """The parameters each task's output depends on: its path's blocks and its head."""
        out = {}
        for t, path in self.paths.items():
            params = [
                p
                for name, key in zip(self._block_names, path)
                if key is not None
                for p in cast(nn.ModuleDict, self.blocks[name])[key].parameters()
            ]
            out[t] = params + list(self.heads[t].parameters())
        return out

    def distinct_prefixes(self) -> list[int]:
        """How many block computations each block runs per forward (de-duplicated)."""
        return [sum(1 for _, key in level.values() if key is not None) for level in self._plan]
