"""A search space resolved against the registries: the data, tasks, backbone, families and
weightings it names, and how a trial becomes a :class:`Candidate`.

This is where names from a YAML space meet the classes they stand for, so every error that
needs a registry (an unknown family, a bad ``max_groups``, a task the data does not have) is raised
here, with the space path in front.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import importlib
import inspect
import json
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from .config import ParamSpec, SearchSpace, TrainingSpace
from .data import BENCHMARKS, MTLData
from .data.checks import SplitTargets, check_data, raised
from .errors import ConfigError, did_you_mean
from .families import FAMILIES, Architecture, Family
from .models import BACKBONES, Backbone
from .tasks import PRIMARY, TaskSpec
from .weighting import METHODS, SCHEDULES, STRATEGIES, Aggregator, TaskSchedule, TrainingStrategy, Weighting

Direction = Literal["maximize", "minimize"]
MAXIMIZE: Direction = "maximize"
MINIMIZE: Direction = "minimize"
COST_OBJECTIVES = ("params", "macs", "latency_ms")


@dataclass
class Candidate:
    """One sampled multi-task network with everything needed to train it.

    ``params`` are the trial parameters it was drawn from: replaying them through
    ``optuna.trial.FixedTrial`` on the same space gives the same candidate. ``tasks``: the tasks
    it trains, the primary ones and the auxiliary ones it includes, in the space's order (empty:
    every task of the problem).
    """

    params: dict[str, Any]
    family: Family
    architecture: Architecture
    weighting: Weighting | Aggregator
    training: dict[str, Any]
    problem: Problem = field(repr=False)
    strategy: TrainingStrategy | None = None  # None: the plain step (strategy `none`)
    tasks: list[TaskSpec] = field(default_factory=list)
    schedule: TaskSchedule | None = None  # None: every task every step (schedule `all`)

    def __post_init__(self) -> None:
        if not self.tasks:
            self.tasks = list(self.problem.tasks)

    @property
    def task_names(self) -> list[str]:
        return [t.name for t in self.tasks]

    def build_model(self, seed: int) -> nn.Module:
        """The network, initialised from ``seed`` (same seed, same weights); the caller's random
        state is left as it was."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self.family.build(self.architecture, self.problem.backbone, self.tasks)

    def new_weighting(self) -> Weighting | Aggregator:
        """A fresh copy of the weighting (its learnable state starts anew for each training run)."""
        return copy.deepcopy(self.weighting)

    def new_strategy(self) -> TrainingStrategy | None:
        """A fresh copy of the training strategy (``None`` for the plain step)."""
        return copy.deepcopy(self.strategy)

    def new_schedule(self) -> TaskSchedule | None:
        """A fresh copy of the task schedule (``None`` for every task every step)."""
        return copy.deepcopy(self.schedule)

    @property
    def needs_learning(self) -> bool:
        """True for a learned family whose architecture has not been learned yet."""
        return self.family.learned and self.architecture.learned is None

    def describe(self) -> str:
        return "\n".join(self.family.describe(self.architecture, self.problem.backbone.block_names))

    def key(self) -> str:
        """What makes two candidates the same network trained the same way, as a short hash: the
        architecture in canonical form, the weighting with its hyperparameters, and the training
        settings. A path-shaped architecture built the default way is described by who shares
        each block and whether that block runs, so trees that differ only in group labels (or a
        tree that shares everything and ``hard_sharing``) are equal; other families by their name
        and settings (a learned family: its learning settings, not what it learned)."""
        arch = self.architecture
        structure: Any = [arch.family, arch.settings]
        if arch.paths is not None and not self.family.learned and type(self.family).build is Family.build:
            sharing = arch.sharing(self.problem.backbone.block_names) or []
            structure = [
                sorted([sorted(group), arch.paths[group[0]][b] is None] for group in groups)
                for b, groups in enumerate(sharing)
            ]
        described: list[Any] = [structure, self.weighting.name, self.weighting.hyperparameters(), self.training]
        if self.strategy is not None:
            described.append([self.strategy.name, self.strategy.hyperparameters()])
        if self.schedule is not None:  # absent for `all`, so older keys stay the same
            described.append(["schedule", self.schedule.name, self.schedule.hyperparameters()])
        if self.problem.auxiliary_names:  # only then can two candidates differ in their tasks
            described.append(["tasks", self.task_names])
        text = json.dumps(
            described,
            sort_keys=True,
            default=str,
        )
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def summary(self) -> dict[str, Any]:
        """A readable record of the candidate (JSON-serialisable)."""
        out = self.architecture.to_dict()
        sharing = self.architecture.sharing(self.problem.backbone.block_names)
        if sharing is not None and not self.needs_learning:
            out["sharing"] = sharing
        out["weighting"] = {"name": self.weighting.name, **self.weighting.hyperparameters()}
        if self.strategy is not None:
            out["strategy"] = {"name": self.strategy.name, **self.strategy.hyperparameters()}
        if self.schedule is not None:
            out["schedule"] = {"name": self.schedule.name, **self.schedule.hyperparameters()}
        out["training"] = dict(self.training)
        out["description"] = self.describe().splitlines()
        if self.problem.auxiliary_names:
            out["tasks"] = self.task_names
            left_out = ", ".join(t for t in self.problem.auxiliary_names if t not in self.task_names)
            out["description"].insert(
                0, f"tasks: {', '.join(self.task_names)}" + (f" (auxiliary left out: {left_out})" if left_out else "")
            )
        return out


def method_label(summary: Mapping[str, Any]) -> str:
    """The weighting of a candidate's stored summary, with its training strategy and task schedule
    if any: ``static``, ``pcgrad+great``, ``pcgrad@round_robin``."""
    weighting, strategy = summary.get("weighting"), summary.get("strategy")
    name = str(weighting.get("name", "?")) if isinstance(weighting, Mapping) else "?"
    if isinstance(strategy, Mapping) and strategy.get("name"):  # a stored record may be hand-edited
        name = f"{name}+{strategy['name']}"
    schedule = summary.get("schedule")
    if isinstance(schedule, Mapping) and schedule.get("name"):
        name = f"{name}@{schedule['name']}"
    return name


class Problem:
    """A :class:`~mtlsearch.config.SearchSpace` resolved: data loaded, every name checked.

    Args:
        space: the search space.
        signature: what the model needs of the data (:meth:`signature`: the input shape and the
            resolved tasks), as a study or an export stores it. With it, the data is loaded only
            when something reads :attr:`data` (training, scoring), so rebuilding a model or
            exporting a trial does not load a dataset.
        announce: called with the import path of a data factory outside mtlsearch just before
            it is imported (and with the path and ``"metric"`` or ``"loss"`` for a task's user
            code): a space read from a study or an export passes one, so that the user sees
            which code runs.
        folders: where else a data factory's module may be (the folder of the space's file),
            after the Python path and the current folder (:func:`import_factory`).
    """

    def __init__(
        self,
        space: SearchSpace,
        signature: Mapping[str, Any] | None = None,
        announce: Callable[..., None] | None = None,
        folders: Sequence[str | Path] = (),
    ):
        self.space = space
        self._announce = announce
        self._folders = tuple(str(f) for f in folders)
        self._data: MTLData | None = None
        if signature is None:
            self._data, targets = load_data(space, announce, self._folders)
            self.tasks: list[TaskSpec] = resolve_tasks(space, self._data)
            check_targets(self.tasks, targets)
            self.input_shape = tuple(self._data.train[0][0].shape)
        else:
            self.tasks, self.input_shape = read_signature(signature)
        prefix = "tasks" if space.tasks or signature is not None else "data.tasks"
        self.tasks = import_user_code(self.tasks, prefix, announce, self._folders)
        self.task_names = [t.name for t in self.tasks]
        # Primary tasks are scored (Delta-MTL, objectives, baselines); auxiliary ones only trained
        # alongside them by the candidates that include them (docs/tasks.md#auxiliary-tasks).
        self.primary_tasks: list[TaskSpec] = [t for t in self.tasks if t.role == PRIMARY]
        self.primary_names = [t.name for t in self.primary_tasks]
        self.auxiliary_names = [t.name for t in self.tasks if t.role != PRIMARY]
        if not self.primary_tasks:
            raise ConfigError(
                prefix,
                f"expected at least one primary task (Delta-MTL and the front score primary tasks), found only "
                f"auxiliary ones: {', '.join(self.task_names)}",
            )
        self.backbone: Backbone = build_backbone(space.backbone, self.input_shape)
        sections = space.search_space.sections
        self.families: dict[str, Family] = {}
        for i, name in enumerate(space.search_space.families):
            cls = FAMILIES.get(name, f"search_space.families[{i}]")
            family = instantiate(cls, sections.get(name, {}), f"search_space.{name}")
            try:
                family.check(self.backbone, self.task_names)
            except ConfigError as err:
                raise err.prefixed(f"search_space.{name}") from None
            self.families[name] = family
        self.weighting_spaces: dict[str, dict[str, ParamSpec]] = {}
        for i, name in enumerate(space.search_space.weightings):
            method = METHODS.get(name, f"search_space.weightings[{i}]")
            self.weighting_spaces[name] = method.space(sections.get(name, {}), f"search_space.{name}")
        self.strategy_spaces: dict[str, dict[str, ParamSpec]] = {}
        for i, name in enumerate(space.search_space.strategies):
            strategy = STRATEGIES.get(name, f"search_space.strategies[{i}]")
            self.strategy_spaces[name] = strategy.space(sections.get(name, {}), f"search_space.{name}")
        # `k` of a schedule is checked against the fewest tasks a candidate can train
        fewest = self.task_names if space.search_space.auxiliary == "always" else self.primary_names
        bound = (
            f"the fewest tasks a candidate trains, {len(fewest)} (the primary tasks)"
            if len(fewest) < len(self.task_names)  # auxiliary tasks are searched: a candidate may train none
            else None
        )
        self.schedule_spaces: dict[str, dict[str, ParamSpec]] = {}
        for i, name in enumerate(space.search_space.schedules):
            schedule = SCHEDULES.get(name, f"search_space.schedules[{i}]")
            self.schedule_spaces[name] = schedule.space_for(
                sections.get(name, {}), f"search_space.{name}", fewest, bound
            )
        space.search_space.check_sections("search_space")
        self.training_space: TrainingSpace = space.search_space.training
        self.objectives: list[str] = list(space.objectives)
        self.directions: list[Direction] = [self._direction(i, o) for i, o in enumerate(self.objectives)]
        self.delta_average: str = space.delta_mtl.average
        self.delta_directions = self._delta_directions(space.delta_mtl.metrics)
        self.given_baselines = self._check_baselines(space.baselines.values)
        # distillation learns from the trained baselines: their weights are kept (docs/tasks.md#distillation)
        distils = [n for n in space.search_space.strategies if STRATEGIES.get(n).needs_teachers]
        if distils and space.baselines.kind == "given":
            raise ConfigError(
                "baselines",
                f"given baselines have no single-task networks, and strategy `{distils[0]}` "
                "(search_space.strategies) distils from them; use kind: tuned or default, or remove the strategy",
            )
        if distils and space.baselines.said_no_weights:
            raise ConfigError(
                "baselines.keep_weights",
                f"false, but strategy `{distils[0]}` (search_space.strategies) distils from the kept single-task "
                "networks; remove `keep_weights: false` (it is on whenever such a strategy is listed), or remove the "
                "strategy",
            )
        self.keeps_baseline_weights: bool = space.baselines.keep_weights or bool(distils)
        self.constraints: dict[str, float] = dict(space.constraints)

    @property
    def data(self) -> MTLData:
        """The data splits, loaded on first use when the problem was built from a signature."""
        if self._data is None:
            data, targets = load_data(self.space, self._announce, self._folders)
            check_targets(self.tasks, targets)
            found = tuple(data.train[0][0].shape)
            if found != self.input_shape:
                raise ConfigError(
                    "data", f"the data's inputs have shape {found}; the stored signature says {self.input_shape}"
                )
            self._data = data
        return self._data

    def signature(self) -> dict[str, Any]:
        """What a model of this problem needs of the data: the input shape and the tasks."""
        return {"input_shape": list(self.input_shape), "tasks": [t.to_dict() for t in self.tasks]}

    def create_study(self, **kwargs: Any) -> Any:
        """``optuna.create_study`` with this problem's directions and objective names
        (``study.metric_names``); ``kwargs`` go to ``optuna.create_study``."""
        import warnings

        import optuna

        study = optuna.create_study(directions=self.directions, **kwargs)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(list(self.objectives))
        return study

    # -- sampling -------------------------------------------------------------------------------

    def sample(self, trial: Any) -> Candidate:
        """Draw a candidate through an Optuna-like trial (``Trial`` or ``FixedTrial``)."""
        tasks = self.sample_tasks(trial)
        names = [t.name for t in tasks]
        family_name = trial.suggest_categorical("family", list(self.families))
        family = self.families[family_name]
        arch = family.sample(trial, names, self.backbone)
        if family.shares:
            w_name = trial.suggest_categorical("weighting", list(self.weighting_spaces))
            weighting = METHODS.get(w_name).sample(trial, self.weighting_spaces[w_name], names)
        else:  # no trial parameter: Optuna's samplers handle parameters that only some trials have
            weighting = METHODS.get("equal").sample(trial, {}, names)
        strategy = None
        if family.shares and list(self.strategy_spaces) != ["none"]:
            s_name = trial.suggest_categorical("strategy", list(self.strategy_spaces))
            if STRATEGIES.get(s_name).acts:
                strategy = STRATEGIES.get(s_name).sample(trial, self.strategy_spaces[s_name], names)
        schedule = None
        if family.shares and list(self.schedule_spaces) != ["all"]:
            k_name = trial.suggest_categorical("schedule", list(self.schedule_spaces))
            if SCHEDULES.get(k_name).acts:
                schedule = SCHEDULES.get(k_name).sample(trial, self.schedule_spaces[k_name], names)
        training = self.suggest_training(trial)
        params = dict(getattr(trial, "params", {}))
        return Candidate(params, family, arch, weighting, training, self, strategy, tasks=tasks, schedule=schedule)

    def sample_tasks(self, trial: Any) -> list[TaskSpec]:
        """A candidate's tasks: the primary ones and the auxiliary ones it includes, in the space's
        order. With ``search_space.auxiliary: search`` each auxiliary task's inclusion is the
        trial parameter ``aux.<task>`` (``true`` or ``false``); with ``always`` every one is in.

        A candidate trains at least two tasks (a network of one task is that task's baseline):
        with one primary task, the last auxiliary task is included without a parameter when no
        earlier one was, so every non-empty set of auxiliary tasks can be drawn, each one way.
        """
        searched = self.space.search_space.auxiliary == "search"
        included: set[str] = set()
        for i, name in enumerate(self.auxiliary_names):
            forced = len(self.primary_names) == 1 and not included and i == len(self.auxiliary_names) - 1
            if not searched or forced or trial.suggest_categorical(f"aux.{name}", [True, False]):
                included.add(name)
        return [t for t in self.tasks if t.role == PRIMARY or t.name in included]

    def candidate(self, trial_or_params: Any) -> Candidate:
        """The candidate of a ``FrozenTrial`` (with its learned record), a live ``Trial``
        (sampled through it) or a parameter dict (``{"params": ..., "learned": ...}`` for a
        learned family)."""
        if isinstance(trial_or_params, Mapping):
            if "params" in trial_or_params:
                return self.replay(trial_or_params["params"], trial_or_params.get("learned"))
            return self.replay(trial_or_params)
        from optuna.trial import FrozenTrial

        if isinstance(trial_or_params, FrozenTrial):
            return self.replay(trial_or_params.params, trial_or_params.user_attrs.get("learned"))
        return self.sample(trial_or_params)

    def replay(
        self, params: Mapping[str, Any], learned: Mapping[str, Any] | None = None, partial: bool = False
    ) -> Candidate:
        """The candidate of stored trial parameters (export is replay, not a second code path).

        For a family that learns its architecture inside a trial, ``learned`` is the stored
        outcome of that learning (trial user attr ``learned``); the candidate then has the final,
        learned architecture. With ``partial``, a learned family's candidate may come without it
        (``needs_learning``: a trial learns it next).
        """
        from optuna.trial import FixedTrial

        try:
            candidate = self.sample(FixedTrial(dict(params)))
        except ValueError as err:  # FixedTrial: a parameter this space needs is not in params
            raise ConfigError("params", f"{err}; the parameters do not fit this search space") from None
        candidate.params = dict(params)
        if candidate.family.learned and (learned is not None or not partial):
            if learned is None:
                raise ConfigError(
                    "learned",
                    f"family `{candidate.family.name}` learns its architecture inside a trial; "
                    "the learned record is missing",
                )
            candidate.architecture = candidate.family.with_learned(candidate.architecture, learned)
        return candidate

    def suggest_training(self, trial: Any) -> dict[str, Any]:
        """Training settings drawn through a trial (parameters ``training.<name>``)."""
        return {k: getattr(self.training_space, k).suggest(trial, f"training.{k}") for k in TrainingSpace.FIELDS}

    @property
    def training_is_searched(self) -> bool:
        """Whether any training setting is searched (not fixed)."""
        return any(getattr(self.training_space, k).kind != "fixed" for k in TrainingSpace.FIELDS)

    def baseline_training(self) -> dict[str, Any]:
        """Training settings of the single-task baselines: each training parameter's default."""
        return {k: getattr(self.training_space, k).default() for k in TrainingSpace.FIELDS}

    def single_task_model(self, task: TaskSpec, seed: int) -> nn.Module:
        """The single-task baseline network of ``task``: the backbone and its head, seeded (the
        caller's random state is left as it was)."""
        family = FAMILIES.get("hard_sharing")()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return family.build(family.sample(None, [task.name], self.backbone), self.backbone, [task])

    # -- checks ---------------------------------------------------------------------------------

    @cached_property
    def metric_directions(self) -> dict[str, dict[str, str]]:
        return {t.name: t.metric_directions() for t in self.tasks}

    def _direction(self, i: int, objective: str) -> Direction:
        if objective == "delta_mtl":
            return MAXIMIZE
        if objective in COST_OBJECTIVES:
            return MINIMIZE
        task, metric = objective.split(".", 1)
        where = f"objectives[{i}]"
        if task not in self.task_names:
            raise ConfigError(
                where,
                f"unknown task `{task}`; choose one of: {', '.join(self.task_names)}"
                f"{did_you_mean(task, self.task_names)}",
            )
        if task in self.auxiliary_names:
            raise ConfigError(where, f"objectives count primary tasks only; `{task}` is auxiliary")
        directions = self.metric_directions[task]
        if metric not in directions:
            raise ConfigError(
                where, f"task `{task}` is not scored by `{metric}`; its metrics are: {', '.join(directions)}"
            )
        return MAXIMIZE if directions[metric] == "max" else MINIMIZE

    def _delta_directions(self, chosen: Mapping[str, tuple[str, ...]]) -> dict[str, dict[str, str]]:
        """``{task: {metric: direction}}`` of the metrics that count in Delta-MTL."""
        for task, metrics in chosen.items():
            if task not in self.task_names:
                raise ConfigError(
                    f"delta_mtl.metrics.{task}",
                    f"unknown task; choose from: {', '.join(self.task_names)}"
                    f"{did_you_mean(str(task), self.task_names)}",
                )
            if task in self.auxiliary_names:
                raise ConfigError(
                    f"delta_mtl.metrics.{task}", f"Delta-MTL counts primary tasks only; `{task}` is auxiliary"
                )
            recorded = self.metric_directions[task]
            for i, m in enumerate(metrics):
                if m not in recorded:
                    raise ConfigError(
                        f"delta_mtl.metrics.{task}[{i}]",
                        f"task `{task}` does not record `{m}`; its metrics are: {', '.join(recorded)} "
                        "(add it to the task's metrics)",
                    )
        return {
            t.name: {m: self.metric_directions[t.name][m] for m in t.delta_metrics(chosen.get(t.name, ()))}
            for t in self.primary_tasks
        }

    def _check_baselines(self, baselines: Any) -> dict[str, dict[str, float]] | None:
        """Given baselines, checked: one for every primary task; one given for an auxiliary task is
        checked as well but left out (Delta-MTL does not score it)."""
        if baselines is None:
            return None
        for t in self.tasks:
            if t.name not in baselines:
                if t.role != PRIMARY:
                    continue
                which = "primary task" if self.auxiliary_names else "task"
                raise ConfigError(
                    f"baselines.{t.name}",
                    f"missing: given baselines need every {which} ({', '.join(self.primary_names)})",
                )
            for m in baselines[t.name]:
                if m not in t.metrics:
                    raise ConfigError(
                        f"baselines.{t.name}.{m}",
                        f"task `{t.name}` is not scored by `{m}`; its metrics are: {', '.join(t.metrics)}"
                        f"{did_you_mean(str(m), t.metrics)}",
                    )
            counted = self.delta_directions.get(t.name, {})  # none for an auxiliary task
            for m in counted:
                if m not in baselines[t.name]:
                    raise ConfigError(
                        f"baselines.{t.name}.{m}",
                        f"missing: Delta-MTL counts {', '.join(counted)} for task `{t.name}`",
                    )
                if baselines[t.name][m] == 0:
                    raise ConfigError(
                        f"baselines.{t.name}.{m}", "expected a non-zero number (Delta-MTL divides by it), found 0"
                    )
        for name in baselines:
            if name not in self.task_names:
                raise ConfigError(f"baselines.{name}", f"unknown task; choose from: {', '.join(self.task_names)}")
        return {t: dict(ms) for t, ms in baselines.items() if t in self.primary_names}


# -- resolution helpers -------------------------------------------------------------------------


def instantiate(cls: type, params: Mapping[str, Any], path: str, *args: Any) -> Any:
    """``cls(*args, **params)`` with unknown keys and bad values reported under ``path``."""
    sig = inspect.signature(cls.__init__)  # type: ignore[misc]  # the class's own __init__, by design
    allowed = [n for n, p in sig.parameters.items() if n != "self" and p.kind is p.POSITIONAL_OR_KEYWORD][len(args) :]
    for key in params:
        if key not in allowed:
            listed = ", ".join(allowed) if allowed else "none"
            raise ConfigError(
                f"{path}.{key}",
                f"unknown parameter of `{getattr(cls, 'name', cls.__name__)}`; allowed: {listed}"
                f"{did_you_mean(str(key), allowed)}",
            )
    try:
        return cls(*args, **params)
    except ConfigError as err:
        raise err.prefixed(path) from None


def build_backbone(raw: Mapping[str, Any], input_shape: tuple[int, ...]) -> Backbone:
    cls = BACKBONES.get(raw["name"], "backbone.name")
    params = {k: v for k, v in raw.items() if k != "name"}
    return instantiate(cls, params, "backbone", input_shape)


def builtin_factory(path: str) -> bool:
    """The factory is part of mtlsearch (not user code)."""
    module = path.partition(":")[0]
    return module == "mtlsearch" or module.startswith("mtlsearch.")


FACTORY_FOLDERS: list[str] = []  # folders this process added to sys.path for a factory (workers get them)


def import_factory(path: str, folders: Sequence[str] = (), _searched: bool = False, where: str = "data.factory"):
    """The object that ``module:attr`` names; importing the module runs its code.

    The module is looked for as ``python -m`` would: on the Python path, then in the current
    folder, then in ``folders`` (the space file's folder); a folder where it is found joins
    ``sys.path`` (and :data:`FACTORY_FOLDERS`, which worker processes inherit). Errors are
    located at ``where``: a data factory, or a task's metric or loss (:func:`import_user_code`)."""
    module_name, _, attr = path.partition(":")
    top = module_name.split(".")[0]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        if err.name != top or _searched:  # the module exists but imports something missing
            raise ConfigError(where, f"cannot import module `{module_name}`: {err}") from None
        searched = list(dict.fromkeys([os.getcwd(), *(os.path.abspath(f) for f in folders)]))
        found = [
            f for f in searched if os.path.isfile(os.path.join(f, f"{top}.py")) or os.path.isdir(os.path.join(f, top))
        ]
        if not found:
            raise ConfigError(
                where,
                f"cannot import module `{module_name}`: no `{top}.py` or `{top}/` on the Python path or in "
                f"{', '.join(searched)}; run from the folder that holds it, or add that folder to PYTHONPATH",
            ) from None
        sys.path.insert(0, found[0])
        if found[0] not in FACTORY_FOLDERS:
            FACTORY_FOLDERS.append(found[0])
        importlib.invalidate_caches()
        return import_factory(path, _searched=True, where=where)
    except ImportError as err:
        raise ConfigError(where, f"cannot import module `{module_name}`: {err}") from None
    except (Exception, SystemExit) as err:  # the module's own code failed; KeyboardInterrupt stays a Ctrl-C
        raise raised(where, f"importing module `{module_name}`", err) from err
    if not hasattr(module, attr):
        raise ConfigError(where, f"module `{module_name}` has no attribute `{attr}`")
    return getattr(module, attr)


def import_user_code(
    tasks: list[TaskSpec], prefix: str, announce: Callable[..., None] | None = None, folders: Sequence[str] = ()
) -> list[TaskSpec]:
    """``tasks`` with the metrics and losses they name by import path imported (by the data
    factory's importer, :func:`import_factory`) and checked (:meth:`TaskSpec.with_user_code`);
    errors are located at ``{prefix}[i].metrics[j]`` or ``{prefix}[i].loss``."""

    def load(i: int) -> Callable[[str, str], Any]:
        def load_one(path: str, where: str) -> Any:
            if announce is not None and not builtin_factory(path):
                announce(path, "loss" if where == "loss" else "metric")
            return import_factory(path, folders, where=f"{prefix}[{i}].{where}")

        return load_one

    out = []
    for i, task in enumerate(tasks):
        try:
            out.append(task.with_user_code(load(i)))
        except ConfigError as err:
            if err.path.startswith(f"{prefix}["):
                raise
            raise err.prefixed(f"{prefix}[{i}]") from None
    return out


def load_data(
    space: SearchSpace, announce: Callable[[str], None] | None = None, folders: Sequence[str] = ()
) -> tuple[MTLData, SplitTargets]:
    """Call the data factory with the space's seed and parameters and check what it returns
    (:func:`~mtlsearch.data.checks.check_data`); the data and each split's targets.

    ``announce`` is called with the import path of a factory outside mtlsearch before it is
    imported (see :class:`Problem`).
    """
    d = space.data
    if d.benchmark is not None:
        factory = BENCHMARKS.get(d.benchmark, "data.benchmark")
        label = f"benchmark `{d.benchmark}`"
    else:
        if announce is not None and not builtin_factory(str(d.factory)):
            announce(str(d.factory))
        factory = import_factory(str(d.factory), folders)
        label = f"factory `{d.factory}`"
    try:
        sig = inspect.signature(factory)
    except (TypeError, ValueError):  # not callable, or a builtin without a signature
        sig = None
    if sig is None and not callable(factory):
        raise ConfigError(
            "data.factory",
            f"`{d.factory}` is a {type(factory).__name__}, not a function; expected a function "
            "`factory(seed, **params)` returning mtlsearch.data.MTLData",
        )
    if sig is not None:
        accepts_any = any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values())
        allowed = [n for n in sig.parameters if n != "seed"]
        if not accepts_any:
            for key in d.params:
                if key not in allowed:
                    raise ConfigError(
                        f"data.{key}",
                        f"unknown parameter of {label}; allowed: {', '.join(['seed', *allowed])}"
                        f"{did_you_mean(str(key), allowed)}",
                    )
        try:
            sig.bind(seed=d.seed, **d.params)
        except TypeError as err:
            raise ConfigError("data.factory", f"{label} cannot be called as `factory(seed, **params)`: {err}") from None
    try:
        data = factory(seed=d.seed, **d.params)
    except ConfigError as err:
        raise err.prefixed("data") from None
    except (Exception, SystemExit) as err:  # KeyboardInterrupt stays a Ctrl-C
        if d.benchmark is not None:
            raise  # a bug of mtlsearch: keep its traceback
        raise raised("data.factory", f"`{d.factory}`", err) from err
    if not isinstance(data, MTLData):
        raise ConfigError("data", f"{label} returned {type(data).__name__}; expected mtlsearch.data.MTLData")
    return data, check_data(data, label)


def resolve_tasks(space: SearchSpace, data: MTLData) -> list[TaskSpec]:
    provided = {t.name: t for t in data.tasks}
    if not space.tasks:
        if not provided:
            raise ConfigError("tasks", "the data factory declares no tasks: list them with name and type")
        tasks = list(data.tasks)
    else:
        tasks = []
        for i, entry in enumerate(space.tasks):
            where = f"tasks[{i}]"
            own = provided.get(entry.name)
            if entry.spec is not None:
                if own is not None and (own.type, own.num_classes, own.output_dim) != (
                    entry.spec.type,
                    entry.spec.num_classes,
                    entry.spec.output_dim,
                ):
                    raise ConfigError(
                        where,
                        f"task `{entry.name}` is {own.type} in the data ({own.to_dict()}); "
                        f"the space says {entry.spec.to_dict()}",
                    )
                tasks.append(entry.spec)
                continue
            if own is None:
                if not provided:
                    raise ConfigError(
                        f"{where}.type",
                        "required: the data factory declares no tasks, so each task needs name and type",
                    )
                names = list(provided)
                raise ConfigError(
                    f"{where}.name",
                    f"unknown task `{entry.name}` of the data; choose one of: {', '.join(names)}"
                    f"{did_you_mean(entry.name, names)}",
                )
            if entry.metrics or entry.options:
                changes: dict[str, Any] = {"metrics": entry.metrics} if entry.metrics else {}
                try:
                    own = dataclasses.replace(own, **changes, **entry.options)
                except ConfigError as err:
                    raise err.prefixed(where) from None
            tasks.append(own)
    if len(tasks) < 2:
        raise ConfigError("tasks", f"expected at least 2 tasks for a multi-task search, found {len(tasks)}")
    return tasks


def read_signature(signature: Mapping[str, Any]) -> tuple[list[TaskSpec], tuple[int, ...]]:
    """The tasks and input shape of a stored :meth:`Problem.signature`."""
    try:
        shape = tuple(int(n) for n in signature["input_shape"])
        tasks = [
            TaskSpec(
                t["name"],
                t["type"],
                t.get("num_classes"),
                t.get("output_dim", 1),
                tuple(t.get("metrics", ())),
                loss=t.get("loss"),
                pos_weight=t.get("pos_weight"),
                class_weights=None if t.get("class_weights") is None else tuple(t["class_weights"]),
                role=t.get("role", PRIMARY),
            )
            for t in signature["tasks"]
        ]
    except (KeyError, TypeError, ValueError) as err:
        raise ConfigError(
            "signature", f"expected {{input_shape: [...], tasks: [...]}}, found an unreadable record ({err})"
        ) from None
    return tasks, shape


def check_targets(tasks: list[TaskSpec], split_targets: SplitTargets) -> None:
    """Every task has targets in every split, of the type the task needs."""
    for split, targets in split_targets.items():
        for t in tasks:
            if t.name not in targets:
                raise ConfigError(
                    "data",
                    f"the {split} split has no targets for task `{t.name}`; it has: {', '.join(targets) or 'none'}",
                )
            t.kind.check_targets(t, targets[t.name], f"data.{split}")


def objective_label(objective: str) -> str:
    return {"delta_mtl": "Delta-MTL %", "params": "params", "macs": "MACs", "latency_ms": "latency ms"}.get(
        objective, objective
    )
