"""The study-wide budget, shared by every worker and backend: which trials count, when a trial
must not start, how an interrupted trial is queued again, and the line that ends a trial.

``n_trials`` counts finished trials (complete, pruned, and failed ones that no later trial
retries) over every run, worker and backend; a trial started after the budget was met elsewhere
is marked ``surplus`` and does not count. See docs/search.md#the-budget.
"""

from __future__ import annotations

import os
import socket
import warnings
from collections.abc import Mapping
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from ..problem import method_label
from ._progress import Progress
from ._records import TrialRecord, trial_record
from ._storage import RETRY_OF, retried_numbers

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
CONFIRM_OF = "confirm_of"  # user attribute of a confirmation trial (see _confirm.py)
WORKER = f"{socket.gethostname()}:{os.getpid()}"  # which process ran a trial (trial record `worker`)


def finished_trials(study: optuna.Study) -> list[FrozenTrial]:
    """Trials that count toward the budget: complete, pruned, and failed ones that no later trial
    retries (a dead worker's or an interrupted trial is replaced by its retry)."""
    retried = retried_numbers(study)
    return [
        t
        for t in study.get_trials(deepcopy=False, states=FINISHED)
        if (t.state != TrialState.FAIL or t.number not in retried)
        and "surplus" not in t.user_attrs
        and CONFIRM_OF not in t.user_attrs  # confirmation trials come after the budget
    ]


def counts(study: optuna.Study) -> tuple[int, int, int]:
    """Finished (counted) trials, running trials, and trials queued to run."""
    trials = study.get_trials(deepcopy=False, states=(TrialState.RUNNING, TrialState.WAITING))
    running = sum(t.state == TrialState.RUNNING for t in trials)
    return len(finished_trials(study)), running, len(trials) - running


def budget_met(finished: int, running: int, waiting: int, n_trials: int) -> bool:
    """No new trial may start: finished and running trials make up the budget, and no retry waits."""
    return finished + running >= n_trials and waiting == 0


def surplus_reason(study: optuna.Study, number: int, n_trials: int) -> str | None:
    """Why trial ``number`` must not run: the trials before it already make up the budget (two
    workers can each start a last trial at the same moment; trial numbers are unique, so the
    later one yields). Failed trials that were retried and earlier surplus trials do not count."""
    retried = retried_numbers(study)
    before = [
        t
        for t in study.get_trials(deepcopy=False)
        if t.number < number
        and "surplus" not in t.user_attrs
        and CONFIRM_OF not in t.user_attrs
        and not (t.state == TrialState.FAIL and t.number in retried)
    ]
    if len(before) >= n_trials:
        return f"not run: the study-wide budget of {n_trials} trials was met by other workers"
    return None


def requeue(study: optuna.Study, trial: FrozenTrial | optuna.Trial, drop: tuple[str, ...] = ()) -> None:
    """Queue ``trial`` again with its parameters and user attributes (its run id and seed, so the
    retry continues from its checkpoints), marked ``retry_of`` so that the old one does not count."""
    attrs = {k: v for k, v in trial.user_attrs.items() if k not in drop}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        study.enqueue_trial(dict(trial.params), user_attrs={**attrs, RETRY_OF: trial.number}, skip_if_exists=False)


def best_delta(study: optuna.Study) -> float:
    """The best Delta-MTL of the study's complete trials (``-inf`` with none)."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    deltas = (TrialRecord.from_attrs(t.user_attrs).delta_mtl for t in complete)  # stored values are untrusted
    return max((d for d in deltas if d is not None), default=float("-inf"))


class TrialEnd:
    """The line that ends each trial (``trial #number family/weighting: Delta-MTL ... (k/N
    finished)``), with the study's best Delta-MTL so far over every worker and run; one per run,
    for either backend.

    One numbering: ``#number`` is the trial's number in the study (what ``report`` and ``export
    --trial`` show; epoch lines use it too), and ``k/N`` counts the finished trials toward the
    study-wide budget. A retry or a confirmation trial gets a new number and does not count."""

    def __init__(self, study: optuna.Study, n_trials: int, progress: Progress):
        self.study = study
        self.n_trials = n_trials
        self.progress = progress
        self.best = best_delta(study)

    def label(self, trial: FrozenTrial) -> str:
        """``trial #number``, or ``confirming #first: trial #number`` for a confirmation trial."""
        first = trial.user_attrs.get(CONFIRM_OF)
        return f"confirming #{first}: trial #{trial.number}" if isinstance(first, int) else f"trial #{trial.number}"

    def counter(self, trial: FrozenTrial, finished: int) -> str:
        """Where the budget stands; a confirmation trial comes after it."""
        return "" if CONFIRM_OF in trial.user_attrs else f"  ({finished}/{self.n_trials} finished)"

    def __call__(self, trial: FrozenTrial, finished: int) -> None:
        record: TrialRecord = trial_record(trial)
        if trial.state == TrialState.COMPLETE and record.delta_mtl is not None:
            # other workers' trials too: every worker shows the study's best
            self.best = max(self.best, record.delta_mtl, best_delta(self.study))
            arch: Mapping[str, Any] = record.architecture or {}
            method = f"{arch.get('family', '?')}/{method_label(arch)}"
            spread = (
                f" ± {record.delta_mtl_std:.2f} over {len(record.seeds)} seeds"
                if record.seeds and record.delta_mtl_std is not None
                else ""
            )
            message = (
                f"{self.label(trial)} {method}: Delta-MTL {record.delta_mtl:+.2f}%{spread}  "
                f"params {record.params or 0:,}  ({record.train_seconds or 0:.1f}s)  best Delta-MTL {self.best:+.2f}%"
            )
        else:
            reason = record.fail_reason or record.pruned_reason or "see the log above"
            message = f"{self.label(trial)} {trial.state.name}: {reason}"
        message += self.counter(trial, finished)
        self.progress.event(
            "trial",
            message,
            trial=trial.number,
            finished=finished,
            target=self.n_trials,
            state=trial.state.name,
            values=trial.values,
            delta_mtl=record.delta_mtl,
            best_delta_mtl=self.best if self.best > float("-inf") else None,
            fail_reason=record.fail_reason,
            pruned_reason=record.pruned_reason,
        )
