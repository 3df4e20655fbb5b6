"""Search families: each a registered :class:`Family` (see :mod:`mtlsearch.families.base`)."""

from .base import FAMILIES, Architecture, Family
from . import adashare, paths, routing  # noqa: F401  (registration)

__all__ = ["FAMILIES", "Architecture", "Family"]
