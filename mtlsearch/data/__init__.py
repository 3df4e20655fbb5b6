"""Data sources: built-in offline benchmarks and the contract for bringing your own; see docs/data.md."""

from . import (  # noqa: F401  (registers the built-in benchmarks and the loaders of data the user brings)
    celeba,
    cityscapes,
    mmoe_synthetic,
    multidigits,
    multimnist,
    nyuv2,
    scenes,
    tabular,
)
from .base import BENCHMARKS, MTLData, TensorMTLDataset, split_indices

__all__ = ["BENCHMARKS", "MTLData", "TensorMTLDataset", "split_indices"]
