"""Search backends and reading results (Optuna is the default backend)."""

from .progress import Progress
from .results import build_model, export_config, front, pick, report, retrain
from .study import Objective, ensure_baselines, open_storage, open_study, run_search

__all__ = [
    "Objective", "Progress", "build_model", "ensure_baselines", "export_config", "front",
    "open_storage", "open_study", "pick", "report", "retrain", "run_search",
]
