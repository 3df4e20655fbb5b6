"""Search backends and reading results (Optuna is the default backend)."""

from .baselines import ensure_baselines
from .optuna_backend import Objective, run_search
from .progress import Progress
from .results import build_model, export_config, front, pick, report, retrain
from .storage import open_storage
from .study import open_study

__all__ = [
    "Objective",
    "Progress",
    "build_model",
    "ensure_baselines",
    "export_config",
    "front",
    "open_storage",
    "open_study",
    "pick",
    "report",
    "retrain",
    "run_search",
]
