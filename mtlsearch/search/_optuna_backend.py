"""The Optuna backend: an objective that adapts :func:`~mtlsearch.search._trial.run_trial` to an
Optuna trial, and the loop that runs a study's trials in this process or its worker processes."""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import optuna
import torch
from optuna.trial import TrialState

from ..checkpoints import CheckpointStore
from ..config import RunConfig, SearchSpace, check_threads
from ..errors import StudyMismatchError
from ..problem import Problem
from ..storage_url import redact
from ..training import EpochEnd, resolve_device
from . import _confirm
from ._baselines import ensure_baselines, single_task_networks
from ._budget import CONFIRM_OF, WORKER, TrialEnd, budget_met, counts, finished_trials, requeue, surplus_reason
from ._early_stopping import EarlyStopping
from ._progress import QUIET, Progress
from ._records import TrialRecord, study_record, write_study, write_trial
from ._sampler import make_sampler
from ._signals import deferred, guarded, safe_point, stoppable
from ._storage import heartbeat_age, load_study, open_storage, recover, retried_numbers
from ._study import artifacts_dir, check_writable, start_run, stored_problem, write_record
from ._threads import threads_for, use_threads
from ._trial import EpochReport, TrialHooks, TrialOutcome, nan_values, run_trial, trial_identity, upload_weights

INTERRUPTED = "interrupted (Ctrl-C or SIGTERM); queued again with its parameters, to continue from its last checkpoint"


class _OptunaHooks(TrialHooks):
    """Record fields go to the live trial at once; epochs are shown; early stopping may stop it."""

    def __init__(self, objective: Objective, trial: Any, study: optuna.Study | None, run_id: str, family: str):
        self.objective, self.trial, self.study, self.run_id, self.family = objective, trial, study, run_id, family
        self.label = f"trial #{trial.number}"  # the study's numbering, as on the line that ends the trial
        self.evaluate_each_epoch = objective.early_stopping is not None and study is not None

    def write(self, **fields: Any) -> None:
        write_trial(self.trial, **fields)
        if fields.get("resumed_from_epoch"):
            self.objective.progress.event(
                "resumed",
                f"  {self.label} continued run {self.run_id} from its epoch {fields['resumed_from_epoch']} checkpoint",
                trial=self.trial.number,
                run_id=self.run_id,
                epoch=fields["resumed_from_epoch"],
            )

    def constrain(self, values: Mapping[str, float]) -> None:
        if hasattr(self.trial, "set_constraint"):
            for name, value in values.items():
                self.trial.set_constraint(name, value)

    def phase_epoch(self, end: EpochEnd, phase: str = "") -> None:
        safe_point()  # a signal that waited (its interrupt was swallowed, e.g. in a weakref callback)
        self.objective.progress.event(
            "epoch",
            f"  {self.label} [{self.family}]{phase} epoch {end.epoch}/{end.epochs} loss {end.train_loss:.4f}",
            transient=True,
            trial=self.trial.number,
            epoch=end.epoch,
            epochs=end.epochs,
            loss=end.train_loss,
        )

    def epoch(self, report: EpochReport) -> None:
        rule = self.objective.early_stopping
        if rule is not None and self.study is not None and report.proxy is not None:
            reason = rule.check(self.study, report.epoch, report.epochs, report.proxy, self.trial.number)
            if reason:
                raise optuna.TrialPruned(reason)


class Objective:
    """An Optuna objective for a problem: ``study.optimize(Objective(problem), n_trials=...)``.

    Each call samples a candidate through the trial, runs it (:func:`~mtlsearch.search._trial.run_trial`)
    and returns the objective values in the order of ``problem.objectives``. A candidate whose loss
    becomes NaN/inf records ``fail_reason`` and returns NaN values, which Optuna marks FAIL; an
    infeasible or early-stopped one raises ``optuna.TrialPruned``. The study's single-task
    baselines are trained (or read) once per study, before the first trial
    (:func:`~mtlsearch.search._baselines.ensure_baselines`).

    Args:
        seed: trial ``n`` uses ``seed + n`` (a retry keeps its trial's seed).
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or a ``torch.device``.
        artifacts: where trained weights are kept as Optuna artifacts (``None``: not kept).
        checkpoints: where each trial's training state goes after every epoch, under
            ``<checkpoints>/<run_id>``; a retry continues from it.
        total: the study-wide budget (a trial started after it was met elsewhere is not run).
        early_stopping: stops trials on their per-epoch validation Delta-MTL (PRUNED).
        seeds_per_trial: trains each candidate on this many seeds and scores the mean.
        sampler: the run's sampler, which also tunes ``tuned`` baselines.
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
        seeds_per_trial: int = 1,
        sampler: str = "tpe",
    ):
        self.problem = problem
        self.sampler = sampler
        self.checkpoint_root = Path(checkpoints) if checkpoints else None
        self.seed = seed
        self.device = device if isinstance(device, torch.device) else resolve_device(device)
        self.artifacts = Path(artifacts) if artifacts else None
        self.progress = progress
        self.total = total
        self.early_stopping = early_stopping
        self.seeds_per_trial = seeds_per_trial
        self._baselines: dict[str, Any] = {}  # per study name ("" without a study)
        self._teachers: dict[str, Any] = {}  # the single-task networks, per study name, loaded once

    def baselines(self, study: optuna.Study | None) -> dict[str, dict[str, float]]:
        key = study.study_name if study is not None else ""
        if key not in self._baselines:
            if study is not None and study_record(study).fingerprint is None:  # a user's own study
                write_study(study, signature=self.problem.signature(), metric_directions=self.problem.metric_directions)
                artifacts = str(self.artifacts.resolve()) if self.artifacts else None
                write_record(study, self.problem.space, self.seed, self.sampler, artifacts)
            self._baselines[key] = ensure_baselines(
                study, self.problem, self.seed, self.device, self.progress, self.sampler
            )
        return self._baselines[key]

    def teachers(self, study: optuna.Study | None) -> dict[str, torch.nn.Module] | None:
        """The study's single-task networks (distillation's teachers), loaded once per study."""
        if study is None:
            return None
        if study.study_name not in self._teachers:
            self._teachers[study.study_name] = single_task_networks(study, self.problem, self.device)
        return self._teachers[study.study_name]

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
        study = getattr(trial, "study", None)
        confirming = CONFIRM_OF in (getattr(trial, "user_attrs", None) or {})  # runs after the budget
        if self.total is not None and study is not None and not confirming:
            reason = surplus_reason(study, trial.number, self.total)
            if reason:
                write_trial(trial, surplus=True, pruned_reason=reason)
                raise optuna.TrialPruned(reason)
        baselines = self.baselines(study)
        stored = dict(getattr(trial, "user_attrs", {}) or {})  # a retry carries the dead trial's

        def warn(message: str) -> None:
            self.progress.event("warning", f"warning: trial #{trial.number}: {message}", trial=trial.number)

        run_id, seed = trial_identity(stored, self.seed + trial.number, warn)
        write_trial(trial, run_id=run_id, seed=seed, worker=WORKER)
        candidate = self.problem.sample(trial)
        hooks = _OptunaHooks(self, trial, study, run_id, candidate.architecture.family)
        checkpoints = self.checkpoints(run_id)
        try:
            with stoppable():  # under optimize(), a signal stops training only: its work is queued below
                outcome = run_trial(
                    self.problem,
                    trial.params,
                    seed=seed,
                    device=self.device,
                    baselines=baselines,
                    hooks=hooks,
                    checkpoints=checkpoints,
                    previous=TrialRecord.from_attrs(stored),
                    seeds_per_trial=self.seeds_per_trial,
                    teachers=self.teachers(study) if getattr(candidate.strategy, "needs_teachers", False) else None,
                )
        except KeyboardInterrupt:
            if study is not None and isinstance(trial, optuna.Trial):
                with deferred():  # a second Ctrl-C must not lose the first one's work
                    write_trial(trial, fail_reason=INTERRUPTED)
                    requeue(study, trial, drop=("fail_reason",))  # a resume continues it from its last checkpoint
            raise
        if checkpoints is not None:
            checkpoints.clear()
        return self._result(trial, outcome)

    def _result(self, trial: Any, outcome: TrialOutcome) -> tuple[float, ...]:
        if outcome.state == optuna.trial.TrialState.PRUNED:
            raise optuna.TrialPruned(outcome.record.pruned_reason)
        if outcome.values is None:
            return nan_values(len(self.problem.objectives))
        if self.artifacts is not None and outcome.model is not None and isinstance(trial, optuna.Trial):
            write_trial(trial, weights_artifact=upload_weights(trial, outcome.model.state_dict(), self.artifacts))
        return tuple(outcome.values)


# -- running ------------------------------------------------------------------------------------


def make_objective(
    problem: Problem, settings: Mapping[str, Any], device: torch.device, artifacts: str, progress: Progress
) -> Objective:
    rule = settings.get("early_stopping", "none")
    return Objective(
        problem,
        seed=settings["seed"],
        device=device,
        artifacts=artifacts if settings.get("save_weights", True) else None,
        checkpoints=Path(artifacts) / "checkpoints",
        progress=progress,
        total=settings["n_trials"],
        early_stopping=None if rule == "none" else EarlyStopping(rule, settings["min_trials"], settings["min_epochs"]),
        seeds_per_trial=int(settings.get("seeds_per_trial", 1)),
        sampler=settings.get("sampler", "tpe"),
    )


def run_search(problem: Problem | SearchSpace, run: RunConfig, progress: Progress = QUIET) -> optuna.Study:
    """Run (or continue) the study of ``problem`` until it holds ``run.n_trials`` finished trials
    (complete, pruned, or failed and not retried) over all its workers, or until ``run.timeout``
    seconds pass. With ``run.workers > 1``, that many local worker processes share the study (the
    baselines are trained first, here). Trials of dead workers are retried (see :func:`optimize`)."""
    problem = problem if isinstance(problem, Problem) else Problem(problem)
    space = problem.space
    artifacts = check_writable(artifacts_dir(run))  # before anything is created or trained
    device = resolve_device(run.device)
    storage = open_storage(run.storage, heartbeat=(run.heartbeat_interval, run.grace_period))
    # this process alone trains the baselines (and confirms); the workers share the cores
    alone = threads_for(problem, run.threads)
    use_threads(alone)
    threads = alone if run.workers == 1 else threads_for(problem, run.threads, run.workers)
    workers = f", {run.workers} workers" if run.workers > 1 else ""
    where = f"device {device}{workers}, {threads} torch thread(s) {'each' if run.workers > 1 else ''}".rstrip()
    study, settings = start_run(
        space, run, problem, storage, progress, where, device=str(device), workers=run.workers, threads=threads
    )
    objective = make_objective(problem, settings, device, str(artifacts), progress)
    if len(finished_trials(study)) < run.n_trials:
        with guarded(), stoppable():  # a Ctrl-C that Python swallows still stops the run, once they are stored
            objective.baselines(study)  # once per study, before any worker starts
    if run.workers > 1:
        from ._workers import launch_workers

        launch_workers(study.study_name, run, progress, threads)
    else:
        optimize(study, objective, settings, progress)
    confirm_stage(study, objective, settings, progress)
    return study


def confirm_stage(study: optuna.Study, objective: Objective, settings: Mapping[str, Any], progress: Progress) -> None:
    """After the budget, queue the confirmation trials of ``run.confirm`` (or those an interrupted
    stage left) and run them in this process (see :mod:`~mtlsearch.search._confirm`)."""
    confirm, deadline = settings.get("confirm"), settings.get("deadline")
    if not confirm or len(finished_trials(study)) < settings["n_trials"]:
        return  # the budget was not met (a time limit): there is nothing to confirm yet
    if deadline is not None and time.time() >= deadline:
        progress.event("confirm", "the study's time limit is reached: no confirmation", skipped=True)
        return
    if _confirm.queue(study, confirm["top"], confirm["seeds"], progress) or _confirm.pending(study):
        optimize(study, objective, settings, progress)


def optimize(
    study: optuna.Study, objective: Objective, settings: Mapping[str, Any], progress: Progress = QUIET
) -> None:
    """Run trials of ``study`` in this process until the study-wide budget (``settings``) is met.

    Trials of dead workers (no heartbeat for the grace period) are failed and queued again first;
    queued retries run before new trials. A worker does not start a trial when the finished
    trials plus those running elsewhere reach the budget; it then waits until those finish (or go
    stale and are queued again, and runs them), saying what it waits for, so the study ends with
    no trial left RUNNING. Ctrl-C or SIGTERM stops training at once (the trial is queued again),
    anything else at the next safe point, and a second signal cannot cut short the saving of the
    first one's work (:func:`~._signals.guarded`).
    """
    study.sampler = make_sampler(study_record(study).sampler or settings["sampler"], settings["seed"])
    with guarded():
        _optimize(study, objective, settings, progress)


def _optimize(study: optuna.Study, objective: Objective, settings: Mapping[str, Any], progress: Progress) -> None:
    n_trials, deadline = settings["n_trials"], settings.get("deadline")
    report_recovered(study, progress)
    trial_end = TrialEnd(study, n_trials, progress)
    waits = StaleWait(study, progress, settings["grace_period"])

    def stop_at_budget(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if budget_met(*counts(study), n_trials) or (deadline is not None and time.time() >= deadline):
            study.stop()

    def on_trial_end(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        trial_end(trial, len(finished_trials(study)))
        safe_point()  # the trial is recorded: a signal that waited stops the run here

    while True:
        safe_point()
        waits.ended(report_recovered(study, progress))
        done, running, waiting = counts(study)
        if deadline is not None and time.time() >= deadline:
            progress.event("timeout", f"the study's time limit is reached ({done} finished trials)", finished=done)
            return
        if done >= n_trials and waiting == 0:
            progress.event("done", f"the study has {done} finished trials (target {n_trials})", finished=done)
            return
        if budget_met(done, running, waiting, n_trials):
            # the last trials run elsewhere: wait for them, or for a dead worker's trial to go
            # stale and be queued again (then this worker runs it)
            waits.started()
            with stoppable():
                time.sleep(min(settings["heartbeat_interval"], 2))
            continue
        # A joining worker loads (and checks) the data here, outside any trial: a data factory
        # that fails then stops the worker and fails no trial of the study.
        objective.problem.data
        with warnings.catch_warnings():
            # Optuna warns for each failed trial; the trial line above already says why.
            warnings.simplefilter("ignore", UserWarning)
            optuna.logging.set_verbosity(optuna.logging.ERROR)
            timeout = None if deadline is None else max(deadline - time.time(), 0.0)
            study.optimize(objective, timeout=timeout, callbacks=[stop_at_budget, on_trial_end])


def report_recovered(study: optuna.Study, progress: Progress) -> list[int]:
    failed = recover(study)
    if failed:
        progress.event(
            "recovered",
            f"trial(s) {', '.join(f'#{n}' for n in failed)} of a stopped worker failed (no heartbeat); "
            "queued again with their parameters, to continue from their last epoch checkpoint",
            failed=failed,
        )
    return failed


class StaleWait:
    """What a worker says while the last trials of the budget run elsewhere: once per trial, how
    long it has at most before it goes stale (its process may be alive, or gone), then how the
    wait for it ended."""

    def __init__(self, study: optuna.Study, progress: Progress, grace_period: int):
        self.study, self.progress, self.grace_period = study, progress, grace_period
        self.since: dict[int, float] = {}  # trial number -> when this worker began to wait for it

    def started(self) -> None:
        for trial in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if trial.number in self.since:
                continue
            self.since[trial.number] = time.monotonic()
            age = heartbeat_age(self.study, trial)
            beat = "no heartbeat yet" if age is None else f"last heartbeat {age:.0f} s ago"
            left = max(self.grace_period - (age or 0.0), 0.0)
            self.progress.event(
                "waiting",
                f"waiting up to {left:.0f} s for trial #{trial.number} (RUNNING, {beat}) to go stale: its process may "
                f"still be alive (grace_period {self.grace_period} s)",
                trial=trial.number,
                heartbeat_age=None if age is None else round(age, 1),
                grace_period=self.grace_period,
            )

    def ended(self, recovered: list[int]) -> None:
        if not self.since:
            return
        trials = {t.number: t for t in self.study.get_trials(deepcopy=False)}
        retried = retried_numbers(self.study)
        for number in [n for n in self.since if trials[n].state != TrialState.RUNNING]:
            waited = time.monotonic() - self.since.pop(number)
            state = trials[number].state.name
            if number in recovered:
                how = "went stale and was queued again"
            else:
                how = f"ended in its own process ({state}{', queued again' if number in retried else ''})"
            self.progress.event(
                "waited",
                f"trial #{number} {how} after {waited:.0f} s of waiting",
                trial=number,
                state=state,
                stale=number in recovered,
                waited=round(waited, 1),
            )


def join_study(
    study_name: str,
    storage_url: str,
    progress: Progress = QUIET,
    device: str = "auto",
    worker: int = 0,
    threads: int | str | None = None,
) -> optuna.Study:
    """Work on a stored study as one more worker (``mtlsearch worker``): its space, seed, sampler,
    budget, early stopping and heartbeat settings are read from the storage. ``threads``: torch
    threads, ``auto`` or N (default: the study's ``run.threads``), for one process on this machine."""
    settings = study_record(load_study(study_name, storage_url)).run
    if settings is None:
        raise StudyMismatchError(
            f"study `{study_name}` in {redact(storage_url)} was not started by `mtlsearch run` "
            "(it has no run settings to join)"
        )
    study = load_study(study_name, storage_url, heartbeat=(settings["heartbeat_interval"], settings["grace_period"]))
    problem = stored_problem(study, progress)
    dev = resolve_device(device)
    setting = threads if threads is not None else check_threads(settings.get("threads", "auto"), "stored run.threads")
    threads = threads_for(problem, setting)
    use_threads(threads)
    progress.event(
        "worker",
        f"worker {worker or os.getpid()} joined study `{study_name}` ({redact(storage_url)}) on {dev}, "
        f"{threads} torch thread(s)",
        study=study_name,
        worker=worker,
        device=str(dev),
        threads=threads,
    )
    objective = make_objective(problem, settings, dev, study_record(study).artifacts or "", progress)
    objective.baselines(study)
    optimize(study, objective, settings, progress)
    return study
