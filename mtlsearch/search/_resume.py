"""Continuing a stored study from Python, as ``mtlsearch resume`` does."""

from __future__ import annotations

from typing import Any

import optuna

from ..storage_url import resolve
from ._progress import QUIET, Progress
from ._storage import load_study
from ._study import resumed_run, stored_problem

DEFAULT_STORAGE = "sqlite:///mtlsearch.db"


def resume(
    study_name: str,
    storage: str | None = None,
    *,
    n_trials: int | None = None,
    backend: str = "optuna",
    progress: Progress = QUIET,
    ray: dict[str, Any] | None = None,
    **overrides: Any,
) -> optuna.Study:
    """Continue ``study_name`` with the space, seed, sampler and run settings stored in it.

    Args:
        storage: the storage URL (default: ``$MTLSEARCH_STORAGE``, else ``sqlite:///mtlsearch.db``).
        n_trials: the study-wide number of finished trials to reach (default: the last target).
        backend: ``optuna`` (this process and its workers) or ``ray`` (restores the interrupted
            Tune experiment when there is one).
        ray: with ``backend="ray"``, the options of :func:`~mtlsearch.search._ray_backend.run_ray`
            (``address``, ``cpus_per_trial``, ``gpus_per_trial``, ``max_concurrent``).
        overrides: run settings to change (``timeout``, ``device``, ``workers``,
            ``early_stopping``, ``heartbeat_interval``, ``grace_period``); ``None`` keeps the stored one.
    """
    url = resolve(storage, None, DEFAULT_STORAGE)
    study = load_study(study_name, url)
    run = resumed_run(study, url, n_trials=n_trials, **overrides)
    problem = stored_problem(study, progress)
    if backend == "ray":
        from ._ray_backend import run_ray

        return run_ray(problem, run, progress, resume=True, **(ray or {}))
    if backend != "optuna":
        from ..errors import ConfigError

        raise ConfigError("backend", f"unknown backend `{backend}`; choose one of: optuna, ray")
    from ._optuna_backend import run_search

    return run_search(problem, run, progress)
