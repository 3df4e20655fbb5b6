"""Search families: each a registered :class:`Family` (see :mod:`mtlsearch.families.base` and
docs/families.md)."""

from . import adapters, adashare, adashare_learned, learn_to_branch, paths, routing, soft  # noqa: F401  (registration)
from .base import FAMILIES, Architecture, Family

__all__ = ["FAMILIES", "Architecture", "Family"]
