"""mtlsearch: architecture search for multi-task learning on PyTorch, with Optuna.

The Python API in a few lines::

    import optuna, mtlsearch

    problem, run = mtlsearch.load("search_spaces/multidigits.yaml")   # validated space + run settings
    study = mtlsearch.run_search(problem.space, run)                  # what `mtlsearch run` does

    # or plug mtlsearch into your own Optuna study:
    study = optuna.create_study(directions=problem.directions)
    study.optimize(mtlsearch.Objective(problem), n_trials=10, catch=(mtlsearch.NonFiniteLossError,))

    model = mtlsearch.build_model(problem, study.best_trials[0].params)   # a trial's model
    model = mtlsearch.build_model("best.yaml")                           # an exported config's model
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
    return Problem(space), run


def build_model(source: Any, params: Any = None, seed: "int | None" = None):
    """Build a multi-task model.

    * ``build_model("best.yaml")`` or ``build_model(exported_dict)``: the exact model of a config
      written by ``mtlsearch export`` (initialised from its seed);
    * ``build_model(problem_or_space, trial_or_params, seed=0)``: the candidate of an Optuna trial
      (``Trial``/``FrozenTrial``) or of a fixed parameter dict, replayed through the same code
      that sampled it. A family that learns its architecture inside a trial needs the learned
      record: a FrozenTrial carries it (user attr ``learned``); with a dict, pass
      ``{"params": ..., "learned": ...}``.
    """
    from .search.results import build_model as build_exported

    if params is None:
        return build_exported(source, seed)
    problem = source if isinstance(source, Problem) else Problem(source)
    from optuna.trial import FrozenTrial

    if isinstance(params, dict):
        candidate = (
            problem.replay(params["params"], params.get("learned")) if "params" in params else problem.replay(params)
        )
    elif isinstance(params, FrozenTrial):  # a finished trial: replay it (FrozenTrial can suggest too)
        candidate = problem.replay(params.params, params.user_attrs.get("learned"))
    else:  # a live trial: sample through it
        candidate = problem.sample(params)
    return candidate.build_model(0 if seed is None else seed)


from .search import Objective, Progress, retrain, run_search  # noqa: E402  (search imports this package)

__all__ = [
    "__version__",
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
    "build_model",
    "load",
    "retrain",
    "run_search",
]
