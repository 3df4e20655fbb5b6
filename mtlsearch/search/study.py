"""Optuna multi-objective studies of a search space: create or continue them, train the
single-task baselines once, and score each trial.

What a study stores (readable with plain ``optuna.load_study`` and ``optuna-dashboard``):

* study user attrs ``mtlsearch.space`` (the space, without its ``run`` section),
  ``mtlsearch.fingerprint``, ``mtlsearch.objectives``, ``mtlsearch.seed``, ``mtlsearch.sampler``,
  ``mtlsearch.data`` (seed, split sizes, facts such as the measured label correlation),
  ``mtlsearch.baselines`` (values on the validation split, how they were obtained) and
  ``mtlsearch.artifacts`` (where trial weights are kept);
* trial user attrs ``seed``, ``architecture`` (family, per-task paths, sharing per block,
  family settings, weighting, training hyperparameters), ``learned`` (the outcome of a family that
  learns its architecture inside the trial), ``val_metrics`` (``{task: {metric: value}}``),
  ``delta_mtl``, ``params``, ``macs``, ``latency_ms``, ``train_seconds``, ``weights_artifact``,
  ``fail_reason`` for a failed trial and ``pruned_reason`` for an infeasible one;
* trial constraints (``max_params`` ...) when the space has ``constraints``.
"""

from __future__ import annotations

import os
import tempfile
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import optuna
import torch
from optuna.trial import TrialState

from .. import __version__
from ..config import CONSTRAINTS, RunConfig, SearchSpace
from ..errors import ConfigError, NonFiniteLossError, StudyMismatchError
from ..problem import Problem
from ..scoring import constraint_values, count_macs, count_params, delta_mtl, measure_latency
from ..training import evaluate, resolve_device, train
from .progress import QUIET, Progress
from .storage import open_storage, retried_numbers

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
ATTR = "mtlsearch."


# -- storage and sampler ------------------------------------------------------------------------


def artifacts_dir(run: RunConfig) -> Path:
    """Where trial weights are kept: ``run.artifacts``, else beside a file storage, else ``./``."""
    if run.artifacts:
        return Path(run.artifacts).resolve()
    for prefix in ("sqlite:///", "journal:///"):
        if run.storage.startswith(prefix):
            file = Path(run.storage[len(prefix):])
            return (file.parent / f"{file.stem}_artifacts").resolve()
    return Path("mtlsearch_artifacts").resolve()


def sampler_seed(seed: int, n_finished: int) -> int:
    """Mixes the run seed with the number of finished trials: a sampler re-created with the same
    seed in a new process would otherwise draw the same configurations again."""
    return (seed * 1_000_003 + n_finished * 7_919) % (2**32)


def make_sampler(name: str, seed: int, n_finished: int) -> optuna.samplers.BaseSampler:
    s = sampler_seed(seed, n_finished)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if name == "tpe":
            return optuna.samplers.TPESampler(seed=s, multivariate=True, group=True, n_startup_trials=8)
        if name == "nsga2":
            return optuna.samplers.NSGAIISampler(seed=s, population_size=10)
        if name == "random":
            return optuna.samplers.RandomSampler(seed=s)
    raise ConfigError("run.sampler", f"unknown sampler `{name}`; choose one of: tpe, nsga2, random")


def finished_trials(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    return study.get_trials(deepcopy=False, states=FINISHED)


# -- creating and continuing ----------------------------------------------------------------------


def open_study(space: SearchSpace, run: RunConfig, directions: list[str], storage: Any = None) -> optuna.Study:
    """Create the study, or continue it after checking it was made for this space and objectives."""
    name = run.study or space.name
    storage = storage if storage is not None else open_storage(run.storage)
    existing = name in {s.study_name for s in optuna.get_all_study_summaries(storage, include_best_trial=False)}
    if existing:
        study = optuna.load_study(study_name=name, storage=storage)
        check_compatible(study, space, directions, run)
        study.sampler = make_sampler(study.user_attrs.get(ATTR + "sampler", run.sampler), run.seed, len(finished_trials(study)))
        return study
    study = optuna.create_study(
        study_name=name, storage=storage, directions=directions, sampler=make_sampler(run.sampler, run.seed, 0)
    )
    study.set_user_attr(ATTR + "version", __version__)
    study.set_user_attr(ATTR + "space", space.to_raw())
    study.set_user_attr(ATTR + "fingerprint", space.fingerprint())
    study.set_user_attr(ATTR + "objectives", list(space.objectives))
    study.set_user_attr(ATTR + "seed", run.seed)
    study.set_user_attr(ATTR + "sampler", run.sampler)
    study.set_user_attr(ATTR + "artifacts", str(artifacts_dir(run)))
    return study


def check_compatible(study: optuna.Study, space: SearchSpace, directions: list[str], run: RunConfig) -> None:
    attrs = study.user_attrs
    where = f"study `{study.study_name}` in {run.storage}"
    if ATTR + "fingerprint" not in attrs:
        raise StudyMismatchError(f"{where} was not created by mtlsearch; choose another --study name")
    stored = [d.name.lower() for d in study.directions]
    if stored != directions or attrs.get(ATTR + "objectives") != list(space.objectives):
        raise StudyMismatchError(
            f"{where} optimises {attrs.get(ATTR + 'objectives')} ({', '.join(stored)}), but this space asks for "
            f"{list(space.objectives)} ({', '.join(directions)}); use a new --study name or the original objectives"
        )
    if attrs[ATTR + "fingerprint"] != space.fingerprint():
        diff = first_difference(attrs.get(ATTR + "space", {}), space.to_raw())
        raise StudyMismatchError(
            f"{where} was created with a different search space (first difference at `{diff}`); "
            "use a new --study name, or `mtlsearch resume` to continue with the stored space"
        )


def first_difference(a: Any, b: Any, path: str = "") -> str:
    """The dotted path of the first place where two plain-data trees differ."""
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        for key in list(dict.fromkeys([*a, *b])):
            if key not in a or key not in b or a[key] != b[key]:
                sub = f"{path}.{key}" if path else str(key)
                return first_difference(a.get(key), b.get(key), sub) if key in a and key in b else sub
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b)):
            if x != y:
                return first_difference(x, y, f"{path}[{i}]")
    return path or "(top)"


def stored_space(study: optuna.Study) -> SearchSpace:
    raw = study.user_attrs.get(ATTR + "space")
    if raw is None:
        raise StudyMismatchError(f"study `{study.study_name}` was not created by mtlsearch (it has no stored space)")
    return SearchSpace.parse(raw)


# -- baselines ----------------------------------------------------------------------------------


def ensure_baselines(study: optuna.Study | None, problem: Problem, seed: int, device: torch.device, progress: Progress = QUIET) -> dict[str, dict[str, float]]:
    """The single-task baselines of the study: given by the space, already stored, or trained now
    (once per study, on the validation split) and stored."""
    if problem.given_baselines is not None:
        record = {"source": "given", "values": problem.given_baselines}
    elif study is not None and ATTR + "baselines" in study.user_attrs:
        return study.user_attrs[ATTR + "baselines"]["values"]
    else:
        record = train_baselines(problem, seed, device, progress)
    if study is not None:
        study.set_user_attr(ATTR + "baselines", record)
        study.set_user_attr(ATTR + "data", {"seed": problem.space.data.seed, "sizes": problem.data.sizes(), **problem.data.info})
    return record["values"]


def train_single_task(problem: Problem, task, seed: int, device: torch.device) -> torch.nn.Module:
    """The single-task baseline network of ``task``, trained on the train split with the
    baseline settings (:meth:`Problem.baseline_training`) and equal weighting."""
    from ..weighting import WEIGHTINGS

    model = problem.single_task_model(task, seed)
    train(model, [task], WEIGHTINGS.get("equal")([task.name]), problem.data.train, problem.baseline_training(), device, seed)
    return model


def train_baselines(problem: Problem, seed: int, device: torch.device, progress: Progress = QUIET) -> dict[str, Any]:
    """One single-task network per task, same backbone and budget (each training parameter at
    its default), scored on the validation split."""
    settings = problem.baseline_training()
    values = {}
    start = time.perf_counter()
    for i, task in enumerate(problem.tasks, 1):
        progress.event("baseline", f"baseline {i}/{len(problem.tasks)}: single-task `{task.name}` ...", task=task.name)
        model = train_single_task(problem, task, seed, device)
        values[task.name] = evaluate(model, [task], problem.data.val, device)[task.name]
        shown = ", ".join(f"{m} {v:.4g}" for m, v in values[task.name].items())
        progress.event("baseline_done", f"baseline {i}/{len(problem.tasks)}: `{task.name}` val {shown}", task=task.name, metrics=values[task.name])
    return {"source": "trained", "values": values, "training": settings, "seed": seed, "seconds": round(time.perf_counter() - start, 2)}


# -- the objective ----------------------------------------------------------------------------


class Objective:
    """An Optuna objective for a space: ``study.optimize(Objective(problem), ...)``.

    Each call samples a candidate, trains it on the train split, scores it on the validation split
    and returns the objective values in the order of ``problem.objectives``. A NaN/inf loss raises
    :class:`~mtlsearch.errors.NonFiniteLossError` after recording ``fail_reason``; pass it in
    ``catch=`` so the study goes on. Baselines are taken from (or stored in) the trial's study.
    """

    def __init__(
        self,
        problem: Problem,
        *,
        seed: int = 0,
        device: str | torch.device = "auto",
        artifacts: str | Path | None = None,
        progress: Progress = QUIET,
        total: int | None = None,
    ):
        self.problem = problem
        self.seed = seed
        self.device = device if isinstance(device, torch.device) else resolve_device(device)
        self.artifacts = Path(artifacts) if artifacts else None
        self.progress = progress
        self.total = total
        self._baselines: dict | None = None

    def baselines(self, study: optuna.Study | None) -> dict[str, dict[str, float]]:
        if self._baselines is None:
            self._baselines = ensure_baselines(study, self.problem, self.seed, self.device, self.progress)
        return self._baselines

    def __call__(self, trial: optuna.Trial) -> tuple[float, ...]:
        problem = self.problem
        baselines = self.baselines(getattr(trial, "study", None))
        candidate = problem.sample(trial)
        seed = self.seed + trial.number
        trial.set_user_attr("seed", seed)
        label = f"trial {trial.number + 1}" + (f"/{self.total}" if self.total else "")

        def on_epoch(e, phase=""):
            self.progress.event(
                "epoch", f"  {label} [{candidate.architecture.family}]{phase} epoch {e.epoch}/{e.epochs} loss {e.train_loss:.4f}",
                transient=True, trial=trial.number, epoch=e.epoch, epochs=e.epochs, loss=e.train_loss,
            )

        start = time.perf_counter()
        if candidate.needs_learning:
            from ..learning import learn_architecture

            try:
                candidate.architecture = learn_architecture(
                    candidate, self.device, seed, lambda e: on_epoch(e, " policy"),
                )
            except NonFiniteLossError as err:
                trial.set_user_attr("fail_reason", str(err))
                raise
            trial.set_user_attr("learned", dict(candidate.architecture.learned))
        trial.set_user_attr("architecture", candidate.summary())
        model = candidate.build_model(seed).to(self.device)
        costs = {
            "params": count_params(model),
            "macs": count_macs(model, problem.input_shape),
            "latency_ms": round(measure_latency(model, problem.input_shape), 4),
        }
        for k, v in costs.items():
            trial.set_user_attr(k, v)
        if problem.constraints:
            violated = self._constrain(trial, costs)
            if violated:
                trial.set_user_attr("pruned_reason", violated)
                raise optuna.TrialPruned(violated)
        try:
            train(model, problem.tasks, candidate.new_weighting(), problem.data.train, candidate.training, self.device, seed, on_epoch)
        except NonFiniteLossError as err:
            trial.set_user_attr("fail_reason", str(err))
            raise
        trial.set_user_attr("train_seconds", round(time.perf_counter() - start, 3))
        metrics = evaluate(model, problem.tasks, problem.data.val, self.device)
        delta = delta_mtl(metrics, baselines, problem.metric_directions)
        trial.set_user_attr("val_metrics", metrics)
        trial.set_user_attr("delta_mtl", delta)
        if self.artifacts is not None and isinstance(trial, optuna.Trial):
            trial.set_user_attr("weights_artifact", self._save_weights(trial, model))
        scores = {"delta_mtl": delta, **{k: float(v) for k, v in costs.items()}}
        return tuple(
            scores[o] if o in scores else metrics[o.split(".", 1)[0]][o.split(".", 1)[1]] for o in problem.objectives
        )

    def _constrain(self, trial: optuna.Trial, costs: Mapping[str, float]) -> str | None:
        """Record the space's cost constraints on the trial; say why it is infeasible, if it is.

        Costs are known before training, so an infeasible candidate is not trained: it ends
        PRUNED with its constraint values set, which samplers that read constraints (TPE, NSGA-II)
        treat as infeasible, and it is never on the front.
        """
        bounds = self.problem.constraints
        values = constraint_values(costs, bounds)
        if hasattr(trial, "set_constraint"):
            for name, value in values.items():
                trial.set_constraint(name, value)
        over = [f"{CONSTRAINTS[n]} {costs[CONSTRAINTS[n]]:g} > {n} {bounds[n]:g}" for n, v in values.items() if v > 0]
        return "infeasible: " + ", ".join(over) if over else None

    def _save_weights(self, trial: optuna.Trial, model: torch.nn.Module) -> str:
        from optuna.artifacts import FileSystemArtifactStore, upload_artifact

        self.artifacts.mkdir(parents=True, exist_ok=True)
        store = FileSystemArtifactStore(str(self.artifacts))
        fd, tmp = tempfile.mkstemp(suffix=".pt")
        os.close(fd)
        try:
            torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, tmp)
            return upload_artifact(artifact_store=store, file_path=tmp, study_or_trial=trial)
        finally:
            os.unlink(tmp)


# -- running ------------------------------------------------------------------------------------


def run_search(space: SearchSpace, run: RunConfig, progress: Progress = QUIET, problem: Problem | None = None) -> optuna.Study:
    """Run (or continue) the study of ``space`` until it holds ``run.n_trials`` finished trials
    (complete, pruned or failed) or ``run.timeout`` seconds pass."""
    problem = problem or Problem(space)
    device = resolve_device(run.device)
    study = open_study(space, run, problem.directions)
    done = len(finished_trials(study))
    info = problem.data.info
    extra = f", measured label correlation {info['label_correlation']}" if "label_correlation" in info else ""
    progress.event(
        "study", f"study `{study.study_name}` ({run.storage}): {done} finished trials, target {run.n_trials}; "
        f"device {device}; data {problem.data.sizes()}{extra}",
        study=study.study_name, finished=done, target=run.n_trials, device=str(device), data=problem.data.sizes(),
    )
    stale = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    if stale:
        progress.event("warning", f"warning: {len(stale)} trial(s) still marked RUNNING (a worker stopped or another is running); they are not counted", running=[t.number for t in stale])
    study.set_user_attr(ATTR + "n_trials", run.n_trials)
    remaining = run.n_trials - done
    if remaining <= 0:
        progress.event("done", f"nothing to do: the study already has {done} finished trials (target {run.n_trials})", finished=done)
        return study
    objective = Objective(
        problem, seed=run.seed, device=device,
        artifacts=artifacts_dir(run) if run.save_weights else None, progress=progress, total=run.n_trials,
    )
    objective.baselines(study)
    best = [max((t.user_attrs.get("delta_mtl", float("-inf")) for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))), default=float("-inf"))]

    def on_trial_end(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        number = len(finished_trials(study))
        delta = trial.user_attrs.get("delta_mtl")
        if trial.state == TrialState.COMPLETE:
            best[0] = max(best[0], delta)
            arch = trial.user_attrs.get("architecture", {})
            message = (
                f"trial {number}/{run.n_trials} #{trial.number} {arch.get('family', '?')}/{arch.get('weighting', {}).get('name', '?')}: "
                f"Delta-MTL {delta:+.2f}%  params {trial.user_attrs.get('params'):,}  "
                f"({trial.user_attrs.get('train_seconds', 0):.1f}s)  best Delta-MTL {best[0]:+.2f}%"
            )
        else:
            reason = trial.user_attrs.get("fail_reason") or trial.user_attrs.get("pruned_reason", "see the log above")
            message = f"trial {number}/{run.n_trials} #{trial.number} {trial.state.name}: {reason}"
        progress.event(
            "trial", message, trial=trial.number, finished=number, target=run.n_trials, state=trial.state.name,
            values=trial.values, delta_mtl=delta, best_delta_mtl=best[0] if best[0] > float("-inf") else None,
            fail_reason=trial.user_attrs.get("fail_reason"),
        )

    with warnings.catch_warnings():
        # Optuna warns for every caught exception; the trial line above already says why.
        warnings.simplefilter("ignore", UserWarning)
        optuna.logging.set_verbosity(optuna.logging.ERROR)
        study.optimize(
            objective, n_trials=remaining, timeout=run.timeout, catch=(NonFiniteLossError,),
            callbacks=[optuna.study.MaxTrialsCallback(run.n_trials, states=FINISHED), on_trial_end],
        )
    return study
