"""Search backends and reading results (Optuna is the default backend).

The modules of this package are the engine room; the public API is what ``mtlsearch`` and this
package export in ``__all__``.
"""

from .baselines import ensure_baselines
from .optuna_backend import Objective, run_search
from .progress import Progress
from .results import export_config, front, pick, report, retrain
from .resume import resume

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
    "run_search",
]
