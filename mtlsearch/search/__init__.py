"""Search backends and reading results (Optuna is the default backend).

The public API is what ``mtlsearch`` and this package export in ``__all__``, and the
:mod:`mtlsearch.search.results` module (report, pick, export, retrain). The underscored modules
are the engine room: one trial runner (``_trial``) that the Optuna objective (``_optuna_backend``)
and the Ray trainable (``_ray_backend``) adapt; they may change between releases. See
docs/search.md.
"""

from typing import Any

from ._baselines import ensure_baselines
from ._optuna_backend import Objective, run_search
from ._progress import Progress
from ._resume import resume
from .results import export_config, front, pick, report, retrain

__all__ = [
    "Objective",
    "Progress",
    "ensure_baselines",
    "export_config",
    "front",
    "pick",
    "report",
    "resume",
    "retrain",
    "run_ray",
    "run_search",
]


def __getattr__(name: str) -> Any:
    if name == "run_ray":  # Ray is imported only when asked for
        from ._ray_backend import run_ray

        return run_ray
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
