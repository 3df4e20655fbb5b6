"""The Optuna samplers a study can use, by name, seeded so that no two processes repeat draws."""

from __future__ import annotations

import warnings
from collections.abc import Callable

import optuna

from ..errors import ConfigError


def _tpe(seed: int) -> optuna.samplers.BaseSampler:
    return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True, n_startup_trials=8)


def _nsga2(seed: int) -> optuna.samplers.BaseSampler:
    return optuna.samplers.NSGAIISampler(seed=seed, population_size=10)


def _random(seed: int) -> optuna.samplers.BaseSampler:
    return optuna.samplers.RandomSampler(seed=seed)


SAMPLERS: dict[str, Callable[[int], optuna.samplers.BaseSampler]] = {"tpe": _tpe, "nsga2": _nsga2, "random": _random}


def sampler_seed(seed: int, n_finished: int, worker: int = 0) -> int:
    """Mixes the run seed with the number of finished trials and the worker: a sampler re-created
    with the same seed in a new process, or in a second worker started at the same moment, would
    otherwise draw the same configurations again."""
    return (seed * 1_000_003 + n_finished * 7_919 + worker * 104_729) % (2**32)


def make_sampler(name: str, seed: int, n_finished: int, worker: int = 0) -> optuna.samplers.BaseSampler:
    if name not in SAMPLERS:
        raise ConfigError("run.sampler", f"unknown sampler `{name}`; choose one of: {', '.join(SAMPLERS)}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return SAMPLERS[name](sampler_seed(seed, n_finished, worker))
