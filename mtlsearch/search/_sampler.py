"""The Optuna samplers a study can use, by name, seeded afresh for each trial from the run seed and
the trial number, so that no two processes repeat draws."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any

import optuna
from optuna.distributions import BaseDistribution
from optuna.trial import FrozenTrial, TrialState

from ..errors import ConfigError


def _tpe(seed: int) -> optuna.samplers.BaseSampler:
    return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True, n_startup_trials=8)


def _nsga2(seed: int) -> optuna.samplers.BaseSampler:
    return optuna.samplers.NSGAIISampler(seed=seed, population_size=10)


def _random(seed: int) -> optuna.samplers.BaseSampler:
    return optuna.samplers.RandomSampler(seed=seed)


SAMPLERS: dict[str, Callable[[int], optuna.samplers.BaseSampler]] = {"tpe": _tpe, "nsga2": _nsga2, "random": _random}


def sampler_seed(seed: int, trial_number: int) -> int:
    """The seed of the draws for trial ``trial_number``: the run seed mixed with the trial number."""
    return (seed * 1_000_003 + (trial_number + 1) * 7_919) % (2**32)


def _create(name: str, seed: int) -> optuna.samplers.BaseSampler:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return SAMPLERS[name](seed)


class TrialSeeded(optuna.samplers.BaseSampler):
    """The sampler ``name``, created afresh before each trial with :func:`sampler_seed` of the
    trial's number. Trial numbers are unique in a study, so processes that sample at the same
    moment (two ``run`` processes, workers) or a resumed study never replay each other's draws,
    and a trial's draws do not depend on which process asked for it. The samplers keep their
    state in the study, so nothing else is lost by re-creating them."""

    def __init__(self, name: str, seed: int):
        self.name, self.seed = name, seed
        self._sampler = _create(name, sampler_seed(seed, -1))

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self._sampler = _create(self.name, sampler_seed(self.seed, trial.number))
        self._sampler.before_trial(study, trial)

    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return self._sampler.infer_relative_search_space(study, trial)

    def sample_relative(
        self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        return self._sampler.sample_relative(study, trial, search_space)

    def sample_independent(
        self, study: optuna.Study, trial: FrozenTrial, param_name: str, param_distribution: BaseDistribution
    ) -> Any:
        return self._sampler.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(
        self, study: optuna.Study, trial: FrozenTrial, state: TrialState, values: Sequence[float] | None
    ) -> None:
        self._sampler.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        pass  # each trial is seeded by its number


def make_sampler(name: str, seed: int) -> optuna.samplers.BaseSampler:
    """The sampler ``name`` (``tpe``, ``nsga2``, ``random``) seeded per trial (:class:`TrialSeeded`)."""
    if name not in SAMPLERS:
        raise ConfigError("run.sampler", f"unknown sampler `{name}`; choose one of: {', '.join(SAMPLERS)}")
    return TrialSeeded(name, seed)
