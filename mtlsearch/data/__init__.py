"""Data sources: built-in offline benchmarks and the contract for bringing your own."""

from .base import BENCHMARKS, MTLData, TensorMTLDataset, split_indices
from . import mmoe_synthetic, multidigits  # noqa: F401  (registers the built-in benchmarks)

__all__ = ["BENCHMARKS", "MTLData", "TensorMTLDataset", "split_indices"]
