"""Data sources: built-in offline benchmarks and the contract for bringing your own; see docs/data.md."""

from . import mmoe_synthetic, multidigits  # noqa: F401  (registers the built-in benchmarks)
from .base import BENCHMARKS, MTLData, TensorMTLDataset, split_indices

__all__ = ["BENCHMARKS", "MTLData", "TensorMTLDataset", "split_indices"]
