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
import socket
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
from ..storage_url import redact
from ..scoring import constraint_values, count_macs, count_params, delta_mtl, measure_latency
from ..training import evaluate, resolve_device, train
from ..checkpoints import CheckpointStore, run_id_from
from .early_stopping import EPOCH_ATTR, EarlyStopping
from .progress import QUIET, Progress
from .storage import RETRY_OF, load_study, open_storage, recover, retried_numbers

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


def sampler_seed(seed: int, n_finished: int, worker: int = 0) -> int:
    """Mixes the run seed with the number of finished trials and the worker: a sampler re-created
    with the same seed in a new process, or in a second worker started at the same moment, would
    otherwise draw the same configurations again."""
    return (seed * 1_000_003 + n_finished * 7_919 + worker * 104_729) % (2**32)


def make_sampler(name: str, seed: int, n_finished: int, worker: int = 0) -> optuna.samplers.BaseSampler:
    s = sampler_seed(seed, n_finished, worker)
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
    """Trials that count toward the budget: complete, pruned, and failed ones that no later trial
    retries (a dead worker's or an interrupted trial is replaced by its retry)."""
    retried = retried_numbers(study)
    return [
        t for t in study.get_trials(deepcopy=False, states=FINISHED)
        if (t.state != TrialState.FAIL or t.number not in retried) and SURPLUS not in t.user_attrs
    ]


WORKER = f"{socket.gethostname()}:{os.getpid()}"  # which process ran a trial (user attribute `worker`)
SURPLUS = "surplus"  # user attribute of a trial started after other workers had met the budget


def surplus_reason(study: optuna.Study, number: int, n_trials: int) -> str | None:
    """Why trial ``number`` must not run: the trials before it already make up the budget (two
    workers can each start a last trial at the same moment; trial numbers are unique, so the
    later one yields). Failed trials that were retried and earlier surplus trials do not count."""
    retried = retried_numbers(study)
    before = [
        t for t in study.get_trials(deepcopy=False)
        if t.number < number and SURPLUS not in t.user_attrs and not (t.state == TrialState.FAIL and t.number in retried)
    ]
    if len(before) >= n_trials:
        return f"not run: the study-wide budget of {n_trials} trials was met by other workers"
    return None


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
    where = f"study `{study.study_name}` in {redact(run.storage)}"
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


def measure_costs(model: torch.nn.Module, input_shape) -> dict[str, float]:
    """What a candidate costs: parameters, MACs of one forward for all tasks, median latency (ms)."""
    return {
        "params": count_params(model),
        "macs": count_macs(model, input_shape),
        "latency_ms": round(measure_latency(model, input_shape), 4),
    }


def infeasibility(costs: Mapping[str, float], bounds: Mapping[str, float]) -> tuple[dict[str, float], str | None]:
    """Optuna constraint values of ``costs`` against the space's ``max_*`` bounds, and why the
    candidate is infeasible (``None`` when it is not)."""
    values = constraint_values(costs, bounds)
    over = [f"{CONSTRAINTS[n]} {costs[CONSTRAINTS[n]]:g} > {n} {bounds[n]:g}" for n, v in values.items() if v > 0]
    return values, ("infeasible: " + ", ".join(over) if over else None)


def objective_values(objectives: list[str], metrics: Mapping[str, Mapping[str, float]], delta: float, costs: Mapping[str, float]) -> dict[str, float]:
    """The value of each objective: ``delta_mtl``, a cost, or ``TASK.METRIC``."""
    scores = {"delta_mtl": delta, **{k: float(v) for k, v in costs.items()}}
    return {o: float(scores[o] if o in scores else metrics[o.split(".", 1)[0]][o.split(".", 1)[1]]) for o in objectives}


class Objective:
    """An Optuna objective for a space: ``study.optimize(Objective(problem), ...)``.

    Each call samples a candidate, trains it on the train split, scores it on the validation split
    and returns the objective values in the order of ``problem.objectives``. A NaN/inf loss raises
    :class:`~mtlsearch.errors.NonFiniteLossError` after recording ``fail_reason``; pass it in
    ``catch=`` so the study goes on. Baselines are taken from (or stored in) the trial's study.

    Resumability: each trial gets a ``run_id`` user attribute, copied into any retry of the trial
    (Optuna's retry of a dead worker's trial copies user attributes; a trial interrupted by
    Ctrl-C is queued again with them). With ``artifacts``, training state is checkpointed after
    every epoch under ``artifacts/checkpoints/<run_id>``, so a retry continues from the dead
    trial's last epoch (user attribute ``resumed_from_epoch``), with the same seed and, for a
    learned family, the same learned architecture. ``early_stopping`` stops a trial on its
    per-epoch validation Delta-MTL (:mod:`mtlsearch.search.early_stopping`); it ends PRUNED.
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
        early_stopping: EarlyStopping | None = None,
        checkpoints: str | Path | None = None,
    ):
        self.problem = problem
        self.checkpoint_root = Path(checkpoints) if checkpoints else None
        self.seed = seed
        self.device = device if isinstance(device, torch.device) else resolve_device(device)
        self.artifacts = Path(artifacts) if artifacts else None
        self.progress = progress
        self.total = total
        self.early_stopping = early_stopping
        self._baselines: dict | None = None

    def baselines(self, study: optuna.Study | None) -> dict[str, dict[str, float]]:
        if self._baselines is None:
            self._baselines = ensure_baselines(study, self.problem, self.seed, self.device, self.progress)
        return self._baselines

    def checkpoints(self, run_id: str) -> CheckpointStore | None:
        if self.checkpoint_root is None:
            return None
        warn = lambda message: self.progress.event("warning", f"warning: {message}", run_id=run_id)  # noqa: E731
        try:
            return CheckpointStore(self.checkpoint_root / run_id, warn=warn, root=self.checkpoint_root)
        except ValueError as err:  # e.g. a link planted under the root: train without checkpoints
            warn(f"{err}; the trial runs without epoch checkpoints")
            return None

    def __call__(self, trial: optuna.Trial) -> tuple[float, ...]:
        problem = self.problem
        study = getattr(trial, "study", None)
        if self.total is not None and study is not None:
            reason = surplus_reason(study, trial.number, self.total)
            if reason:
                trial.set_user_attr(SURPLUS, True)
                trial.set_user_attr("pruned_reason", reason)
                raise optuna.TrialPruned(reason)
        baselines = self.baselines(study)
        stored = dict(getattr(trial, "user_attrs", {}) or {})  # a retry carries the dead trial's
        run_id = run_id_from(stored, lambda m: self.progress.event("warning", f"warning: trial #{trial.number}: {m}", trial=trial.number))
        seed = stored.get("seed", self.seed + trial.number)
        trial.set_user_attr("run_id", run_id)
        trial.set_user_attr("seed", seed)
        trial.set_user_attr("worker", WORKER)
        candidate = problem.sample(trial)
        label = f"trial {trial.number + 1}" + (f"/{self.total}" if self.total else "")

        def show_epoch(e, phase=""):
            self.progress.event(
                "epoch", f"  {label} [{candidate.architecture.family}]{phase} epoch {e.epoch}/{e.epochs} loss {e.train_loss:.4f}",
                transient=True, trial=trial.number, epoch=e.epoch, epochs=e.epochs, loss=e.train_loss,
            )

        start = time.perf_counter()
        if candidate.needs_learning and "learned" in stored:
            candidate.architecture = candidate.family.with_learned(candidate.architecture, stored["learned"])
        elif candidate.needs_learning:
            from ..learning import learn_architecture

            try:
                candidate.architecture = learn_architecture(candidate, self.device, seed, lambda e: show_epoch(e, " policy"))
            except NonFiniteLossError as err:
                trial.set_user_attr("fail_reason", str(err))
                raise
            trial.set_user_attr("learned", dict(candidate.architecture.learned))
        trial.set_user_attr("architecture", candidate.summary())
        model = candidate.build_model(seed).to(self.device)
        costs = measure_costs(model, problem.input_shape)
        for k, v in costs.items():
            trial.set_user_attr(k, v)
        if problem.constraints:
            violated = self._constrain(trial, costs)
            if violated:
                trial.set_user_attr("pruned_reason", violated)
                raise optuna.TrialPruned(violated)

        checkpoints = self.checkpoints(run_id)
        last_metrics: list[Any] = [None, 0]  # validation metrics of the latest epoch, and its number
        proxies = list(stored.get(EPOCH_ATTR, []))

        def on_epoch(e):
            show_epoch(e)
            if self.early_stopping is None or study is None:
                return
            metrics = evaluate(model, problem.tasks, problem.data.val, self.device)
            last_metrics[:] = [metrics, e.epoch]
            proxies[e.epoch - 1:] = [delta_mtl(metrics, baselines, problem.metric_directions)]
            trial.set_user_attr(EPOCH_ATTR, proxies)
            reason = self.early_stopping.check(study, e.epoch, e.epochs, proxies[-1], trial.number)
            if reason:
                trial.set_user_attr("pruned_reason", reason)
                raise optuna.TrialPruned(reason)

        try:
            result = train(model, problem.tasks, candidate.new_weighting(), problem.data.train, candidate.training,
                           self.device, seed, on_epoch, checkpoints)
        except NonFiniteLossError as err:
            trial.set_user_attr("fail_reason", str(err))
            self._finish(checkpoints)
            raise
        except optuna.TrialPruned:
            self._finish(checkpoints)
            raise
        except KeyboardInterrupt:
            self._requeue(trial, study)
            raise
        if result.resumed_from:
            trial.set_user_attr("resumed_from_epoch", result.resumed_from)
            self.progress.event("resumed", f"  {label} continued run {run_id} from its epoch {result.resumed_from} checkpoint",
                                trial=trial.number, run_id=run_id, epoch=result.resumed_from)
        trial.set_user_attr("train_seconds", round(time.perf_counter() - start, 3))
        metrics = last_metrics[0] if last_metrics[1] == result.epochs else evaluate(model, problem.tasks, problem.data.val, self.device)
        delta = delta_mtl(metrics, baselines, problem.metric_directions)
        trial.set_user_attr("val_metrics", metrics)
        trial.set_user_attr("delta_mtl", delta)
        if self.artifacts is not None and isinstance(trial, optuna.Trial):
            trial.set_user_attr("weights_artifact", self._save_weights(trial, model))
        self._finish(checkpoints)
        return tuple(objective_values(problem.objectives, metrics, delta, costs).values())

    @staticmethod
    def _finish(checkpoints: CheckpointStore | None) -> None:
        if checkpoints is not None:
            checkpoints.clear()

    def _requeue(self, trial: optuna.Trial, study: optuna.Study | None) -> None:
        """Ctrl-C: Optuna marks the trial FAIL; queue it again with its run id, so that a resume
        continues it from its last checkpoint (the FAIL one then does not count)."""
        if study is None or not isinstance(trial, optuna.Trial):
            return
        attrs = {**trial.user_attrs, RETRY_OF: trial.number}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            study.enqueue_trial(dict(trial.params), user_attrs=attrs, skip_if_exists=False)

    def _constrain(self, trial: optuna.Trial, costs: Mapping[str, float]) -> str | None:
        """Record the space's cost constraints on the trial; say why it is infeasible, if it is.

        Costs are known before training, so an infeasible candidate is not trained: it ends
        PRUNED with its constraint values set, which samplers that read constraints (TPE, NSGA-II)
        treat as infeasible, and it is never on the front.
        """
        values, reason = infeasibility(costs, self.problem.constraints)
        if hasattr(trial, "set_constraint"):
            for name, value in values.items():
                trial.set_constraint(name, value)
        return reason

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

RUN_ATTR = ATTR + "run"  # the run settings that workers joining the study use


def run_settings(run: RunConfig, deadline: float | None) -> dict[str, Any]:
    return {
        "n_trials": run.n_trials, "seed": run.seed, "sampler": run.sampler, "save_weights": run.save_weights,
        "heartbeat_interval": run.heartbeat_interval, "grace_period": run.grace_period,
        "early_stopping": run.early_stopping, "min_trials": run.min_trials, "min_epochs": run.min_epochs,
        "deadline": deadline,
    }


def make_objective(problem: Problem, settings: Mapping[str, Any], device: torch.device, artifacts: str, progress: Progress) -> Objective:
    rule = settings.get("early_stopping", "none")
    return Objective(
        problem, seed=settings["seed"], device=device, artifacts=artifacts if settings.get("save_weights", True) else None,
        checkpoints=Path(artifacts) / "checkpoints", progress=progress, total=settings["n_trials"],
        early_stopping=None if rule == "none" else EarlyStopping(rule, settings["min_trials"], settings["min_epochs"]),
    )


def run_search(space: SearchSpace, run: RunConfig, progress: Progress = QUIET, problem: Problem | None = None) -> optuna.Study:
    """Run (or continue) the study of ``space`` until it holds ``run.n_trials`` finished trials
    (complete, pruned, or failed and not retried) over all its workers, or until ``run.timeout``
    seconds pass. With ``run.workers > 1``, that many local worker processes share the study (the
    baselines are trained first, here). Trials of dead workers are retried (see :func:`optimize`)."""
    problem = problem or Problem(space)
    device = resolve_device(run.device)
    storage = open_storage(run.storage, heartbeat=(run.heartbeat_interval, run.grace_period))
    study = open_study(space, run, problem.directions, storage)
    deadline = time.time() + run.timeout if run.timeout else None
    settings = run_settings(run, deadline)
    study.set_user_attr(ATTR + "n_trials", run.n_trials)
    study.set_user_attr(RUN_ATTR, settings)
    info = problem.data.info
    extra = f", measured label correlation {info['label_correlation']}" if "label_correlation" in info else ""
    done = len(finished_trials(study))
    progress.event(
        "study", f"study `{study.study_name}` ({redact(run.storage)}): {done} finished trials, target {run.n_trials}; "
        f"device {device}; data {problem.data.sizes()}{extra}" + (f"; {run.workers} workers" if run.workers > 1 else ""),
        study=study.study_name, finished=done, target=run.n_trials, device=str(device), data=problem.data.sizes(), workers=run.workers,
    )
    objective = make_objective(problem, settings, device, str(artifacts_dir(run)), progress)
    if done < run.n_trials:
        objective.baselines(study)  # once per study, before any worker starts
    if run.workers > 1:
        from .workers import launch_workers

        launch_workers(study.study_name, run, progress)
        return study
    optimize(study, objective, settings, progress)
    return study


def optimize(study: optuna.Study, objective: Objective, settings: Mapping[str, Any], progress: Progress = QUIET, worker: int = 0) -> None:
    """Run trials of ``study`` in this process until the study-wide budget (``settings``) is met.

    Trials of dead workers (no heartbeat for the grace period) are failed and queued again first;
    queued retries run before new trials. A worker does not start a trial when the finished
    trials plus those running elsewhere reach the budget; it then waits until those finish (or go
    stale and are queued again, and runs them), so the study ends with no trial left RUNNING.
    """
    n_trials, deadline = settings["n_trials"], settings.get("deadline")
    study.sampler = make_sampler(study.user_attrs.get(ATTR + "sampler", settings["sampler"]), settings["seed"], len(finished_trials(study)), worker)
    report_recovered(study, progress)
    best = [max((t.user_attrs.get("delta_mtl", float("-inf")) for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))), default=float("-inf"))]

    def counts() -> tuple[int, int, int]:
        trials = study.get_trials(deepcopy=False, states=(TrialState.RUNNING, TrialState.WAITING))
        return len(finished_trials(study)), sum(t.state == TrialState.RUNNING for t in trials), sum(t.state == TrialState.WAITING for t in trials)

    def budget_met() -> bool:
        done, running, waiting = counts()
        return (done + running >= n_trials and waiting == 0) or (deadline is not None and time.time() >= deadline)

    def budget(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if budget_met():
            study.stop()

    def on_trial_end(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        number = len(finished_trials(study))
        delta = trial.user_attrs.get("delta_mtl")
        if trial.state == TrialState.COMPLETE:
            best[0] = max(best[0], delta)
            arch = trial.user_attrs.get("architecture", {})
            message = (
                f"trial {number}/{n_trials} #{trial.number} {arch.get('family', '?')}/{arch.get('weighting', {}).get('name', '?')}: "
                f"Delta-MTL {delta:+.2f}%  params {trial.user_attrs.get('params'):,}  "
                f"({trial.user_attrs.get('train_seconds', 0):.1f}s)  best Delta-MTL {best[0]:+.2f}%"
            )
        else:
            reason = trial.user_attrs.get("fail_reason") or trial.user_attrs.get("pruned_reason", "see the log above")
            message = f"trial {number}/{n_trials} #{trial.number} {trial.state.name}: {reason}"
        progress.event(
            "trial", message, trial=trial.number, finished=number, target=n_trials, state=trial.state.name,
            values=trial.values, delta_mtl=delta, best_delta_mtl=best[0] if best[0] > float("-inf") else None,
            fail_reason=trial.user_attrs.get("fail_reason"), pruned_reason=trial.user_attrs.get("pruned_reason"),
        )

    while True:
        report_recovered(study, progress)
        done, running, waiting = counts()
        if deadline is not None and time.time() >= deadline:
            progress.event("timeout", f"the study's time limit is reached ({done} finished trials)", finished=done)
            return
        if done >= n_trials and waiting == 0:
            progress.event("done", f"the study has {done} finished trials (target {n_trials})", finished=done)
            return
        if done + running >= n_trials and waiting == 0:
            # the last trials run elsewhere: wait for them, or for a dead worker's trial to go
            # stale and be queued again (then this worker runs it)
            time.sleep(min(settings["heartbeat_interval"], 2))
            continue
        with warnings.catch_warnings():
            # Optuna warns for every caught exception; the trial line above already says why.
            warnings.simplefilter("ignore", UserWarning)
            optuna.logging.set_verbosity(optuna.logging.ERROR)
            timeout = None if deadline is None else max(deadline - time.time(), 0.0)
            study.optimize(objective, timeout=timeout, catch=(NonFiniteLossError,), callbacks=[budget, on_trial_end])


def report_recovered(study: optuna.Study, progress: Progress) -> list[int]:
    failed = recover(study)
    if failed:
        progress.event("recovered", f"trial(s) {', '.join(f'#{n}' for n in failed)} of a stopped worker failed (no heartbeat); "
                       "queued again with their parameters, to continue from their last epoch checkpoint", failed=failed)
    return failed


def join_study(study_name: str, storage_url: str, progress: Progress = QUIET, device: str = "auto", worker: int = 0) -> optuna.Study:
    """Work on a stored study as one more worker (``mtlsearch worker``): its space, seed, sampler,
    budget, early stopping and heartbeat settings are read from the storage."""
    probe = load_study(study_name, storage_url)
    settings = probe.user_attrs.get(RUN_ATTR)
    if settings is None:
        raise StudyMismatchError(f"study `{study_name}` in {redact(storage_url)} was not started by `mtlsearch run` (it has no run settings to join)")
    storage = open_storage(storage_url, heartbeat=(settings["heartbeat_interval"], settings["grace_period"]))
    study = optuna.load_study(study_name=study_name, storage=storage)
    problem = Problem(stored_space(study))
    dev = resolve_device(device)
    progress.event("worker", f"worker {worker or os.getpid()} joined study `{study_name}` ({redact(storage_url)}) on {dev}", study=study_name, worker=worker, device=str(dev))
    objective = make_objective(problem, settings, dev, study.user_attrs.get(ATTR + "artifacts"), progress)
    objective.baselines(study)
    optimize(study, objective, settings, progress, worker=worker or os.getpid())
    return study
