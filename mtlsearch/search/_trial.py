"""One trial, written once for every backend: :func:`run_trial`.

Given a candidate's parameters, it replays the candidate, learns its architecture when the family
learns one inside the trial, measures costs and checks the space's constraints (an infeasible
candidate is not trained), trains with per-epoch checkpoints, and scores on the validation split.
An engine adapts it through :class:`TrialHooks`: where record fields go (an Optuna trial, a Ray
report), what happens after each epoch (progress, early stopping, a Tune report), and how the
constraint values are stored. The Optuna objective and the Ray trainable are such adapters. See
docs/search.md#the-life-of-a-trial.
"""

from __future__ import annotations

import math
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import torch
from optuna.trial import TrialState

from ..checkpoints import CheckpointStore, describe_value, run_id_from
from ..config import CONSTRAINTS
from ..errors import NonFiniteLossError
from ..problem import Problem
from ..scoring import constraint_values, delta_mtl, measure_costs
from ..training import EpochEnd, evaluate, train
from ..weighting import StrategyError, TrainingStrategy
from ._records import TrialRecord


@dataclass
class EpochReport:
    """What a trial knows after an epoch. ``metrics``, ``proxy`` (validation Delta-MTL) and
    ``values`` (the objective values at this epoch) are set when the hooks ask for an evaluation
    after every epoch (:attr:`TrialHooks.evaluate_each_epoch`)."""

    epoch: int
    epochs: int
    train_loss: float
    metrics: dict[str, dict[str, float]] | None = None
    proxy: float | None = None
    values: dict[str, float] | None = None


@dataclass
class TrialOutcome:
    """How a trial ended: ``state`` COMPLETE (with ``values`` in the order of the objectives),
    PRUNED (``record.pruned_reason``) or FAIL (``record.fail_reason``); ``record`` holds every
    field the trial wrote, ``model`` the trained network (complete trials)."""

    state: TrialState
    record: TrialRecord
    values: list[float] | None = None
    constraints: dict[str, float] = field(default_factory=dict)
    model: torch.nn.Module | None = None


class TrialHooks:
    """What an engine adds to :func:`run_trial`. Every method may be left as it is.

    * :meth:`write` stores record fields as soon as they are known (a retry copies them);
    * :meth:`constrain` stores the constraint values (``<= 0``: feasible);
    * :meth:`phase_epoch` shows progress of learning (``phase=" policy"``) and training epochs;
    * :meth:`epoch` runs after each training epoch and may stop the trial by raising
      ``optuna.TrialPruned(reason)``; it is also called once for a trial restored from its last
      epoch's checkpoint, which trains no epoch.
    """

    evaluate_each_epoch: bool = False

    def write(self, **fields: Any) -> None:
        pass

    def constrain(self, values: Mapping[str, float]) -> None:
        pass

    def phase_epoch(self, end: EpochEnd, phase: str = "") -> None:
        pass

    def epoch(self, report: EpochReport) -> None:
        pass


class _Recorder:
    """Collects what a trial writes and passes it on to the hooks."""

    def __init__(self, hooks: TrialHooks, previous: TrialRecord):
        self.hooks = hooks
        self.record = previous

    def __call__(self, **fields: Any) -> None:
        self.record = self.record.replace(**fields)
        self.hooks.write(**fields)


def run_trial(
    problem: Problem,
    params: Mapping[str, Any],
    *,
    seed: int,
    device: torch.device,
    baselines: Mapping[str, Mapping[str, float]],
    hooks: TrialHooks | None = None,
    checkpoints: CheckpointStore | None = None,
    previous: TrialRecord | None = None,
    seeds_per_trial: int = 1,
    teachers: Mapping[str, torch.nn.Module] | None = None,
) -> TrialOutcome:
    """Run the trial of ``params`` (see the module docstring).

    Args:
        seed: seeds the model's initialisation, the architecture learning and the training.
        baselines: single-task validation metrics, the denominators of Delta-MTL.
        checkpoints: where the training state goes after every epoch; training continues from the
            newest readable checkpoint there.
        previous: the record of an earlier attempt at this trial (a retry, a restored Tune trial):
            its learned architecture, per-epoch validation Delta-MTL and seconds are kept.
        seeds_per_trial: train the candidate on this many seeds (:func:`trial_seeds`) and score
            the mean of their validation metrics; the per-seed Delta-MTL and its standard
            deviation are recorded. Per-epoch reports (early stopping, Ray's ASHA) follow the
            first seed; the final one comes after every seed has trained.
        teachers: the study's single-task networks ``{task: network}``
            (:func:`~mtlsearch.search._baselines.single_task_networks`), given to a strategy that
            needs them (distillation); without them such a candidate fails.
    """
    hooks = hooks or TrialHooks()
    previous = previous or TrialRecord()
    write = _Recorder(hooks, previous)
    start = time.perf_counter()
    before = float(previous.train_seconds or 0.0)  # earlier attempts of this trial

    def seconds() -> float:
        return round(before + time.perf_counter() - start, 3)

    constraints: dict[str, float] = {}

    def ended(state: TrialState, **fields: Any) -> TrialOutcome:
        write(**fields)
        return TrialOutcome(state, write.record, constraints=constraints)

    candidate = problem.replay(params, previous.learned, partial=True)
    write(candidate=candidate.key())  # before learning: a learned family's key is its settings
    if candidate.needs_learning:
        try:
            candidate.architecture = candidate.family.learn(
                candidate, device, seed, lambda e: hooks.phase_epoch(e, " policy")
            )
        except NonFiniteLossError as err:
            return ended(TrialState.FAIL, fail_reason=str(err))
        write(learned=dict(candidate.architecture.learned or {}))
    write(architecture=candidate.summary())
    model = candidate.build_model(seed).to(device)
    costs = measure_costs(model, problem.input_shape)
    write(**costs)
    if problem.constraints:
        constraints, reason = infeasibility(costs, problem.constraints)
        hooks.constrain(constraints)
        if reason:  # costs are known before training: an infeasible candidate is not trained
            return ended(TrialState.PRUNED, pruned_reason=reason)

    proxies = list(previous.epoch_delta_mtl or [])
    seeds = trial_seeds(seed, seeds_per_trial)
    final_epoch_waits = len(seeds) > 1  # the final report comes once every seed has trained
    last: dict[str, Any] = {}

    def score(metrics: dict[str, dict[str, float]]) -> tuple[float, dict[str, float]]:
        delta = delta_mtl(metrics, baselines, problem.delta_directions, problem.delta_average)
        return delta, objective_values(problem.objectives, metrics, delta, costs)

    def report(epoch: int, epochs: int, train_loss: float, metrics: dict[str, dict[str, float]] | None = None) -> None:
        out = EpochReport(epoch, epochs, train_loss)
        if hooks.evaluate_each_epoch:
            out.metrics = metrics or evaluate(model, candidate.tasks, problem.data.val, device)
            out.proxy, out.values = score(out.metrics)
            proxies[epoch - 1 :] = [out.proxy]
            last.update(epoch=epoch, metrics=out.metrics)
            write(epoch_delta_mtl=list(proxies), train_seconds=seconds())
            if epoch == epochs:  # an engine that reports from here (Ray) has the final scores now
                write(val_metrics=out.metrics, delta_mtl=out.proxy)
        hooks.epoch(out)

    def on_epoch(end: EpochEnd) -> None:
        if end.resumed_from and write.record.resumed_from_epoch != end.resumed_from:
            write(resumed_from_epoch=end.resumed_from)
        hooks.phase_epoch(end)
        if end.epoch < end.epochs or not final_epoch_waits:
            report(end.epoch, end.epochs, end.train_loss)

    runs: list[dict[str, dict[str, float]]] = []
    try:
        for j, run_seed in enumerate(seeds):
            net = model if j == 0 else candidate.build_model(run_seed).to(device)
            store = checkpoints if j == 0 or checkpoints is None else checkpoints.sub(f"seed-{j}")
            label = f" seed {j + 1}/{len(seeds)}"
            callback = on_epoch if j == 0 else (lambda e, label=label: hooks.phase_epoch(e, label))
            weighting = candidate.new_weighting()
            result = train(
                net,
                candidate.tasks,
                weighting,
                problem.data.train,
                candidate.training,
                device,
                run_seed,
                callback,
                store,
                strategy=trial_strategy(candidate, teachers),
                schedule=candidate.new_schedule(),
            )
            if j == 0 and result.resumed_from >= result.epochs and not final_epoch_waits:
                write(resumed_from_epoch=result.resumed_from)  # restored after its last epoch: report it again
                report(result.epochs, result.epochs, result.train_loss)
            fresh = j > 0 or last.get("epoch") != result.epochs
            runs.append(evaluate(net, candidate.tasks, problem.data.val, device) if fresh else last["metrics"])
        metrics = mean_metrics(runs)
        if final_epoch_waits:
            per_seed = [score(m)[0] for m in runs]
            write(seeds=seeds, seed_delta_mtl=per_seed, delta_mtl_std=statistics.stdev(per_seed))
            report(result.epochs, result.epochs, result.train_loss, metrics)
    except (NonFiniteLossError, StrategyError) as err:
        return ended(TrialState.FAIL, fail_reason=str(err))
    except optuna.TrialPruned as err:
        return ended(TrialState.PRUNED, pruned_reason=str(err))
    delta, values = score(metrics)
    write(train_seconds=seconds(), val_metrics=metrics, delta_mtl=delta)
    return TrialOutcome(TrialState.COMPLETE, write.record, list(values.values()), constraints, model)


def trial_strategy(candidate: Any, teachers: Mapping[str, torch.nn.Module] | None) -> TrainingStrategy | None:
    """A fresh copy of the candidate's training strategy, given the teachers when it needs them
    (without them its setup raises :class:`StrategyError`: the trial fails, it never trains
    without its term)."""
    strategy = candidate.new_strategy()
    if strategy is not None and strategy.needs_teachers and teachers is not None:
        types = {t.name: t.type for t in candidate.problem.tasks}
        strategy.set_teachers(teachers, types)
    return strategy


def trial_seeds(seed: int, k: int) -> list[int]:
    """The seeds of a trial trained ``k`` times: its own seed, then ``k - 1`` seeds derived from it
    (far from the next trials' seeds ``seed + 1, seed + 2, ...``)."""
    return [seed] + [(seed * 1_000_003 + j * 7_919_113) % 2**31 for j in range(1, k)]


def mean_metrics(runs: list[dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    """Every metric averaged over the runs (Delta-MTL is linear in the metrics, so the Delta-MTL
    of the mean is the mean of the runs' Delta-MTL)."""
    return {task: {m: statistics.fmean(r[task][m] for r in runs) for m in runs[0][task]} for task in runs[0]}


def trial_identity(attrs: Mapping[str, Any], default_seed: int, warn: Callable[[str], None]) -> tuple[str, int]:
    """The run id and seed of a trial: the stored ones (a retry carries its dead trial's), else a
    fresh run id and ``default_seed``. Stored values are untrusted: one in the wrong form is
    refused with a warning (:func:`~mtlsearch.checkpoints.run_id_from`)."""
    run_id = run_id_from(attrs, warn)
    seed = attrs.get("seed", default_seed)
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
        warn(
            f"stored seed {describe_value(seed)} is not an integer in [0, 2**63); refused: "
            f"the trial uses seed {default_seed}"
        )
        seed = default_seed
    return run_id, seed


# -- costs, constraints and objective values ----------------------------------------------------


def infeasibility(costs: Mapping[str, float], bounds: Mapping[str, float]) -> tuple[dict[str, float], str | None]:
    """Optuna constraint values of ``costs`` against the space's ``max_*`` bounds, and why the
    candidate is infeasible (``None`` when it is not)."""
    values = constraint_values(costs, bounds)
    over = [f"{CONSTRAINTS[n]} {costs[CONSTRAINTS[n]]:g} > {n} {bounds[n]:g}" for n, v in values.items() if v > 0]
    return values, ("infeasible: " + ", ".join(over) if over else None)


def objective_values(
    objectives: list[str], metrics: Mapping[str, Mapping[str, float]], delta: float, costs: Mapping[str, float]
) -> dict[str, float]:
    """The value of each objective: ``delta_mtl``, a cost, or ``TASK.METRIC``."""
    scores = {"delta_mtl": delta, **{k: float(v) for k, v in costs.items()}}
    return {o: float(scores[o] if o in scores else metrics[o.split(".", 1)[0]][o.split(".", 1)[1]]) for o in objectives}


def nan_values(n: int) -> tuple[float, ...]:
    """Objective values of a failed trial: Optuna marks a trial FAIL when its objective returns NaN."""
    return (math.nan,) * n


# -- weights ------------------------------------------------------------------------------------


def upload_weights(trial: optuna.Trial, state_dict: Mapping[str, torch.Tensor], artifacts: str | Path) -> str:
    """Keep a trained model's weights as the trial's Optuna artifact; returns the artifact id."""
    from optuna.artifacts import FileSystemArtifactStore, upload_artifact

    Path(artifacts).mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".pt")
    os.close(fd)
    try:
        torch.save({k: v.detach().cpu() for k, v in state_dict.items()}, tmp)
        return upload_artifact(
            artifact_store=FileSystemArtifactStore(str(artifacts)), file_path=tmp, study_or_trial=trial
        )
    finally:
        os.unlink(tmp)
