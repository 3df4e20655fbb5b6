"""Single-task baselines: given by the space, or trained once per study on the train split,
scored on the validation split and stored with the study (Delta-MTL divides by them).

``tuned`` baselines (the default) get the same training search as the candidates: a short
study per task over ``search_space.training`` with the run's sampler, so that Delta-MTL measures
sharing rather than hyperparameter luck. See docs/search.md#baselines.

With ``baselines.keep_weights`` (on whenever a strategy distils from them), each task's trained
network is kept as a study artifact, and :func:`single_task_networks` rebuilds them (the teachers
of docs/tasks.md#distillation).
"""

from __future__ import annotations

import io
import os
import re
import statistics
import tempfile
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import optuna
import torch

from ..checkpoints import describe_value
from ..errors import MTLSearchError, NonFiniteLossError, show
from ..problem import Problem
from ..tasks import TaskSpec
from ..training import evaluate, train
from ._progress import QUIET, Progress
from ._records import StudyRecord, study_record, typed, write_study
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
    baselines (the run's sampler). With ``baselines.keep_weights`` (or a strategy that distils),
    each task's network of seed ``seed`` is stored as a study artifact in the study's artifacts
    folder (record keys ``weights: {task: artifact id}`` and ``weights_seed``).
    Returns ``{task: {metric: value}}``.
    """
    from ..training import resolve_device

    device = device if isinstance(device, torch.device) else resolve_device(device)
    if problem.given_baselines is not None:
        record: dict[str, Any] = {"source": "given", "values": problem.given_baselines}
    elif study is not None and (stored := study_record(study).baselines) is not None:
        return check_stored(stored, problem, study.study_name)
    else:
        record, networks = train_baselines(problem, seed, device, progress, sampler)
        if study is not None and networks:
            record["weights"] = upload_networks(study, networks)
            record["weights_seed"] = seed
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
    problem: Problem,
    task: TaskSpec,
    n_trials: int,
    seed: int,
    device: torch.device,
    sampler: str,
    progress: Progress,
    keep: bool = False,
) -> tuple[dict[str, Any], dict[str, float], list[dict[str, Any]], torch.nn.Module | None]:
    """Tune one task's training settings: the default settings first, then ``n_trials - 1``
    drawn by ``sampler`` over the training space, each trained with ``seed`` and scored on val.
    Returns the best settings, their validation metrics, every tuning trial and, with ``keep``,
    the network the best settings trained (else ``None``)."""
    directions = problem.delta_directions[task.name]
    reference: dict[str, float] = {}
    tried: list[dict[str, Any]] = []
    kept: list[Any] = [None, None]  # the best score so far and its network

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
        if keep and (kept[0] is None or score > kept[0]):  # strictly: ties keep the first, as `best` below
            kept[:] = [score, model]
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
    return best["settings"], best["metrics"], tried, kept[1]


def train_baselines(
    problem: Problem, seed: int, device: torch.device, progress: Progress = QUIET, sampler: str = "tpe"
) -> tuple[dict[str, Any], dict[str, torch.nn.Module]]:
    """One single-task network per primary task (same backbone), as ``problem.space.baselines`` says:
    ``tuned`` settings or ``default`` ones, trained on ``seeds`` seeds (``seed``, ``seed + 1``...)
    and scored on the validation split; the mean is the baseline, the spread is stored.

    Returns the baselines record and, when the problem keeps the baselines' weights
    (:attr:`Problem.keeps_baseline_weights`), each task's network of the first seed ``seed`` with
    the chosen settings (for tuned baselines, the tuning run of those settings: kept, not
    retrained), else ``{}``."""
    keep = problem.keeps_baseline_weights
    networks: dict[str, torch.nn.Module] = {}
    section = problem.space.baselines
    tune = section.kind == "tuned" and problem.training_is_searched and section.tune_trials > 1
    seeds = [seed + k for k in range(section.seeds)]
    values: dict[str, dict[str, float]] = {}
    spread: dict[str, dict[str, float]] = {}
    training: dict[str, dict[str, Any]] = {}
    tuning: dict[str, list[dict[str, Any]]] = {}
    start = time.perf_counter()
    n = len(problem.primary_tasks)  # auxiliary tasks are not scored: they need no baseline
    for i, task in enumerate(problem.primary_tasks, 1):
        runs: list[dict[str, float]] = []
        if tune:
            how = f"tuning over {section.tune_trials} training settings, then {len(seeds)} seed(s)"
            progress.event("baseline", f"baseline {i}/{n}: single-task `{task.name}`, {how} ...", task=task.name)
            settings, best, tuning[task.name], model = tune_task(
                problem, task, section.tune_trials, seed, device, sampler, progress, keep
            )
            runs.append(best)  # the tuning run of the chosen settings is their first seed (same seed)
            if model is not None:
                networks[task.name] = model
        else:
            settings = problem.baseline_training()
            how = f"default settings, {len(seeds)} seed(s)"
            progress.event("baseline", f"baseline {i}/{n}: single-task `{task.name}`, {how} ...", task=task.name)
        for s in seeds[len(runs) :]:
            model = train_single_task(problem, task, s, device, settings)
            runs.append(evaluate(model, [task], problem.data.val, device)[task.name])
            if keep and s == seed:
                networks[task.name] = model
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
    return record, networks


# -- the kept networks (teachers of distillation) --------------------------------------------------

ARTIFACT_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")  # upload_artifact's ids


def upload_networks(study: optuna.Study, networks: Mapping[str, torch.nn.Module]) -> dict[str, str]:
    """Store each network's weights as an Optuna artifact of ``study`` in its artifacts folder
    (study record field ``artifacts``); returns ``{task: artifact id}``."""
    from optuna.artifacts import FileSystemArtifactStore, upload_artifact

    folder = study_record(study).artifacts
    if folder is None:
        raise MTLSearchError(
            f"study `{study.study_name}` has no artifacts folder (study attribute {StudyRecord.key('artifacts')}), "
            "where baselines.keep_weights stores the single-task networks; run it through mtlsearch, or set "
            "keep_weights: false and remove strategy `distill`"
        )
    Path(folder).mkdir(parents=True, exist_ok=True)
    store = FileSystemArtifactStore(folder)
    ids: dict[str, str] = {}
    for task, model in networks.items():
        fd, tmp = tempfile.mkstemp(suffix=".pt")
        os.close(fd)
        try:
            torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, tmp)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                ids[task] = upload_artifact(artifact_store=store, file_path=tmp, study_or_trial=study)
        finally:
            os.unlink(tmp)
    return ids


def single_task_networks(
    study: optuna.Study, problem: Problem, device: torch.device | str
) -> dict[str, torch.nn.Module] | None:
    """The study's kept single-task networks, ``{task: network}`` for every primary task of ``problem``:
    built with :meth:`Problem.single_task_model` (seed ``weights_seed``), loaded from the study's
    artifacts, in eval mode on ``device``. ``None`` when the study keeps no baseline weights.

    The stored record is untrusted: an artifact id must be a UUID before it names a file, and a
    missing, unreadable or mismatched artifact is an error naming the study, the task and the file.
    """
    record = study_record(study)
    stored = record.baselines
    if not isinstance(stored, Mapping) or stored.get("weights") is None:
        return None
    name = study.study_name
    weights, seed = stored.get("weights"), stored.get("weights_seed")
    if not isinstance(weights, Mapping):
        raise MTLSearchError(
            f"study `{name}`: its stored baselines weights {describe_value(weights)} are not a mapping "
            "{task: artifact id}; refused"
        )
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
        raise MTLSearchError(
            f"study `{name}`: its stored baselines weights_seed {describe_value(seed)} is not an integer in "
            "[0, 2**63); refused"
        )
    folder = Path(record.artifacts or "")
    states: dict[str, Mapping[str, torch.Tensor]] = {}
    for task in problem.primary_tasks:  # the tasks with a baseline
        artifact = weights.get(task.name)
        if not isinstance(artifact, str) or not ARTIFACT_ID.fullmatch(artifact):
            raise MTLSearchError(
                f"study `{name}`: the stored single-task network of task `{task.name}` has artifact id "
                f"{describe_value(artifact)}, not an artifact id (a UUID); refused"
            )
        file = folder / artifact
        try:
            states[task.name] = torch.load(io.BytesIO(file.read_bytes()), map_location="cpu", weights_only=True)
        except FileNotFoundError:
            raise MTLSearchError(
                f"study `{name}`: the single-task network of task `{task.name}` is missing: no file {file} "
                "(the artifacts folder moved or was cleaned)"
            ) from None
        except Exception as err:  # a damaged file: unpickling errors of every kind
            raise MTLSearchError(
                f"study `{name}`: the single-task network of task `{task.name}` in {file} cannot be read "
                f"({type(err).__name__}: {err})"
            ) from None
    try:
        return networks_from_states(problem, states, seed, device)
    except MTLSearchError as err:
        raise MTLSearchError(f"study `{name}`: {err}") from None


def networks_from_states(
    problem: Problem, states: Mapping[str, Mapping[str, torch.Tensor]], seed: int, device: torch.device | str
) -> dict[str, torch.nn.Module]:
    """Single-task networks of the given weights (``{task: state_dict}``), in eval mode on ``device``."""
    out: dict[str, torch.nn.Module] = {}
    for task in problem.primary_tasks:
        model = problem.single_task_model(task, seed)
        state = states.get(task.name)
        try:
            if not isinstance(state, Mapping):
                raise TypeError(f"found {describe_value(state)}")
            model.load_state_dict(state)
        except (RuntimeError, TypeError) as err:
            raise MTLSearchError(
                f"the stored single-task network of task `{task.name}` does not fit this problem's "
                f"network ({str(err).splitlines()[0]})"
            ) from None
        out[task.name] = model.to(device).eval()
    return out
