"""Loss weightings and gradient aggregators (see :mod:`mtlsearch.weighting.base`).

Importing this package registers every method under its search-space name. The maths, solvers
and differences from the papers are in docs/weighting.md.
"""

from . import (  # noqa: F401  (registers every method)
    aligned_mtl,
    cagrad,
    config_grad,
    cr_mogm,
    db_mtl,
    distill,
    dualproj,
    dwa,
    excess_mtl,
    fairgrad,
    famo,
    gls,
    graddrop,
    gradnorm,
    gradvac,
    great,
    imtl_g,
    imtl_l,
    mgda,
    moco,
    modo,
    nash_mtl,
    pcd,
    pcgrad,
    rlw,
    sdmgrad,
    static,
    stch,
    uncertainty,
    upgrad,
)
from .base import AGGREGATORS, METHODS, WEIGHTINGS, Aggregator, StepContext, Weighting, register
from .schedule import SCHEDULES, TaskSchedule
from .strategy import STRATEGIES, StrategyError, TrainingStrategy

__all__ = [
    "AGGREGATORS",
    "METHODS",
    "SCHEDULES",
    "STRATEGIES",
    "WEIGHTINGS",
    "Aggregator",
    "StepContext",
    "StrategyError",
    "TaskSchedule",
    "TrainingStrategy",
    "Weighting",
    "register",
]
