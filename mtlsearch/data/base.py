"""What a data source gives mtlsearch: three splits and the tasks they are labelled for.

A data *factory* is any callable ``factory(seed: int, **params) -> MTLData``. Built-in benchmarks
are registered by name in :data:`BENCHMARKS`; a user's own data is named by import path
(``my_package.my_module:make_data``) in the ``data.factory`` field of a space.

Contract of :class:`MTLData`:

* ``train``, ``val``, ``test`` are ``torch.utils.data.Dataset`` objects whose items are
  ``(x, {task_name: target})``; every item of a split has the same input shape.
* ``tasks`` lists a :class:`~mtlsearch.tasks.TaskSpec` for each task the targets hold (a space may
  declare its tasks itself; then the factory may leave this empty).
* Splits are deterministic given ``seed``: the same seed gives the same samples in the same order.
* ``info`` holds facts worth recording with a study (sizes, measured label correlation...); it must
  be JSON-serialisable.

The search reads only ``train`` and ``val``; ``test`` is read by ``mtlsearch train`` alone.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sized
from dataclasses import dataclass, field
from typing import cast

import torch
from torch.utils.data import Dataset

from ..registry import Registry
from ..tasks import TaskSpec


class TensorMTLDataset(Dataset):
    """A split held in memory as one input tensor and one target tensor per task.

    The trainer batches these by slicing, which is much faster than a ``DataLoader`` for small data.
    """

    def __init__(self, inputs: torch.Tensor, targets: Mapping[str, torch.Tensor]):
        n = inputs.shape[0]
        for name, t in targets.items():
            if t.shape[0] != n:
                raise ValueError(f"targets of task `{name}` have {t.shape[0]} rows, inputs have {n}")
        self.inputs = inputs
        self.targets = dict(targets)

    def __len__(self) -> int:
        return self.inputs.shape[0]

    def __getitem__(self, i):
        return self.inputs[i], {k: v[i] for k, v in self.targets.items()}


@dataclass
class MTLData:
    """Train / val / test splits of a multi-task problem, with its tasks."""

    train: Dataset
    val: Dataset
    test: Dataset
    tasks: list[TaskSpec] = field(default_factory=list)
    info: dict = field(default_factory=dict)

    def sizes(self) -> dict[str, int]:
        # A split must have a length; torch's Dataset does not declare `__len__`.
        return {
            "train": len(cast(Sized, self.train)),
            "val": len(cast(Sized, self.val)),
            "test": len(cast(Sized, self.test)),
        }


DataFactory = Callable[..., MTLData]

BENCHMARKS: Registry[DataFactory] = Registry("benchmark")


def split_indices(
    n: int, fractions: tuple[float, float, float], seed: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A seeded random partition of ``range(n)`` into train / val / test by ``fractions``."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_train = int(round(fractions[0] * n))
    n_val = int(round(fractions[1] * n))
    return perm[:n_train], perm[n_train : n_train + n_val], perm[n_train + n_val :]
