"""Bring your own data: a factory that mtlsearch calls by import path.

Point a space at it with::

    data:
      factory: custom_data:make_data     # module on PYTHONPATH : function
      seed: 0
      n: 1200                            # any other key is passed to the factory

The factory receives ``seed`` and the extra keys and returns ``MTLData``: train / val / test
datasets whose items are ``(x, {task: target})``, and one ``TaskSpec`` per task (name, type,
metrics; a metric's direction, higher or lower is better, comes with the metric). Any
``torch.utils.data.Dataset`` works; ``TensorMTLDataset`` is fastest for data that fits in memory.
Split deterministically from ``seed``: mtlsearch records the seed and split sizes with the study.
"""

from __future__ import annotations

import torch

from mtlsearch.data import MTLData, TensorMTLDataset, split_indices
from mtlsearch.tasks import TaskSpec


def make_data(seed: int = 0, n: int = 1200, features: int = 16) -> MTLData:
    """Two toy tasks on the same random features: the sign of a projection (binary) and a
    noisy quadratic of it (regression)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, features, generator=g)
    w = torch.randn(features, generator=g) / features**0.5
    z = x @ w
    targets = {"positive": (z > 0).float(), "energy": z**2 + 0.1 * torch.randn(n, generator=g)}
    train, val, test = split_indices(n, (0.6, 0.2, 0.2), seed)
    split = lambda idx: TensorMTLDataset(x[idx], {k: v[idx] for k, v in targets.items()})  # noqa: E731
    tasks = [
        TaskSpec("positive", "binary", metrics=("accuracy",)),
        TaskSpec("energy", "regression", metrics=("mae", "rmse")),
    ]
    return MTLData(split(train), split(val), split(test), tasks, info={"features": features})
