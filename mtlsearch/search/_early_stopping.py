"""Early stopping of unpromising trials in a multi-objective study.

Optuna cannot prune multi-objective studies, so a trial is stopped on a scalar proxy: its
validation Delta-MTL after each epoch (trial user attribute ``epoch_delta_mtl``). A stopped trial
ends PRUNED, so it never reaches the Pareto front. Rules: ``median`` (Golovin et al., KDD 2017)
and ``asha`` (Li et al., MLSys 2020, arXiv:1810.05934, reduction factor 3). Costs are not part
of the proxy. See docs/search.md#early-stopping.
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
    """An early-stopping rule (``median`` or ``asha``) with its settings (see docs/search.md#early-stopping)."""

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
