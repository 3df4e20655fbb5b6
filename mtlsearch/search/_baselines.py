"""Single-task baselines: given by the space, or trained once per study on the train split,
scored on the validation split and stored with the study (Delta-MTL divides by them).

``tuned`` baselines (the default) get the same training search as the candidates: a short
study per task over ``search_space.training`` with the run's sampler, so that Delta-MTL measures
sharing rather than hyperparameter luck. See docs/search.md#baselines.
"""

from __future__ import annotations

import statistics
import time
import warnings
from collections.abc import Mapping
from typing import Any

import optuna
import torch

from ..errors import MTLSearchError, NonFiniteLossError, show
from ..problem import Problem
from ..tasks import TaskSpec
from ..training import evaluate, train
from ._progress import QUIET, Progress
from ._records import study_record, typed, write_study
from ._sampler import make_sampler


def ensure_baselines(
    study: optuna.Study | None,
    problem: Problem,
    seed: int = 0,
    device: str | torch.device = "auto",
    progress: Progress = QUIET,
    sampler: str = "tpe",
) -> dict[str, dict[str, float]]:
    """The single-task baselines of ``study``: given by the space, already stored in the study,
    or trained now as the space's ``baselines`` section says (once per study: train split,
    validation scores) and stored with it.

    Call it once before ``study.optimize(Objective(problem))`` to train them as an explicit
    step (the objective otherwise calls it before its first trial). ``sampler`` tunes ``tuned``
    baselines (the run's sampler). Returns ``{task: {metric: value}}``.
    """
    from ..training import resolve_device

    device = device if isinstance(device, torch.device) else resolve_device(device)
    if problem.given_baselines is not None:
        record: dict[str, Any] = {"source": "given", "values": problem.given_baselines}
    elif study is not None and (stored := study_record(study).baselines) is not None:
        return check_stored(stored, problem, study.study_name)
    else:
        record = train_baselines(problem, seed, device, progress, sampler)
    if study is not None:
        data = {"seed": problem.space.data.seed, "sizes": problem.data.sizes(), **problem.data.info}
        write_study(study, baselines=record, data=data)
    return record["values"]


def check_stored(record: Mapping[str, Any], problem: Problem, study: str) -> dict[str, dict[str, float]]:
    """The values of a stored baselines record, checked (stored values are untrusted): a number
    for every metric that Delta-MTL counts, else one clear error, and nothing is retrained (the
    study's trials were scored against the stored values)."""
    values = record.get("values")
    for task, directions in problem.delta_directions.items():
        metrics = values.get(task) if isinstance(values, Mapping) else None
        for metric in directions:
            value = metrics.get(metric) if isinstance(metrics, Mapping) else None
            if typed(value, "float") is None:  # a finite number, as every stored record field is checked
                raise MTLSearchError(
                    f"study `{study}`: its stored baselines (attribute mtlsearch.baselines) have no number for "
                    f"`{task}.{metric}` (found {show(value)}); they were not written by mtlsearch, and its trials were "
                    "scored against them. Continue in a new study, or give the baselines in the space"
                )
    return {t: dict(values[t]) for t in problem.delta_directions} if isinstance(values, Mapping) else {}


def check_nonzero(values: dict[str, dict[str, float]], problem: Problem) -> None:
    """Delta-MTL divides by each baseline metric that it scores: a trained baseline of exactly 0
    would fail every trial after its training, so the study stops here, before any trial."""
    for task, directions in problem.delta_directions.items():
        for metric in directions:
            if values[task][metric] == 0:
                raise MTLSearchError(
                    f"baselines.{task}.{metric}: the trained single-task baseline scores exactly 0 on the validation "
                    "split, and Delta-MTL divides by it; no trial was run. Give the baseline in the space "
                    f"(baselines: {{{task}: {{{metric}: VALUE}}}}), score the task with another metric "
                    "(tasks[].metrics), or give it more training (search_space.training.epochs)"
                )


def train_single_task(
    problem: Problem,
    task: TaskSpec,
    seed: int,
    device: torch.device,
    settings: Mapping[str, Any] | None = None,
) -> torch.nn.Module:
    """The single-task baseline network of ``task``, trained on the train split with equal
    weighting and ``settings`` (default: :meth:`Problem.baseline_training`)."""
    from ..weighting import WEIGHTINGS

    model = problem.single_task_model(task, seed)
    train(
        model,
        [task],
        WEIGHTINGS.get("equal")([task.name]),
        problem.data.train,
        dict(settings or problem.baseline_training()),
        device,
        seed,
    )
    return model


def tuning_score(metrics: Mapping[str, float], reference: Mapping[str, float], directions: Mapping[str, str]) -> float:
    """How much better ``metrics`` are than ``reference`` (the default settings' run), averaged
    over the counted metrics: the signed relative change of Delta-MTL, or the signed absolute
    change where the reference is 0."""
    terms = []
    for metric, direction in directions.items():
        sign = -1.0 if direction == "min" else 1.0
        ref = reference[metric]
        terms.append(sign * (metrics[metric] - ref) / (abs(ref) if ref else 1.0))
    return sum(terms) / len(terms)


def tune_task(
    problem: Problem, task: TaskSpec, n_trials: int, seed: int, device: torch.device, sampler: str, progress: Progress
) -> tuple[dict[str, Any], dict[str, float], list[dict[str, Any]]]:
    """Tune one task's training settings: the default settings first, then ``n_trials - 1``
    drawn by ``sampler`` over the training space, each trained with ``seed`` and scored on val.
    Returns the best settings, their validation metrics and every tuning trial."""
    directions = problem.delta_directions[task.name]
    reference: dict[str, float] = {}
    tried: list[dict[str, Any]] = []

    def objective(trial: optuna.Trial) -> float:
        settings = problem.suggest_training(trial)
        same = [t for t in tried if t["settings"] == settings]
        if same:  # the same settings and seed train the same network: reuse, do not retrain
            tried.append({**same[0], "repeat": True})
            if "failed" in same[0]:
                raise optuna.TrialPruned(same[0]["failed"])
            return same[0]["score"]
        try:
            model = train_single_task(problem, task, seed, device, settings)
        except NonFiniteLossError as err:  # a diverging setting is one bad draw, not a broken study
            tried.append({"settings": settings, "failed": str(err)})
            raise optuna.TrialPruned(str(err)) from None
        metrics = evaluate(model, [task], problem.data.val, device)[task.name]
        if not reference:
            reference.update(metrics)
        score = tuning_score(metrics, reference, directions)
        tried.append({"settings": settings, "metrics": metrics, "score": score})
        shown = ", ".join(f"{m} {v:.4g}" for m, v in metrics.items())
        progress.event(
            "baseline_tune",
            f"  tuning `{task.name}` {trial.number + 1}/{n_trials}: {shown}",
            transient=True,
            task=task.name,
            trial=trial.number,
            metrics=metrics,
        )
        return score

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study = optuna.create_study(direction="maximize", sampler=make_sampler(sampler, seed))
    study.enqueue_trial({f"training.{k}": v for k, v in problem.baseline_training().items()}, skip_if_exists=True)
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study.optimize(objective, n_trials=n_trials)
    finally:
        optuna.logging.set_verbosity(verbosity)
    scored = [t for t in tried if "score" in t and not t.get("repeat")]
    if not scored:
        raise MTLSearchError(
            f"baselines: every tuning run of task `{task.name}` diverged ({tried[0]['failed']}); "
            "narrow search_space.training, or use baselines: default"
        )
    best = max(scored, key=lambda t: t["score"])  # the first best: ties keep the default settings
    return best["settings"], best["metrics"], tried


def train_baselines(
    problem: Problem, seed: int, device: torch.device, progress: Progress = QUIET, sampler: str = "tpe"
) -> dict[str, Any]:
    """One single-task network per task (same backbone), as ``problem.space.baselines`` says:
    ``tuned`` settings or ``default`` ones, trained on ``seeds`` seeds (``seed``, ``seed + 1``...)
    and scored on the validation split; the mean is the baseline, the spread is stored."""
    section = problem.space.baselines
    tune = section.kind == "tuned" and problem.training_is_searched and section.tune_trials > 1
    seeds = [seed + k for k in range(section.seeds)]
    values: dict[str, dict[str, float]] = {}
    spread: dict[str, dict[str, float]] = {}
    training: dict[str, dict[str, Any]] = {}
    tuning: dict[str, list[dict[str, Any]]] = {}
    start = time.perf_counter()
    n = len(problem.tasks)
    for i, task in enumerate(problem.tasks, 1):
        runs: list[dict[str, float]] = []
        if tune:
            how = f"tuning over {section.tune_trials} training settings, then {len(seeds)} seed(s)"
            progress.event("baseline", f"baseline {i}/{n}: single-task `{task.name}`, {how} ...", task=task.name)
            settings, best, tuning[task.name] = tune_task(
                problem, task, section.tune_trials, seed, device, sampler, progress
            )
            runs.append(best)  # the tuning run of the chosen settings is their first seed (same seed)
        else:
            settings = problem.baseline_training()
            how = f"default settings, {len(seeds)} seed(s)"
            progress.event("baseline", f"baseline {i}/{n}: single-task `{task.name}`, {how} ...", task=task.name)
        for s in seeds[len(runs) :]:
            model = train_single_task(problem, task, s, device, settings)
            runs.append(evaluate(model, [task], problem.data.val, device)[task.name])
        training[task.name] = settings
        values[task.name] = {m: statistics.fmean(r[m] for r in runs) for m in runs[0]}
        spread[task.name] = {m: statistics.stdev(r[m] for r in runs) if len(runs) > 1 else 0.0 for m in runs[0]}
        shown = ", ".join(f"{m} {v:.4g} ± {spread[task.name][m]:.2g}" for m, v in values[task.name].items())
        progress.event(
            "baseline_done",
            f"baseline {i}/{n}: `{task.name}` val {shown}",
            task=task.name,
            metrics=values[task.name],
            spread=spread[task.name],
            settings=settings,
        )
    check_nonzero(values, problem)
    record: dict[str, Any] = {
        "source": "tuned" if tune else "default",
        "values": values,
        "spread": spread,
        "training": training,
        "seeds": seeds,
        "seconds": round(time.perf_counter() - start, 2),
    }
    if tune:
        record["tune_trials"] = section.tune_trials
        record["tuning"] = tuning
    return record
