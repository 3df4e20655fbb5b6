"""Loss weightings and gradient aggregators (see :mod:`mtlsearch.weighting.base`).

Importing this package registers every method under its search-space name.
"""

from . import (  # noqa: F401  loss weightings  # noqa: F401  aggregators  # noqa: F401  min-norm / game-theoretic methods
    aligned_mtl,
    cagrad,
    dwa,
    graddrop,
    gradnorm,
    gradvac,
    great,
    imtl_g,
    imtl_l,
    mgda,
    nash_mtl,
    pcgrad,
    rlw,
    static,  # noqa: F401  equal, static
    uncertainty,
    upgrad,
)
from .base import AGGREGATORS, METHODS, WEIGHTINGS, Aggregator, StepContext, Weighting, register

__all__ = ["AGGREGATORS", "METHODS", "WEIGHTINGS", "Aggregator", "StepContext", "Weighting", "register"]
