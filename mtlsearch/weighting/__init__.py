"""Loss weightings: each a registered :class:`Weighting` (see :mod:`mtlsearch.weighting.base`)."""

from .base import WEIGHTINGS, Weighting
from . import static  # noqa: F401  (registers equal, static)

__all__ = ["WEIGHTINGS", "Weighting"]
