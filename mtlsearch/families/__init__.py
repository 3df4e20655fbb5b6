"""Search families: each a registered :class:`Family` (see :mod:`mtlsearch.families.base`)."""

from .base import FAMILIES, Architecture, Family
from . import paths  # noqa: F401  (registers single_task, hard_sharing, tree)

__all__ = ["FAMILIES", "Architecture", "Family"]
