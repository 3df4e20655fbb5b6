"""The confirmation stage: after the budget, the best candidates of the front train more seeds.

One seed per trial is noisy, and the search keeps whichever candidate was luckiest. With
``run.confirm: {top: K, seeds: S}``, the K candidates of the front with the highest Delta-MTL
train S more seeds each, on the validation split only, as trials marked ``confirm_of`` (they do
not count toward ``n_trials``). They pool with their candidate's first trial
(:func:`~mtlsearch.search.results.pool`), so ``report`` and ``export --pick`` use the mean over
every seed. The chosen candidates are stored with the study: an interrupted confirmation is
finished by ``resume``, on the same candidates. See docs/search.md#confirmation.
"""

from __future__ import annotations

import warnings
from typing import Any

import optuna
from optuna.trial import TrialState

from ._budget import CONFIRM_OF
from ._progress import Progress
from ._records import study_record, write_study
from ._storage import retried_numbers


def confirmation_trials(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """The study's confirmation trials, less those that a retry replaces."""
    retried = retried_numbers(study)
    return [
        t
        for t in study.get_trials(deepcopy=False)
        if isinstance(t.user_attrs.get(CONFIRM_OF), int) and not (t.state == TrialState.FAIL and t.number in retried)
    ]


def plan(study: optuna.Study, top: int, seeds: int) -> dict[int, int]:
    """``{first trial of a chosen candidate: confirmation seeds still to queue}``. The candidates
    are chosen once (the front's ``top`` best by pooled Delta-MTL) and stored; later calls (a
    resume) keep that choice."""
    from .results import candidates  # results reads studies; this module only queues trials

    record = study_record(study).confirm
    if record is not None and record.get("top") == top and record.get("seeds") == seeds:
        chosen = [n for n in record.get("chosen", []) if isinstance(n, int)]
    else:
        best = sorted(candidates(study), key=lambda p: -p.delta_mtl)[:top]
        chosen = [p.trial.number for p in best]
        write_study(study, confirm={"top": top, "seeds": seeds, "chosen": chosen})
    queued: dict[int, int] = {n: 0 for n in chosen}
    for t in confirmation_trials(study):
        if t.user_attrs[CONFIRM_OF] in queued:
            queued[t.user_attrs[CONFIRM_OF]] += 1
    return {n: seeds - k for n, k in queued.items() if k < seeds}


def queue(study: optuna.Study, top: int, seeds: int, progress: Progress) -> int:
    """Queue the confirmation trials still missing (:func:`plan`); returns how many."""
    missing = plan(study, top, seeds)
    by_number = {t.number: t for t in study.get_trials(deepcopy=False)}
    total = 0
    for number, n in missing.items():
        first = by_number[number]
        for _ in range(n):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                study.enqueue_trial(dict(first.params), user_attrs=confirm_attrs(first), skip_if_exists=False)
        total += n
    if total:
        chosen = ", ".join(f"#{n}" for n in missing)
        progress.event(
            "confirm",
            f"confirming the {len(missing)} best candidates ({chosen}) on {seeds} more seed(s) each: {total} trial(s)",
            trials=total,
            candidates=list(missing),
        )
    return total


def confirm_attrs(first: optuna.trial.FrozenTrial) -> dict[str, Any]:
    """A confirmation trial's user attributes: it names its candidate's first trial, and keeps
    the learned architecture of a learned family (the same network, not a new one)."""
    attrs: dict[str, Any] = {CONFIRM_OF: first.number}
    if "learned" in first.user_attrs:
        attrs["learned"] = first.user_attrs["learned"]
    return attrs


def pending(study: optuna.Study) -> int:
    """Confirmation trials queued or running."""
    return sum(t.state in (TrialState.WAITING, TrialState.RUNNING) for t in confirmation_trials(study))
