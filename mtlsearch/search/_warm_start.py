"""``run --warm-start affinity``: the trees that task affinity proposes are the study's first trials.

Task affinity (:mod:`mtlsearch.affinity`; stored with the study, or measured once now) is turned
into the best partitions of the tasks into ``k = 2..max_groups`` groups
(:func:`mtlsearch.grouping.proposals`), each a ``tree`` candidate split at a few depths. They are
enqueued once per study, before any other trial, and marked ``warm_start`` so that ``report`` can
show how they fared. A warm-start trial tests its tree, not a random setting: besides the family
and tree parameters it fixes (:func:`warm_params`) the weighting to ``equal``, every training
parameter to the space's default (as the single-task baselines train), the training strategy and
task schedule to ``none`` and ``all``, and includes every auxiliary task, each only where the
space searches it and lists that choice (else the sampler draws it). The choice of groups
follows TAG (Fifty et al., NeurIPS 2021, arXiv:2109.04617) and Standley et al. (ICML 2020,
arXiv:1905.07553); the search then refines it.
See docs/tasks.md#grouping-and-the-warm-start.
"""

from __future__ import annotations

import warnings
from typing import Any

import optuna
import torch

from ..config import RunConfig
from ..errors import ConfigError
from ..problem import Problem
from ._budget import finished_trials
from ._progress import Progress
from ._records import study_record, write_study

WARM_START = "warm_start"  # the trial user attribute of a warm-start trial (TrialRecord.warm_start)
PREFERRED = ("lookahead", "cosine", "cka")  # the affinity a warm start reads, first present


def stored_affinity(study: optuna.Study, tasks: list[str]) -> Any:
    """The study's stored affinity (:class:`~mtlsearch.affinity.AffinityResult`) when it was
    measured on these tasks with a method the warm start reads; else ``None``. A stored record
    that does not read back (hand-edited) counts as absent."""
    from ..affinity import AffinityResult

    raw = study_record(study).affinity
    if raw is None:
        return None
    try:
        result = AffinityResult.from_record(raw)
    except ConfigError:
        return None
    if list(result.tasks) != list(tasks) or not any(m in result.matrices for m in PREFERRED):
        return None
    return result


def check_warm_start(problem: Problem, run: RunConfig) -> None:
    """A warm start from affinity needs the ``tree`` family in the space (checked before the study
    is opened, so a refused run leaves nothing behind)."""
    if run.warm_start == "affinity" and "tree" not in problem.families:
        raise ConfigError(
            "run.warm_start",
            "`affinity` enqueues trees of the `tree` family, which search_space.families does not list "
            f"(it lists: {', '.join(problem.families)}); add `tree` there, or use warm_start: none",
        )


def warm_params(problem: Problem, tree_params: dict[str, Any]) -> dict[str, Any]:
    """The parameters a warm-start trial is enqueued with: the ``tree`` family and
    ``tree_params``, ``weighting: equal``, ``training.<name>`` at each searched setting's default
    (:meth:`~mtlsearch.problem.Problem.baseline_training`), ``strategy: none``, ``schedule: all``
    and ``aux.<task>: true`` for every auxiliary task, so the proposed tree over all the tasks
    trains with the settings of the baselines. Only parameters the space has are kept (a fixed
    training setting, or a strategy the space does not search, is no trial parameter), and a
    choice the space does not list (no ``equal`` among the weightings) is left to the sampler.
    """
    wanted: dict[str, Any] = {"family": "tree", **tree_params}
    if "equal" in problem.weighting_spaces:
        wanted["weighting"] = "equal"
    if "none" in problem.strategy_spaces:
        wanted["strategy"] = "none"
    if "all" in problem.schedule_spaces:
        wanted["schedule"] = "all"
    wanted.update({f"training.{k}": v for k, v in problem.baseline_training().items()})
    if problem.space.search_space.auxiliary == "search":
        wanted.update({f"aux.{name}": True for name in problem.auxiliary_names})
    # Which of them are trial parameters of this space: sample once through a throwaway in-memory
    # study with ``wanted`` enqueued (the sampler fills in what is left to it).
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            probe = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
            probe.enqueue_trial(wanted)
            trial = probe.ask()
            problem.sample(trial)
    finally:
        optuna.logging.set_verbosity(verbosity)
    return {k: v for k, v in wanted.items() if k in trial.params}


def enqueue_warm_start(
    study: optuna.Study, problem: Problem, run: RunConfig, progress: Progress, device: str | torch.device
) -> dict[str, Any] | None:
    """Enqueue the affinity-proposed trees of ``problem`` in ``study``, once per study.

    Needs ``tree`` among the space's families. Reads the study's stored affinity for these tasks,
    else measures it (``estimate_affinity`` with the run's seed, 1 epoch) and stores it; uses
    ``lookahead`` when present, else ``cosine``. At most the budget still open is enqueued. The
    outcome is stored as the study record ``warm_start`` (and returned); a study that has one is
    left as it is (a resume does not enqueue again).
    """
    from ..affinity import duration, estimate_affinity, ratio
    from ..grouping import proposals

    check_warm_start(problem, run)
    done = study_record(study).warm_start
    if done is not None:
        return done
    tasks = list(problem.task_names)
    result = stored_affinity(study, tasks)
    measured = result is None
    if result is None:
        result = estimate_affinity(
            problem, methods=("cosine", "lookahead"), epochs=1, seed=run.seed, device=device, progress=progress
        )
        write_study(study, affinity=result.to_record())
    method = next(m for m in PREFERRED if m in result.matrices)
    tree = problem.families["tree"]
    max_groups = int(getattr(tree, "max_groups", 2))
    found = proposals(result.matrices[method], tasks, max_groups, problem.backbone.block_names, source=method)
    open_budget = max(run.n_trials - len(finished_trials(study)), 0)
    chosen = found[:open_budget]
    params = [warm_params(problem, p.params) for p in chosen]
    earlier = len(study.get_trials(deepcopy=False))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # enqueue_trial is experimental in some Optuna releases
        for p, fixed in zip(chosen, params):
            study.enqueue_trial(fixed, user_attrs={WARM_START: p.label}, skip_if_exists=True)
    record = {
        "method": method,
        "measured": measured,
        "seconds": round(result.seconds, 3),
        "cost_ratio": round(result.cost_ratio, 3),
        "proposals": [
            {
                "label": p.label,
                "score": p.score,
                "groups": [list(g) for g in p.grouping.groups],
                "search": p.grouping.method,  # branch and bound, or local search above 12 tasks
                "split_block": p.split_block,
                "params": fixed,
            }
            for p, fixed in zip(chosen, params)
        ],
    }
    write_study(study, warm_start=record)
    how = "measured" if measured else "stored"
    after = f"; the study already had {earlier} trials, so they are not its first" if earlier else ""
    left = f" ({len(found) - len(chosen)} more than the open budget left out)" if len(chosen) < len(found) else ""
    if not found:
        message = f"warm start: no tree to propose (tree.max_groups is {max_groups}: every tree is hard sharing)"
    else:
        message = (
            f"warm start: {len(chosen)} tree candidate{'' if len(chosen) == 1 else 's'} from {method} affinity "
            f"enqueued{left} ({how} affinity {duration(result.seconds)}, {ratio(result.cost_ratio)}x one "
            f"candidate){after}"
        )
    progress.event(
        "warm_start",
        message,
        method=method,
        measured=measured,
        seconds=result.seconds,
        cost_ratio=result.cost_ratio,
        proposals=[p.label for p in chosen],
        searches=sorted({p.grouping.method for p in chosen}),
    )
    for p in chosen:
        progress.event("warm_start_trial", f"  {p.label} (score {p.score:+.3g})", label=p.label, score=p.score)
    return record


def warm_start_trials(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """The study's trials enqueued by the warm start (retries of them included)."""
    return [t for t in study.get_trials(deepcopy=False) if isinstance(t.user_attrs.get(WARM_START), str)]


def summary(study: optuna.Study) -> dict[str, Any] | None:
    """What ``report`` says of the warm start (``None`` without one): the affinity method, the
    warm-start trials and the best of them by validation Delta-MTL."""
    from ._records import TrialRecord

    record = study_record(study).warm_start
    trials = warm_start_trials(study)
    if record is None and not trials:
        return None
    method = record.get("method") if isinstance(record, dict) else None
    best: dict[str, Any] | None = None
    for t in trials:
        delta = TrialRecord.from_attrs(t.user_attrs).delta_mtl
        if (
            t.state == optuna.trial.TrialState.COMPLETE
            and delta is not None
            and (best is None or delta > best["delta_mtl"])
        ):
            best = {"trial": t.number, "delta_mtl": delta, "label": t.user_attrs[WARM_START]}
    return {
        "method": method if isinstance(method, str) else None,
        "trials": [t.number for t in trials],
        "complete": sum(t.state == optuna.trial.TrialState.COMPLETE for t in trials),
        "best": best,
    }


def describe(summary: dict[str, Any] | None) -> str:
    """The report's warm-start line (empty without a warm start)."""
    if not summary:
        return ""
    n = len(summary["trials"])
    source = f"{summary['method']} affinity" if summary.get("method") else "affinity"
    text = f"warm start: {n} trial{'' if n == 1 else 's'} ({source}; marked w)"
    best = summary.get("best")
    if best:
        text += f", best #{best['trial']} Delta-MTL {best['delta_mtl']:+.2f}% ({best['label']})"
    return text
