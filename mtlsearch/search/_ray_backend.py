"""Ray Tune as the search backend: ``mtlsearch run SPACE --backend ray [--address HOST:PORT]``.

The Optuna study stays the single record: each Tune trial is one Optuna trial of the same study,
asked and told by :class:`StudySearch` (Tune's ``Searcher`` over Optuna's ask/tell), which
records a trial that ASHA (Li et al., 2020, arXiv:1810.05934) stopped early as PRUNED. Every
epoch is a Tune checkpoint; ``mtlsearch resume --backend ray`` restores a killed driver's
experiment. The study, not Tune, keeps the budget. See docs/search.md#the-ray-path.
"""

from __future__ import annotations

import json
import logging
import math
import os
import pickle
import shutil
import tempfile
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import optuna
import torch
from optuna.trial import TrialState

from ..checkpoints import CheckpointStore
from ..config import SearchSpace
from ..errors import ConfigError, MTLSearchError
from ..problem import Problem
from ..training import resolve_device
from ..weighting import STRATEGIES
from ._baselines import ensure_baselines, networks_from_states, single_task_networks
from ._budget import TrialEnd, finished_trials, requeue
from ._compat import live_trial
from ._progress import QUIET, Progress
from ._records import TrialRecord, study_record, write_study, write_trial
from ._sampler import make_sampler
from ._storage import open_storage
from ._study import artifacts_dir, check_writable, start_run
from ._trial import EpochReport, TrialHooks, run_trial, trial_identity, upload_weights

# Ray is optional: this module is imported only for ``--backend ray`` (lazily, by the CLI), and
# without Ray :func:`run_ray` raises the install hint. The searcher must subclass Tune's Searcher at
# module level so that Tune can pickle it into the experiment state and restore it.
try:
    import ray
    from ray import tune
    from ray.tune.search import Searcher
except ImportError:  # pragma: no cover - exercised only without Ray
    ray = tune = None  # type: ignore[assignment]
    Searcher = object  # type: ignore[assignment,misc]

RAY_HINT = "the Ray backend needs Ray Tune: pip install 'mtlsearch[ray]' (or 'ray[tune]')"
PROXY = "delta_mtl_proxy"  # what ASHA compares: validation Delta-MTL after each epoch (max)
OBJECTIVE = "objective:"  # Tune result key prefix of objective values (final epoch only)
RECORD = "mtlsearch_record"  # Tune result key: the trial's user attributes, as JSON text
TRIAL_PATH = "mtlsearch_trial_path"  # Tune result key: where the trial's checkpoints are persisted
CONFIG = "mtlsearch"  # Tune config key: what the searcher drew for the trial
SIDE_FILE = "trial.json"  # beside the epoch file in a Tune checkpoint: the trial record so far

log = logging.getLogger(__name__)


def require_ray() -> None:
    if ray is None:
        raise MTLSearchError(RAY_HINT)


# -- the search space, in Tune's driver and workers ---------------------------------------------

_PROBLEMS: dict[str, Problem] = {}


def problem_of(raw: Mapping[str, Any]) -> Problem:
    """The :class:`Problem` of a raw space, built once per process (data loaded once)."""
    key = json.dumps(raw, sort_keys=True, default=str)
    if key not in _PROBLEMS:
        _PROBLEMS[key] = Problem(SearchSpace.parse(dict(raw)))
    return _PROBLEMS[key]


def max_epochs(space: SearchSpace) -> int:
    """The most epochs a candidate of ``space`` can train (ASHA's ``max_t``)."""
    spec = space.search_space.training.epochs
    if spec.kind in ("fixed", "choice"):
        return int(max(spec.choices))
    return int(spec.high)


# -- the trainable (runs in Ray workers) --------------------------------------------------------


def train_trial(
    config: Mapping[str, Any],
    space: Mapping[str, Any],
    baselines: Mapping[str, Any],
    cpus_per_trial: float = 1.0,
    seeds_per_trial: int = 1,
    teachers: Mapping[str, Any] | None = None,
) -> None:
    """One Tune trial: train the drawn candidate epoch by epoch, reporting after each epoch the
    validation Delta-MTL (``delta_mtl_proxy``, for ASHA), the objective values, the trial's user
    attributes and a checkpoint (the epoch's :class:`CheckpointStore` file and a side file).
    Continues from ``tune.get_checkpoint()`` when Tune restarts it; runs on ``cuda`` when Ray
    assigned it a GPU, else on the CPU. ``teachers`` (``{"seed": int, "states": {task:
    state_dict}}``, sent by the driver through Ray's object store) are the study's single-task
    networks, rebuilt once per process for a distilling strategy."""
    torch.set_num_threads(max(1, int(cpus_per_trial)))
    drawn = config[CONFIG]
    params, seed = dict(drawn["params"]), int(drawn["seed"])
    problem = problem_of(space)
    device = torch.device("cuda") if ray.get_gpu_ids() and torch.cuda.is_available() else torch.device("cpu")
    trial_path = getattr(tune.get_context().get_storage(), "trial_fs_path", None)
    work = Path(tempfile.mkdtemp(prefix="mtlsearch-ray-"))
    try:
        checkpoint = tune.get_checkpoint()
        side: dict[str, Any] = {}
        if checkpoint is not None:
            with checkpoint.as_directory() as d:
                shutil.copytree(d, work, dirs_exist_ok=True)
            if (work / SIDE_FILE).exists():
                side = json.loads((work / SIDE_FILE).read_text())
        store = CheckpointStore(work / "state", keep=1, warn=lambda message: log.warning(message))
        hooks = _RayHooks(problem, {"seed": seed, "run_id": drawn["run_id"]}, work, trial_path)
        outcome = run_trial(
            problem,
            params,
            seed=seed,
            device=device,
            baselines=baselines,
            hooks=hooks,
            checkpoints=store,
            previous=TrialRecord.from_attrs(side),
            seeds_per_trial=seeds_per_trial,
            teachers=teachers_of(problem, teachers, device) if teachers else None,
        )
        if outcome.state != TrialState.COMPLETE:  # failed or infeasible: the one report of a trial that did not finish
            hooks.report_end(len(outcome.record.epoch_delta_mtl or []))
    finally:
        shutil.rmtree(work, ignore_errors=True)


_TEACHERS: dict[tuple[int, str], dict[str, torch.nn.Module]] = {}


def teachers_of(problem: Problem, sent: Mapping[str, Any], device: torch.device) -> dict[str, torch.nn.Module]:
    """The single-task networks the driver sent, built once per process and device."""
    key = (id(problem), str(device))
    if key not in _TEACHERS:
        _TEACHERS[key] = networks_from_states(problem, sent["states"], int(sent["seed"]), device)
    return _TEACHERS[key]


class _RayHooks(TrialHooks):
    """Record fields are collected and sent with every Tune report, which holds the epoch's
    checkpoint and a side file with the record (what a restarted trial continues from); the
    searcher in the driver stores them on the Optuna trial."""

    evaluate_each_epoch = True  # ASHA compares the validation Delta-MTL after every epoch

    def __init__(self, problem: Problem, record: dict[str, Any], work: Path, trial_path: str | None):
        self.problem, self.record, self.work, self.trial_path = problem, dict(record), work, trial_path
        self.constraints: dict[str, float] = {}

    def write(self, **fields: Any) -> None:
        self.record.update(TrialRecord(**fields).to_attrs())

    def constrain(self, values: Mapping[str, float]) -> None:
        self.constraints = dict(values)

    def _payload(self) -> dict[str, Any]:
        return {
            RECORD: json.dumps({**self.record, "constraints": self.constraints}, default=str),
            TRIAL_PATH: self.trial_path or "",
        }

    def epoch(self, report: EpochReport) -> None:
        # Tune wants every metric of the searcher in every report; the searcher tells the study
        # these values only for a trial that trained all its epochs
        (self.work / SIDE_FILE).write_text(json.dumps(self.record, default=str))
        values = {OBJECTIVE + k: v for k, v in (report.values or {}).items()}
        tune.report(
            {"epoch": report.epoch, "epochs": report.epochs, PROXY: report.proxy, **values, **self._payload()},
            checkpoint=tune.Checkpoint.from_directory(str(self.work)),
        )

    def report_end(self, epoch: int) -> None:
        tune.report(
            {
                "epoch": epoch,
                "epochs": epoch,
                PROXY: math.nan,
                **{OBJECTIVE + o: math.nan for o in self.problem.objectives},
                **self._payload(),
            }
        )


def trial_dirname(trial: Any) -> str:
    """Tune trial folders named after the Optuna trial number."""
    return f"trial_{trial.config[CONFIG]['number']:05d}_{trial.trial_id}"


# -- the searcher (runs in the driver) ----------------------------------------------------------

# Per study: the driver's progress callback and current budget. Kept out of the searcher's
# pickled state, so that a restored searcher reports to the driver that restored it.
_DRIVER: dict[str, dict[str, Any]] = {}


class StudySearch(Searcher):
    """A Tune searcher that asks an mtlsearch study for each trial and tells it the outcome.

    Each suggestion is ``study.ask()`` (a queued retry first), sampled through
    :meth:`Problem.sample` as in the Optuna backend. On completion the record of the trial's last
    report is stored and the trial is told FAIL, PRUNED (infeasible, or stopped before its last
    epoch) or COMPLETE with its last epoch's objective values; see docs/search.md#the-ray-path.
    The searcher is pickled into Tune's experiment state, so a restored experiment tells the same
    Optuna trials.

    .. note:: Ray's own ``OptunaSearch`` would tell a trial that the scheduler stopped early
       COMPLETE with the partial values of its last report.
    """

    def __init__(
        self,
        raw_space: Mapping[str, Any],
        study: optuna.Study,
        sampler: optuna.samplers.BaseSampler,
        seed: int,
        n_trials: int,
        artifacts: str | None,
        experiment: str,
    ):
        objectives = list(study_record(study).objectives or [])
        modes = ["max" if d == optuna.study.StudyDirection.MAXIMIZE else "min" for d in study.directions]
        # Tune's multi-objective searchers take lists here (its annotation says str)
        super().__init__(metric=[OBJECTIVE + o for o in objectives], mode=modes)  # type: ignore[arg-type]
        study.sampler = sampler
        self._study = study
        self._raw = dict(raw_space)
        self._base_seed = seed
        self._n_trials = n_trials
        self._artifacts = artifacts  # where weights go (None: not kept)
        self._experiment = experiment
        self._live: dict[str, optuna.Trial] = {}  # Tune trial id -> the Optuna trial it runs
        self._told: set[str] = set()

    def _driver(self) -> dict[str, Any]:
        return _DRIVER.get(self._study.study_name, {})

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as f:
            pickle.dump(self.__dict__, f)

    def restore(self, checkpoint_path: str) -> None:
        """Tune's restore of the saved searcher; then fail and queue again the study's RUNNING
        trials that this searcher never handed to Tune (asked after the last experiment save)."""
        with open(checkpoint_path, "rb") as f:
            self.__dict__.update(pickle.load(f))
        known = {t.number for t in self._live.values()}
        running = self._study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        stale = requeue_stale(self._study, [t.number for t in running if t.number not in known])
        on_recovered = self._driver().get("on_recovered")
        if stale and on_recovered is not None:
            on_recovered(stale)

    # -- budget and suggestions

    def suggest(self, trial_id: str) -> dict | None:
        if trial_id not in self._live:  # the study-wide budget, as the Optuna backend keeps it
            ours = {t.number for t in self._live.values()}
            live = [t for t in self._study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)) if t.number in ours]
            if len(finished_trials(self._study)) + len(live) >= self._driver().get("n_trials", self._n_trials):
                return Searcher.FINISHED  # type: ignore[return-value]  # Tune's sentinel for "no more trials"
            trial = self._study.ask()
            problem_of(self._raw).sample(trial)
            self._live[trial_id] = trial
        trial = self._live[trial_id]
        run_id, seed = trial_identity(
            trial.user_attrs, self._base_seed + trial.number, lambda m: log.warning("trial #%d: %s", trial.number, m)
        )
        write_trial(trial, seed=seed, run_id=run_id, ray_trial_id=trial_id)
        return {CONFIG: {"params": dict(trial.params), "number": trial.number, "seed": seed, "run_id": run_id}}

    # -- outcomes

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if trial_id in self._told:
            return
        trial = self._live.get(trial_id)
        if trial is None:
            log.warning("Tune trial %s is not a trial of study `%s`; ignored", trial_id, self._study.study_name)
            return
        self._told.add(trial_id)
        if self._study.get_trials(deepcopy=False)[trial.number].state.is_finished():
            return  # told before the driver was killed, run again by the restored experiment
        result = result or {}
        record = json.loads(result.get(RECORD) or "{}")
        constraints = record.pop("constraints", None) or {}
        state, values = self._outcome(trial_id, result, record, error)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                write_trial(trial, **TrialRecord.from_attrs(record).to_attrs())
                for name, value in constraints.items():
                    trial.set_constraint(name, value)
                if state == TrialState.COMPLETE and self._artifacts:
                    self._save_weights(trial, result)
                self._study.tell(trial, values, state=state)
            except Exception as err:  # e.g. already told before a driver restart
                log.warning("could not record Tune trial %s as Optuna trial #%d: %s", trial_id, trial.number, err)
                return
        on_end = self._driver().get("on_trial_end")
        if on_end is not None:
            on_end(self._study.get_trials(deepcopy=False)[trial.number])

    def _outcome(
        self, trial_id: str, result: Mapping[str, Any], record: dict, error: bool
    ) -> tuple[TrialState, list[float] | None]:
        if error:
            record["fail_reason"] = (
                f"Ray Tune trial {trial_id} failed and its retries too; see error.txt in its folder under "
                f"{self._experiment}"
            )
            return TrialState.FAIL, None
        if "fail_reason" in record:
            return TrialState.FAIL, None
        if "pruned_reason" in record:
            return TrialState.PRUNED, None
        epoch, epochs = result.get("epoch"), result.get("epochs")
        if not result or epoch is None or epochs is None:
            record["pruned_reason"] = "stopped by Ray Tune before its first epoch ended"
            return TrialState.PRUNED, None
        if epoch < epochs:
            proxy = result.get(PROXY)
            shown = (
                f" (validation Delta-MTL {proxy:+.2f}%)" if isinstance(proxy, float) and math.isfinite(proxy) else ""
            )
            deadline = self._driver().get("deadline")
            by = "the study's time limit" if deadline is not None and time.time() >= deadline else "ASHA"
            record["pruned_reason"] = f"stopped by {by} after epoch {epoch}/{epochs}{shown}"
            record["stopped_at_epoch"] = epoch
            return TrialState.PRUNED, None
        values = [result.get(m) for m in self.metric]
        finite = [float(v) for v in values if v is not None and math.isfinite(v)]
        if len(finite) != len(values):
            record["fail_reason"] = f"its last report has no finite objective values ({dict(zip(self.metric, values))})"
            return TrialState.FAIL, None
        return TrialState.COMPLETE, finite

    def _save_weights(self, trial: optuna.Trial, result: Mapping[str, Any]) -> None:
        """Upload the final epoch's model weights (from the trial's last Tune checkpoint) as the
        trial's Optuna artifact; skipped when the checkpoint is not on this machine's file system."""
        folder = Path(result.get(TRIAL_PATH) or "/nonexistent") / str(result.get("checkpoint_dir_name") or "")
        state = CheckpointStore(folder / "state", warn=lambda m: log.warning(m)).load() if folder.is_dir() else None
        if state is not None and self._artifacts:
            write_trial(trial, weights_artifact=upload_weights(trial, state["model"], self._artifacts))


def requeue_stale(study: optuna.Study, numbers: list[int]) -> list[int]:
    """Fail trials a stopped Ray driver left RUNNING and queue each again with its parameters and
    user attributes (``retry_of``: the failed one then does not count toward the budget)."""
    for number in numbers:
        frozen = study.get_trials(deepcopy=False)[number]
        write_trial(
            live_trial(study, frozen),
            fail_reason="its Ray driver stopped while it ran; queued again with its parameters",
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            study.tell(number, state=TrialState.FAIL)
        requeue(study, frozen, drop=("fail_reason", "ray_trial_id"))
    return numbers


# -- the driver ---------------------------------------------------------------------------------


def check_request(cpus_per_trial: float, gpus_per_trial: float, max_concurrent: int | None) -> None:
    if not cpus_per_trial > 0:
        raise ConfigError("--cpus-per-trial", f"expected a number > 0, found {cpus_per_trial:g}")
    if not gpus_per_trial >= 0:
        raise ConfigError("--gpus-per-trial", f"expected a number >= 0, found {gpus_per_trial:g}")
    if max_concurrent is not None and max_concurrent < 1:
        raise ConfigError("--max-concurrent", f"expected an integer >= 1, found {max_concurrent}")


def check_resources(
    total: Mapping[str, float], largest: Mapping[str, float], cpus_per_trial: float, gpus_per_trial: float
) -> None:
    """Refuse a per-trial request that no node of the cluster can meet: Tune would leave such
    trials pending forever. ``total``: ``ray.cluster_resources()``; ``largest``: the most of each
    resource on one alive node (a trial runs on one node)."""
    shown = ", ".join(f"{k} {float(total[k])}" for k in ("CPU", "GPU") if k in total) or "none"
    gpus, cpus = float(largest.get("GPU", 0.0)), float(largest.get("CPU", 0.0))
    if gpus_per_trial > 0 and gpus < gpus_per_trial:
        if not total.get("GPU"):
            raise ConfigError(
                "--gpus-per-trial",
                f"{gpus_per_trial:g} GPU per trial asked, but the Ray cluster has no GPU "
                f"(resources: {shown}); use --gpus-per-trial 0 or a cluster with GPUs",
            )
        raise ConfigError(
            "--gpus-per-trial",
            f"{gpus_per_trial:g} GPU per trial asked, but no node of the Ray cluster has that many "
            f"(at most {gpus:g} on one node; resources: {shown}); use --gpus-per-trial {gpus:g} or less",
        )
    if cpus_per_trial > cpus:
        raise ConfigError(
            "--cpus-per-trial",
            f"{cpus_per_trial:g} CPU per trial asked, but no node of the Ray cluster has that many "
            f"(at most {cpus:g} on one node; resources: {shown}); use --cpus-per-trial {cpus:g} or less",
        )


def largest_node(nodes: list[Mapping[str, Any]]) -> dict[str, float]:
    out: dict[str, float] = {}
    for node in nodes:
        if node.get("Alive", True):
            for k, v in node.get("Resources", {}).items():
                out[k] = max(out.get(k, 0.0), float(v))
    return out


def run_ray(
    problem: Problem | SearchSpace,
    run,
    progress: Progress = QUIET,
    address: str | None = None,
    cpus_per_trial: float = 1.0,
    gpus_per_trial: float = 0.0,
    max_concurrent: int | None = None,
    resume: bool = False,
) -> optuna.Study:
    """Run (or continue) the study of ``problem`` with Ray Tune until it holds ``run.n_trials``
    finished trials (see docs/search.md#the-ray-path). ``address``: a Ray cluster (``auto``,
    ``HOST:PORT``), else a local Ray instance. ``resume``: restore the study's interrupted Tune
    experiment when there is one (``mtlsearch resume --backend ray``)."""
    require_ray()
    check_request(cpus_per_trial, gpus_per_trial, max_concurrent)
    problem = problem if isinstance(problem, Problem) else Problem(problem)
    started = not ray.is_initialized()
    if started:
        try:
            if address:
                ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
            else:  # "local": a new instance, even where `ray start` left an address file behind
                ray.init(address="local", logging_level=logging.WARNING, log_to_driver=False, include_dashboard=False)
        except (ConnectionError, RuntimeError, ValueError) as err:
            raise ConfigError(
                "--address", f"cannot connect to the Ray cluster at `{address or 'local'}`: {err}"
            ) from None
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    tune_logger = logging.getLogger("ray.tune")
    tune_level = tune_logger.level
    tune_logger.setLevel(logging.ERROR)  # its warnings are about Tune's bookkeeping; trial errors stay
    try:
        check_resources(ray.cluster_resources(), largest_node(ray.nodes()), cpus_per_trial, gpus_per_trial)
        return _drive(
            problem.space,
            run,
            progress,
            problem,
            address,
            cpus_per_trial,
            gpus_per_trial,
            max_concurrent,
            resume,
        )
    finally:
        optuna.logging.set_verbosity(verbosity)
        tune_logger.setLevel(tune_level)
        if started:
            ray.shutdown()


def _drive(
    space, run, progress, problem, address, cpus_per_trial, gpus_per_trial, max_concurrent, resume
) -> optuna.Study:
    root = check_writable(artifacts_dir(run))  # before anything is created or trained
    storage = open_storage(run.storage)
    resources = {"cpu": cpus_per_trial, "gpu": gpus_per_trial}
    cluster = ", ".join(f"{k} {v:g}" for k, v in ray.cluster_resources().items() if k in ("CPU", "GPU"))
    where = f"Ray cluster {address or 'local'} ({cluster}), {cpus_per_trial:g} CPU + {gpus_per_trial:g} GPU per trial"
    study, settings = start_run(
        space, run, problem, storage, progress, where, backend="ray", address=address, resources=resources
    )
    deadline = settings["deadline"]
    write_study(study, ray={"address": address, **resources, "max_concurrent": max_concurrent})
    experiment = root / "ray" / study.study_name
    baselines = ensure_baselines(study, problem, run.seed, resolve_device(run.device), progress, run.sampler)
    raw = space.to_raw()
    teachers = None
    if any(STRATEGIES.get(n).needs_teachers for n in space.search_space.strategies):
        found = single_task_networks(study, problem, torch.device("cpu"))  # checked here, once
        seed = (study_record(study).baselines or {}).get("weights_seed")
        teachers = {"seed": seed, "states": {t: m.state_dict() for t, m in (found or {}).items()}} if found else None
    _PROBLEMS.setdefault(json.dumps(raw, sort_keys=True, default=str), problem)  # the driver samples with it
    trainable = tune.with_resources(
        tune.with_parameters(
            train_trial,
            space=raw,
            baselines=baselines,
            cpus_per_trial=cpus_per_trial,
            seeds_per_trial=run.seeds_per_trial,
            teachers=teachers,
        ),
        resources,
    )
    trial_end = TrialEnd(study, run.n_trials, progress)

    def on_trial_end(trial: optuna.trial.FrozenTrial) -> None:
        trial_end(trial, len(finished_trials(study)))

    # Tune's own terminal output (tables, per-trial boxes) would mix with ours, and with --json
    # break the JSON lines on stdout: its older reporter is silent at verbose=0
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")

    def recovered(numbers: list[int]) -> None:
        progress.event(
            "recovered",
            f"trial(s) {', '.join(f'#{n}' for n in numbers)} of a stopped Ray driver failed; queued again "
            "with their parameters",
            failed=numbers,
        )

    _DRIVER[study.study_name] = {
        "on_trial_end": on_trial_end,
        "on_recovered": recovered,
        "n_trials": run.n_trials,
        "deadline": deadline,
    }
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
            unfinished = bool(running) or len(finished_trials(study)) < run.n_trials  # else nothing to restore
            if resume and unfinished and tune.Tuner.can_restore(str(experiment)):
                progress.event(
                    "resume",
                    f"restoring the interrupted Ray Tune experiment {experiment}: its running trials continue "
                    "from their last epoch checkpoint",
                    experiment=str(experiment),
                    restored=True,
                )
                tune.Tuner.restore(str(experiment), trainable=trainable, resume_errored=True).fit()
                _check_finished(study, progress)
            elif resume and unfinished:
                progress.event(
                    "resume",
                    f"no Ray Tune experiment to restore at {experiment}; continuing the Optuna study with a new one",
                    experiment=str(experiment),
                    restored=False,
                )
            # without a restored experiment, a RUNNING trial is a stopped driver's (a retry of it
            # does not count, so the budget below makes room for it)
            stale = [t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))]
            if stale:
                recovered(requeue_stale(study, stale))
            missing = run.n_trials - len(finished_trials(study))
            if missing > 0:
                remaining = None if deadline is None else max(deadline - time.time(), 1.0)
                _new_tuner(
                    study, storage, run, raw, trainable, space, experiment, missing, max_concurrent, remaining, root
                ).fit()
            _check_finished(study, progress)
    finally:
        _DRIVER.pop(study.study_name, None)
    done = len(finished_trials(study))
    progress.event("done", f"the study has {done} finished trials (target {run.n_trials})", finished=done)
    if run.confirm:  # the confirmation trials run here, in the driver, through the Optuna objective
        from ._optuna_backend import confirm_stage, make_objective

        confirm_stage(
            study,
            make_objective(problem, settings, resolve_device(run.device), str(root), progress),
            settings,
            progress,
        )
    return study


def _check_finished(study: optuna.Study, progress: Progress) -> None:
    """A Tune run that returns with trials of the study still RUNNING was interrupted (Tune
    catches Ctrl-C, saves its state and returns): stop here, as the Optuna backend does."""
    left = [t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))]
    if left:
        progress.event(
            "interrupted",
            f"the Ray Tune experiment was interrupted with trial(s) {', '.join(f'#{n}' for n in left)} "
            "running; `mtlsearch resume --backend ray` continues it",
            running=left,
        )
        raise KeyboardInterrupt


def _new_tuner(
    study,
    storage,
    run,
    raw,
    trainable,
    space,
    experiment: Path,
    num_samples: int,
    max_concurrent,
    time_budget,
    root: Path,
):
    from ray.tune.schedulers import ASHAScheduler

    sampler = make_sampler(study_record(study).sampler or run.sampler, run.seed)
    searcher = StudySearch(
        raw, study, sampler, run.seed, run.n_trials, str(root) if run.save_weights else None, str(experiment)
    )
    # TuneConfig's metric/mode stay unset: they take one metric, and the study has several
    # objectives; ASHA gets its own (the scalar per-epoch proxy).
    scheduler = ASHAScheduler(
        time_attr="epoch", metric=PROXY, mode="max", max_t=max_epochs(space), grace_period=1, reduction_factor=2
    )
    return tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            search_alg=searcher,
            scheduler=scheduler,
            num_samples=num_samples,
            max_concurrent_trials=max_concurrent,
            reuse_actors=True,
            time_budget_s=time_budget,
            trial_dirname_creator=trial_dirname,
        ),
        run_config=tune.RunConfig(
            name=experiment.name,
            storage_path=str(experiment.parent),
            verbose=0,
            failure_config=tune.FailureConfig(max_failures=2),
        ),
    )
