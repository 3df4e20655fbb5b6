"""mtlsearch: architecture search for multi-task learning on PyTorch, with Optuna.

The Python API in a few lines::

    import mtlsearch

    problem, run = mtlsearch.load("search_spaces/multidigits.yaml")   # validated space + run settings
    study = mtlsearch.run_search(problem, run)                        # what `mtlsearch run` does
    study = mtlsearch.resume(run.study, run.storage, n_trials=30)     # what `mtlsearch resume` does

    # or plug mtlsearch into your own Optuna study:
    study = problem.create_study()                                    # directions and metric names set
    mtlsearch.ensure_baselines(study, problem)                        # single-task baselines, once per study
    study.optimize(mtlsearch.Objective(problem), n_trials=10)

    model = mtlsearch.build_model(problem, study.best_trials[0])      # a trial's model (untrained)
    model = mtlsearch.load_exported("best.yaml")                      # an exported config's model
    affinity = mtlsearch.estimate_affinity(problem)                   # which tasks help which (`mtlsearch affinity`)
    teachers = mtlsearch.single_task_networks(study, problem, "cpu")  # kept baselines (keep_weights), for cka
"""

from pathlib import Path
from typing import Any

from .config import RunConfig, SearchSpace, parse_document, read_yaml
from .errors import ConfigError, MTLSearchError, NonFiniteLossError, StudyMismatchError
from .problem import Candidate, Problem
from .version import __version__


def load(source: "str | Path | dict") -> "tuple[Problem, RunConfig]":
    """Read a YAML space (a path) or a plain dict, check every value, load its data.

    Raises :class:`ConfigError` naming the first bad value's path.
    """
    raw = read_yaml(source) if isinstance(source, (str, Path)) else source
    space, run = parse_document(raw)
    folders = [Path(source).resolve().parent] if isinstance(source, (str, Path)) else []
    return Problem(space, folders=folders), run  # a factory module may sit beside the space file


def build_model(problem: Problem, trial_or_params: Any, seed: int = 0):
    """The untrained model of one candidate of ``problem``, initialised from ``seed``.

    Args:
        trial_or_params: an Optuna ``FrozenTrial`` (its stored learned architecture included), a
            live ``Trial`` (sampled through it), or a parameter dict; for a family that learns its
            architecture inside a trial, pass ``{"params": ..., "learned": ...}``.

    For a config written by ``mtlsearch export``, use :func:`load_exported`.
    """
    if not isinstance(problem, Problem):
        raise TypeError(
            f"build_model(problem, trial_or_params): expected a Problem first, found {type(problem).__name__}; "
            "for an exported config use mtlsearch.load_exported(path)"
        )
    return problem.candidate(trial_or_params).build_model(seed)


def load_exported(config: "str | Path | dict", seed: "int | None" = None):
    """The exact model of a config written by ``mtlsearch export`` (a path or its dict),
    initialised from its seed (or ``seed``); no dataset is loaded."""
    from .search.results import build_model as build_exported

    return build_exported(config, seed)


from .affinity import AffinityResult, estimate_affinity  # noqa: E402
from .search import Objective, Progress, ensure_baselines, resume, retrain, run_search  # noqa: E402
from .search._baselines import single_task_networks  # noqa: E402

__all__ = [
    "AffinityResult",
    "Candidate",
    "ConfigError",
    "MTLSearchError",
    "NonFiniteLossError",
    "Objective",
    "Problem",
    "Progress",
    "RunConfig",
    "SearchSpace",
    "StudyMismatchError",
    "__version__",
    "build_model",
    "ensure_baselines",
    "estimate_affinity",
    "load",
    "load_exported",
    "resume",
    "retrain",
    "run_search",
    "single_task_networks",
]
