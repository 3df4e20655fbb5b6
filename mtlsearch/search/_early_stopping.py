"""Early stopping of unpromising trials in a multi-objective study.

Optuna cannot prune multi-objective studies (``trial.report`` raises there), so mtlsearch stops
trials on a scalar proxy of its own: the validation Delta-MTL after each epoch, recorded in the
trial user attribute ``epoch_delta_mtl`` (one value per finished epoch). A stopped trial ends
PRUNED (``optuna.TrialPruned``), never COMPLETE with partial values, so it never reaches the
Pareto front.

Rule ``median`` (the median stopping rule of Golovin et al., KDD 2017, Google Vizier, as Optuna's
``MedianPruner`` applies it to single-objective studies): after epoch ``e`` (from ``min_epochs``
on, and never after the last epoch), stop the trial when its proxy is below the median of the
proxies of the COMPLETE trials at epoch ``e``, once at least ``min_trials`` of them reached it.

Rule ``asha`` (asynchronous successive halving, Li et al., MLSys 2020, arXiv:1810.05934, with
reduction factor 3): rungs at epochs ``min_epochs * 3**k``; at a rung, a trial goes on only when
its proxy is in the top third of all trials that reached that rung (complete, pruned or running),
once ``min_trials`` of them did. It stops more trials earlier than the median rule.

Costs are not part of the proxy: a cheap candidate with a low Delta-MTL can be stopped although
it might have sat on the (Delta-MTL, cost) front. Use ``early_stopping: none`` when the cheap end
of the front matters more than the compute saved.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

import optuna
from optuna.trial import TrialState

EPOCH_ATTR = "epoch_delta_mtl"


def median_stop(
    value: float, epoch: int, others: Sequence[Sequence[float]], min_trials: int, min_epochs: int
) -> float | None:
    """The median that ``value`` (proxy after ``epoch``, 1-based) falls below, or ``None`` to go on.

    ``others``: the per-epoch proxies of the complete trials (a trial counts at ``epoch`` when it
    has a value there).
    """
    if epoch < min_epochs:
        return None
    at_epoch = [o[epoch - 1] for o in others if len(o) >= epoch]
    if len(at_epoch) < min_trials:
        return None
    median = statistics.median(at_epoch)
    return median if value < median else None


def asha_stop(
    value: float, epoch: int, others: Sequence[Sequence[float]], min_trials: int, min_epochs: int, eta: int = 3
) -> float | None:
    """The top-``1/eta`` cutoff that ``value`` falls below at a rung epoch, or ``None`` to go on."""
    rung = min_epochs
    while rung < epoch:
        rung *= eta
    if rung != epoch:
        return None
    at_epoch = sorted((o[epoch - 1] for o in others if len(o) >= epoch), reverse=True)
    if len(at_epoch) < min_trials:
        return None
    cutoff = at_epoch[max(0, math.ceil(len(at_epoch) / eta) - 1)]
    return cutoff if value < cutoff else None


RULES = {
    "median": (median_stop, (TrialState.COMPLETE,), "the median", "complete trials"),
    "asha": (asha_stop, (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING), "the top-third cutoff", "trials"),
}


@dataclass(frozen=True)
class EarlyStopping:
    """An early-stopping rule (``median`` or ``asha``) with its settings (see the module docstring)."""

    rule: str = "median"
    min_trials: int = 5
    min_epochs: int = 1

    def check(
        self, study: optuna.Study, epoch: int, epochs: int, value: float, number: int | None = None
    ) -> str | None:
        """Why trial ``number`` should stop after ``epoch`` of ``epochs`` with proxy ``value``, or ``None``."""
        if self.rule not in RULES or epoch >= epochs:
            return None
        stop, states, what, whom = RULES[self.rule]
        others = [
            t.user_attrs.get(EPOCH_ATTR, [])
            for t in study.get_trials(deepcopy=False, states=states)
            if t.number != number
        ]
        threshold = stop(value, epoch, others, self.min_trials, self.min_epochs)
        if threshold is None:
            return None
        count = sum(1 for o in others if len(o) >= epoch)
        return (
            f"early stopped after epoch {epoch}/{epochs}: validation Delta-MTL {value:+.2f}% is below {what} "
            f"{threshold:+.2f}% of {count} {whom} at that epoch ({self.rule})"
        )
