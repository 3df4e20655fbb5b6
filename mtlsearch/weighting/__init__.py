"""Loss weightings and gradient aggregators (see :mod:`mtlsearch.weighting.base`).

Importing this package registers every method under its search-space name.
"""

from .base import AGGREGATORS, METHODS, WEIGHTINGS, Aggregator, StepContext, Weighting, register
from . import static  # noqa: F401  equal, static
from . import uncertainty, gradnorm, dwa, rlw, imtl_l, great  # noqa: F401  loss weightings
from . import pcgrad, gradvac, graddrop, imtl_g, aligned_mtl  # noqa: F401  aggregators
from . import mgda, cagrad, upgrad, nash_mtl  # noqa: F401  min-norm / game-theoretic methods

__all__ = ["AGGREGATORS", "METHODS", "WEIGHTINGS", "Aggregator", "StepContext", "Weighting", "register"]
