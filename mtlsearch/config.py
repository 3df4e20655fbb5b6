"""Typed, validated configuration: what to search (:class:`SearchSpace`) apart from how to run it
(:class:`RunConfig`).

A YAML file maps onto these dataclasses 1:1 (``yaml.safe_load`` only)::

    name: multidigits
    data: {benchmark: multidigits, seed: 0}            # or {factory: "pkg.module:make_data"}
    tasks: [left, right, sum]                           # optional: a subset, or full task specs
    backbone: {name: cnn, channels: 32, depth: 3}
    search_space:
      families: [single_task, hard_sharing, tree]
      tree: {max_groups: 2}
      weightings: [equal, static]
      static: {weight: {low: 0.25, high: 4.0, log: true}}
      training: {epochs: 3, batch_size: [64, 128], optimizer: adam, lr: {low: 1.0e-4, high: 1.0e-2, log: true}}
    objectives: [delta_mtl, params]
    baselines: auto
    run: {study: multidigits, storage: "sqlite:///mtlsearch.db", sampler: tpe, seed: 0, n_trials: 20}

Every bad value raises one :class:`~mtlsearch.errors.ConfigError` naming its path, the value found
and what is allowed. This module checks structure and ranges; names that live in registries of
higher layers (families, weightings, backbones, benchmarks) are checked by
:mod:`mtlsearch.problem`, which :func:`mtlsearch.load` runs right after parsing.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import yaml

from .errors import ConfigError, did_you_mean, show
from .limits import LIMITS, check_bound, how_to_raise, limit
from .storage_url import redact
from .tasks import ROLES, TASK_TYPES, TaskSpec, is_import_path

# ---------------------------------------------------------------------------------------------
# Small checkers: each returns the clean value or raises ConfigError(path, ...).


def check_keys(raw: Mapping, allowed: list[str], path: str, required: tuple[str, ...] = ()) -> None:
    """Unknown keys are errors with a "did you mean" hint; missing required keys too."""
    for key in raw:
        if key not in allowed:
            where = f"{path}.{key}" if path else str(key)
            raise ConfigError(
                where, f"unknown key; allowed keys are: {', '.join(allowed) or 'none'}{did_you_mean(str(key), allowed)}"
            )
    for key in required:
        if key not in raw:
            where = f"{path}.{key}" if path else key
            raise ConfigError(where, "required key is missing")


def as_mapping(raw: Any, path: str) -> dict:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise ConfigError(path, f"expected a mapping (key: value), found {show(raw)}")
    return dict(raw)


def _number(raw: Any) -> Any:
    # PyYAML reads `1e-4` (no dot) as a string; accept it as the number it plainly is.
    if isinstance(raw, str):
        try:
            return float(raw)
        except ValueError:
            return raw
    return raw


def as_int(raw: Any, path: str, minimum: int | None = None, bound: str | None = None) -> int:
    """An integer >= ``minimum``, and at most ``limit(bound)`` when ``bound`` names one of ``LIMITS``."""
    if isinstance(raw, bool) or not isinstance(raw, int):
        at_least = f" >= {minimum}" if minimum is not None else ""
        raise ConfigError(path, f"expected an integer{at_least}, found {show(raw)}")
    if minimum is not None and raw < minimum:
        raise ConfigError(path, f"expected an integer >= {minimum}, found {show(raw)}")
    if bound is not None:
        check_bound(raw, bound, path, minimum)
    return raw


def as_float(raw: Any, path: str, minimum: float | None = None, strict: bool = False) -> float:
    value = _number(raw)
    op = ">" if strict else ">="
    bound = f" {op} {minimum:g}" if minimum is not None else ""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > sys.float_info.max:
        try:
            size = f"{len(str(abs(value))):,} digits"
        except ValueError:  # more digits than Python converts to text
            size = f"{value.bit_length():,} bits"
        raise ConfigError(path, f"expected a finite number{bound}, found an integer of {size}, too large for a float")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(path, f"expected a number{bound}, found {show(raw)}")
    if minimum is not None and (value <= minimum if strict else value < minimum):
        raise ConfigError(path, f"expected a number{bound}, found {value:g}")
    return float(value)


def as_str(raw: Any, path: str) -> str:
    if not isinstance(raw, str) or not raw:
        raise ConfigError(path, f"expected a non-empty string, found {show(raw)}")
    return raw


def as_bool(raw: Any, path: str) -> bool:
    if not isinstance(raw, bool):
        raise ConfigError(path, f"expected true or false, found {show(raw)}")
    return raw


def check_printable(text: str, path: str) -> str:
    """``text`` without control characters (newlines, ANSI escapes...), which could forge a
    progress or log line."""
    if not text.isprintable():
        bad = next(c for c in text if not c.isprintable())
        raise ConfigError(path, f"expected no control characters, found {repr(bad)[1:-1]} in {show(text)}")
    return text


def check_name(raw: Any, path: str) -> str:
    """A name (study, task, metric, family, weighting...): a non-empty string of at most
    ``limit("name_chars")`` printable characters."""
    name = as_str(raw, path)
    if len(name) > limit("name_chars"):
        raise ConfigError(
            path,
            f"expected a name of at most {limit('name_chars')} characters, found {show(name)} "
            f"{how_to_raise('name_chars')}",
        )
    return check_printable(name, path)


def check_length(raw: list | Mapping, path: str) -> None:
    """At most ``limit("list_items")`` entries (a space given as a dict skips the YAML checks)."""
    if len(raw) > limit("list_items"):
        raise ConfigError(
            path, f"expected at most {limit('list_items')} entries, found {len(raw):,} {how_to_raise('list_items')}"
        )


def as_name_list(raw: Any, path: str) -> list[str]:
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, list) or not raw:
        raise ConfigError(path, f"expected a non-empty list of choices, found {show(raw)}")
    check_length(raw, path)
    out: dict[str, None] = {}  # a dict: ordered, and a repeat is found in O(1)
    for i, item in enumerate(raw):
        name = check_name(item, f"{path}[{i}]")
        if name in out:
            raise ConfigError(f"{path}[{i}]", f"{show(name)} is listed twice")
        out[name] = None
    return list(out)


# ---------------------------------------------------------------------------------------------
# Searchable values.


MAX_RANGE_INT = 2**53  # the ends of an integer range: floats (Optuna's) still hold every integer up to it


@dataclass(frozen=True)
class ParamSpec:
    """A value that is fixed, chosen from a list, or drawn from a range.

    YAML forms: a scalar (``lr: 0.001``) is fixed; a list (``batch_size: [64, 128]``) is a
    categorical choice; a mapping ``{low, high, log?, step?}`` is a numeric range: of integers
    when the field takes integers (``parse(..., integer=True)``, e.g. ``epochs``, ``batch_size``, a
    method hyperparameter whose default is an integer), else of floats.
    ``default`` is the value used where one setting is needed without a trial (single-task
    baselines): the fixed value, the first choice, or the range's (geometric, if ``log``) midpoint.
    """

    kind: str  # "fixed" | "choice" | "int" | "float"
    choices: tuple = ()
    low: float = 0.0
    high: float = 0.0
    log: bool = False
    step: float | None = None

    @classmethod
    def parse(cls, raw: Any, path: str, check: Callable[[Any, str], Any], integer: bool = False) -> ParamSpec:
        """``check(value, path)`` validates (and may convert) one possible value."""
        if isinstance(raw, Mapping):
            check_keys(raw, ["low", "high", "log", "step"], path, required=("low", "high"))
            low = check(raw["low"], f"{path}.low")
            high = check(raw["high"], f"{path}.high")
            if not isinstance(low, (int, float)) or isinstance(low, bool):
                raise ConfigError(path, f"a range needs numeric low and high, found {show(raw)}")
            if integer:  # Optuna turns the ends into floats; a midpoint of huge ints overflows
                for end, value in (("low", low), ("high", high)):
                    if abs(value) > MAX_RANGE_INT:
                        raise ConfigError(
                            f"{path}.{end}",
                            f"expected an integer in [-{MAX_RANGE_INT}, {MAX_RANGE_INT}] (2**53), found {show(value)}",
                        )
            if high < low:
                raise ConfigError(f"{path}.high", f"expected a number >= low ({low:g}), found {high:g}")
            log = as_bool(raw.get("log", False), f"{path}.log")
            if log and low <= 0:
                raise ConfigError(f"{path}.low", f"a log range needs low > 0, found {low:g}")
            step = raw.get("step")
            if step is not None:
                step = as_float(step, f"{path}.step", 0.0, strict=True)
                if log:
                    raise ConfigError(f"{path}.step", "step cannot be combined with log: true")
                if not integer and (high - low) / step > limit("range_steps"):  # Optuna's grid arithmetic fails
                    raise ConfigError(
                        f"{path}.step",
                        f"expected a step that cuts low..high into at most {limit('range_steps')} steps, "
                        f"found {step:g}, which makes {(high - low) / step:.3g} {how_to_raise('range_steps')}",
                    )
            kind = "int" if integer else "float"
            if integer and (step is not None and step != int(step)):
                raise ConfigError(f"{path}.step", f"expected an integer step, found {step:g}")
            if integer and step is not None and step > MAX_RANGE_INT:
                raise ConfigError(f"{path}.step", f"expected an integer step <= 2**53, found {step:g}")
            return cls(kind=kind, low=low, high=high, log=log, step=step)
        if isinstance(raw, list):
            if not raw:
                raise ConfigError(path, "expected a non-empty list of choices, found `[]`")
            values = tuple(check(v, f"{path}[{i}]") for i, v in enumerate(raw))
            for i, v in enumerate(values):
                if v in values[:i]:
                    raise ConfigError(f"{path}[{i}]", f"{show(v)} is listed twice")
            return cls(kind="choice", choices=values)
        return cls(kind="fixed", choices=(check(raw, path),))

    def suggest(self, trial: Any, name: str) -> Any:
        """Draw the value through an Optuna-like trial (``Trial``, ``FixedTrial``...)."""
        if self.kind == "fixed":
            return self.choices[0]
        if self.kind == "choice":
            return trial.suggest_categorical(name, list(self.choices))
        if self.kind == "int":
            return trial.suggest_int(name, int(self.low), int(self.high), step=int(self.step or 1), log=self.log)
        return trial.suggest_float(name, float(self.low), float(self.high), step=self.step, log=self.log)

    def default(self) -> Any:
        if self.kind in ("fixed", "choice"):
            return self.choices[0]
        mid = math.sqrt(self.low * self.high) if self.log else (self.low + self.high) / 2
        return int(round(mid)) if self.kind == "int" else mid

    def values(self) -> tuple:
        """Every value a fixed or categorical spec can take (ranges are open-ended: empty)."""
        return self.choices

    def to_raw(self) -> Any:
        if self.kind == "fixed":
            return self.choices[0]
        if self.kind == "choice":
            return list(self.choices)
        raw: dict[str, Any] = {"low": self.low, "high": self.high}
        if self.log:
            raw["log"] = True
        if self.step is not None:
            raw["step"] = self.step
        return raw


@dataclass(frozen=True)
class Hyperparameter:
    """The one declaration of a searchable hyperparameter, shared by the training space, families
    (``adashare_learned``) and weighting methods (:class:`~mtlsearch.weighting.hyper.Searchable`).

    Args:
        default: the value used when a space does not name it, in any YAML form of
            :class:`ParamSpec` (a value, a list of choices, a ``{low, high, log}`` range).
        check: ``check(value, path)`` validates (and may convert) one possible value.
        integer: whether a range of it draws integers.
    """

    default: Any
    check: Callable[[Any, str], Any]
    integer: bool = False

    def parse(self, raw: Any, path: str) -> ParamSpec:
        return ParamSpec.parse(raw, path, self.check, integer=self.integer)


def parse_hyperparameters(
    declared: Mapping[str, Hyperparameter], raw: Mapping[str, Any], path: str, defaults: bool = True
) -> dict[str, ParamSpec]:
    """The specs of a space section ``raw`` (unknown keys refused), in declaration order; an
    unnamed hyperparameter takes its default, or is left out when ``defaults`` is false."""
    check_keys(raw, list(declared), path)
    return {
        name: h.parse(raw[name] if name in raw else h.default, f"{path}.{name}" if path else name)
        for name, h in declared.items()
        if defaults or name in raw
    }


def bound_of(path: str) -> str | None:
    """The entry of ``LIMITS`` named like the field at ``path``, if any
    (``search_space.training.epochs.high`` and ``...epochs[1]`` -> ``epochs``)."""
    match = re.search(r"(\w+)(?:\[\d+\])?(?:\.(?:low|high))?$", path)
    return match.group(1) if match and match.group(1) in LIMITS else None


def positive_int(v: Any, path: str) -> int:
    """An integer >= 1, within its field's bound if ``LIMITS`` has one (``epochs``)."""
    return as_int(v, path, 1, bound=bound_of(path))


def positive_float(v: Any, path: str) -> float:
    return as_float(v, path, 0.0, strict=True)


def nonnegative_float(v: Any, path: str) -> float:
    return as_float(v, path, 0.0)


# ---------------------------------------------------------------------------------------------
# What to search.

OPTIMIZER_NAMES = ("adam", "adamw", "sgd")


def _optimizer_name(v: Any, path: str) -> str:
    if v not in OPTIMIZER_NAMES:
        raise ConfigError(
            path,
            f"unknown optimizer {show(v)}; choose one of: {', '.join(OPTIMIZER_NAMES)}"
            f"{did_you_mean(str(v), OPTIMIZER_NAMES)}",
        )
    return v


FLOAT32_MAX = 3.4028234663852886e38  # torch's optimizers compute in float32: a larger value crashes a step


def _float32(value: float, path: str) -> float:
    if value > FLOAT32_MAX:
        raise ConfigError(path, f"expected a number <= {FLOAT32_MAX:.3g} (float32's largest), found {value:g}")
    return value


def _training_positive_float(v: Any, path: str) -> float:
    return _float32(positive_float(v, path), path)


def _training_nonnegative_float(v: Any, path: str) -> float:
    return _float32(nonnegative_float(v, path), path)


TRAINING = {
    "epochs": Hyperparameter(5, positive_int, integer=True),
    "batch_size": Hyperparameter(64, positive_int, integer=True),
    "optimizer": Hyperparameter("adam", _optimizer_name),
    "lr": Hyperparameter(1e-3, _training_positive_float),
    "weight_decay": Hyperparameter(0.0, _training_nonnegative_float),
}


def _training_default(name: str) -> ParamSpec:
    # Built directly, not parsed: parsing checks $MTLSEARCH_LIMITS, which is read only once main()
    # can report a bad one as one line (this runs at import). The defaults are plain valid values.
    return ParamSpec(kind="fixed", choices=(TRAINING[name].default,))


@dataclass(frozen=True)
class TrainingSpace:
    """The training budget and searchable training hyperparameters of every candidate
    (declared in ``TRAINING``)."""

    epochs: ParamSpec = _training_default("epochs")
    batch_size: ParamSpec = _training_default("batch_size")
    optimizer: ParamSpec = _training_default("optimizer")
    lr: ParamSpec = _training_default("lr")
    weight_decay: ParamSpec = _training_default("weight_decay")

    FIELDS = tuple(TRAINING)

    @classmethod
    def parse(cls, raw: Any, path: str) -> TrainingSpace:
        return cls(**parse_hyperparameters(TRAINING, as_mapping(raw, path), path))

    def to_raw(self) -> dict:
        return {name: getattr(self, name).to_raw() for name in self.FIELDS}


def _unknown_section(
    key: Any,
    path: str,
    families: tuple[str, ...],
    weightings: tuple[str, ...],
    strategies: tuple[str, ...],
    schedules: tuple[str, ...],
) -> ConfigError:
    fixed = ["families", "weightings", "strategies", "schedules", "training", "auxiliary"]
    allowed = list(dict.fromkeys([*fixed, *families, *weightings, *strategies, *schedules]))  # each once
    return ConfigError(
        f"{path}.{key}",
        "unknown key; a section must name a family listed in "
        f"{path}.families, a weighting listed in {path}.weightings, a strategy listed in "
        f"{path}.strategies or a schedule listed in {path}.schedules; allowed keys are: "
        f"{', '.join(allowed)}{did_you_mean(str(key), allowed)}",
    )


AUXILIARY_MODES = ("search", "always")  # search_space.auxiliary (docs/tasks.md#auxiliary-tasks)


@dataclass(frozen=True)
class SearchSection:
    """``search_space``: which families and weightings to search, and the training space.

    ``families`` / ``weightings`` are the categorical choices; ``sections`` holds, for a family or
    weighting named there, its hyperparameters (``tree: {max_groups: 3}``), checked by
    :mod:`mtlsearch.problem` against the registered class. ``auxiliary``: ``search`` (each
    auxiliary task's inclusion is a trial parameter ``aux.<task>``) or ``always``.
    """

    families: tuple[str, ...] = ("hard_sharing",)
    weightings: tuple[str, ...] = ("equal",)
    sections: Mapping[str, dict] = field(default_factory=dict)
    training: TrainingSpace = field(default_factory=TrainingSpace)
    strategies: tuple[str, ...] = ("none",)
    schedules: tuple[str, ...] = ("all",)  # task schedules (docs/tasks.md#task-scheduling)
    auxiliary: str = "search"  # AUXILIARY_MODES: whether each auxiliary task's inclusion is searched

    @classmethod
    def parse(cls, raw: Any, path: str) -> SearchSection:
        raw = as_mapping(raw, path)
        families = tuple(as_name_list(raw.get("families", ["hard_sharing"]), f"{path}.families"))
        weightings = tuple(as_name_list(raw.get("weightings", ["equal"]), f"{path}.weightings"))
        strategies = tuple(as_name_list(raw.get("strategies", ["none"]), f"{path}.strategies"))
        schedules = tuple(as_name_list(raw.get("schedules", ["all"]), f"{path}.schedules"))
        training = TrainingSpace.parse(raw.get("training"), f"{path}.training")
        auxiliary = raw.get("auxiliary", AUXILIARY_MODES[0])
        if auxiliary not in AUXILIARY_MODES:
            raise ConfigError(
                f"{path}.auxiliary",
                f"unknown value {show(auxiliary)}; choose one of: search (each auxiliary task is included or "
                "not, a trial parameter), always (every candidate trains every auxiliary task)",
            )
        sections = {}
        listed = {*families, *weightings, *strategies, *schedules}
        for key, value in raw.items():
            if key in ("families", "weightings", "strategies", "training", "auxiliary", "schedules"):
                continue
            # `tree:` next to `families: [tre]`: only the registries know which of the two names is
            # misspelt, so such a section is kept here; Problem checks the listed names first and
            # then calls check_sections.
            if key not in listed and not did_you_mean(str(key), [*families, *weightings, *strategies, *schedules]):
                raise _unknown_section(key, path, families, weightings, strategies, schedules)
            sections[key] = as_mapping(value, f"{path}.{key}")
        return cls(
            families=families,
            weightings=weightings,
            sections=sections,
            training=training,
            strategies=strategies,
            schedules=schedules,
            auxiliary=auxiliary,
        )

    def check_sections(self, path: str = "search_space") -> None:
        """Every section names a listed family or weighting (see :meth:`parse`)."""
        for key in self.sections:
            if key not in (*self.families, *self.weightings, *self.strategies, *self.schedules):
                raise _unknown_section(key, path, self.families, self.weightings, self.strategies, self.schedules)

    def to_raw(self) -> dict:
        raw: dict[str, Any] = {"families": list(self.families)}
        raw.update({k: v for k, v in self.sections.items() if k in self.families})
        raw["weightings"] = list(self.weightings)
        raw.update({k: v for k, v in self.sections.items() if k in self.weightings})
        if self.strategies != ("none",):  # a space without strategies is stored as it always was
            raw["strategies"] = list(self.strategies)
            raw.update({k: v for k, v in self.sections.items() if k in self.strategies})
        if self.schedules != ("all",):  # a space without schedules is stored as it always was
            raw["schedules"] = list(self.schedules)
            raw.update({k: v for k, v in self.sections.items() if k in self.schedules})
        raw["training"] = self.training.to_raw()
        if self.auxiliary != AUXILIARY_MODES[0]:  # absent when default, so older spaces keep their fingerprint
            raw["auxiliary"] = self.auxiliary
        return raw


@dataclass(frozen=True)
class DataSection:
    """``data``: a built-in ``benchmark`` or an import-path ``factory``, its ``seed`` and params."""

    benchmark: str | None = "multidigits"
    factory: str | None = None
    seed: int = 0
    params: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def parse(cls, raw: Any, path: str) -> DataSection:
        raw = as_mapping(raw, path)
        if "benchmark" in raw and "factory" in raw:
            raise ConfigError(path, "give either `benchmark` (a built-in) or `factory` (an import path), not both")
        if "benchmark" not in raw and "factory" not in raw:
            raise ConfigError(
                path, "expected `benchmark: NAME` (a built-in benchmark) or `factory: package.module:function`"
            )
        seed = as_int(raw.get("seed", 0), f"{path}.seed", 0)
        if seed > MAX_SEED:  # torch's generators take it
            raise ConfigError(f"{path}.seed", f"expected an integer in [0, {MAX_SEED}], found {show(seed)}")
        params = {k: v for k, v in raw.items() if k not in ("benchmark", "factory", "seed")}
        if "factory" in raw:
            factory = check_name(raw["factory"], f"{path}.factory")
            if not re.fullmatch(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*", factory):
                raise ConfigError(
                    f"{path}.factory", f"expected an import path `package.module:function`, found {show(factory)}"
                )
            return cls(benchmark=None, factory=factory, seed=seed, params=params)
        return cls(benchmark=check_name(raw["benchmark"], f"{path}.benchmark"), seed=seed, params=params)

    def to_raw(self) -> dict:
        raw: dict[str, Any] = {"benchmark": self.benchmark} if self.benchmark else {"factory": self.factory}
        raw["seed"] = self.seed
        raw.update(self.params)
        return raw


TASK_KEYS = ["name", "type", "num_classes", "output_dim", "metrics", "loss", "pos_weight", "class_weights", "role"]
TASK_OPTIONS = ("loss", "pos_weight", "class_weights", "role")  # a data-provided task may take these too


def parse_task_options(raw: Mapping, path: str) -> dict[str, Any]:
    """The form of a task's ``loss`` (an import path), ``pos_weight`` (a number > 0),
    ``class_weights`` (numbers > 0) and ``role``; which types take them is checked by ``TaskSpec``.
    ``role: primary`` is the default and is left out, so that the space's canonical form (and its
    fingerprint) is the same with it or without it."""
    out: dict[str, Any] = {}
    if "role" in raw:
        if raw["role"] not in ROLES:
            raise ConfigError(
                f"{path}.role",
                f"unknown role {show(raw['role'])}; choose one of: {', '.join(ROLES)}"
                f"{did_you_mean(str(raw['role']), ROLES)}",
            )
        if raw["role"] != ROLES[0]:
            out["role"] = raw["role"]
    if "loss" in raw:
        loss = check_name(raw["loss"], f"{path}.loss")
        if not is_import_path(loss):
            raise ConfigError(
                f"{path}.loss",
                f"expected an import path `module:function` of a loss(output, target), found {show(loss)}",
            )
        out["loss"] = loss
    if "pos_weight" in raw:
        out["pos_weight"] = as_float(raw["pos_weight"], f"{path}.pos_weight", 0.0, strict=True)
    if "class_weights" in raw:
        weights = raw["class_weights"]
        if not isinstance(weights, list) or not weights:
            raise ConfigError(
                f"{path}.class_weights", f"expected a list of numbers > 0, one per class, found {show(weights)}"
            )
        check_length(weights, f"{path}.class_weights")
        out["class_weights"] = tuple(
            as_float(w, f"{path}.class_weights[{i}]", 0.0, strict=True) for i, w in enumerate(weights)
        )
    return out


@dataclass(frozen=True)
class TaskEntry:
    """One entry of ``tasks``: a name (select a task the data provides) or a full task spec."""

    name: str
    spec: TaskSpec | None = None  # None: take the data's own spec
    metrics: tuple[str, ...] | None = None  # metrics override for a data-provided task
    options: Mapping[str, Any] = field(default_factory=dict)  # loss / pos_weight / class_weights of one

    @classmethod
    def parse(cls, raw: Any, path: str) -> TaskEntry:
        if isinstance(raw, str):
            return cls(name=check_name(raw, path))
        if not isinstance(raw, Mapping):
            raise ConfigError(path, f"expected a task name or a mapping with name (and type, ...), found {show(raw)}")
        raw = dict(raw)
        check_keys(raw, TASK_KEYS, path, required=("name",))
        name = check_name(raw["name"], f"{path}.name")
        metrics = raw.get("metrics")
        if metrics is not None:
            metrics = tuple(as_name_list(metrics, f"{path}.metrics"))
        options = parse_task_options(raw, path)
        if "type" not in raw:
            if set(raw) - {"name", "metrics", *TASK_OPTIONS}:
                raise ConfigError(f"{path}.type", "required when a task gives num_classes or output_dim")
            return cls(name=name, metrics=metrics, options=options)
        kind = raw["type"]
        dense = isinstance(kind, str) and kind in TASK_TYPES and TASK_TYPES.get(kind).dense
        if "output_dim" in raw and (kind in ("classification", "binary", "count") or dense):
            raise ConfigError(
                f"{path}.output_dim", f"only regression tasks take output_dim; task `{name}` is {raw['type']}"
            )
        try:
            spec = TaskSpec(
                name=name,
                type=raw["type"],
                num_classes=raw.get("num_classes"),
                output_dim=raw.get("output_dim", 1),
                metrics=metrics or (),
                **options,
            )
        except ConfigError as err:
            raise err.prefixed(path) from None
        return cls(name=name, spec=spec)

    def to_raw(self) -> Any:
        if self.spec is not None:
            return self.spec.to_dict()
        if self.metrics or self.options:
            raw: dict[str, Any] = {"name": self.name}
            if self.metrics:
                raw["metrics"] = list(self.metrics)
            raw.update({k: list(v) if k == "class_weights" else v for k, v in self.options.items()})
            return raw
        return self.name


OBJECTIVE_RE = re.compile(r"^(delta_mtl|params|macs|latency_ms|[A-Za-z_]\w*\.[A-Za-z_]\w*)$")
CONSTRAINTS = {"max_params": "params", "max_macs": "macs", "max_latency_ms": "latency_ms"}


def parse_constraints(raw: Any, path: str) -> dict[str, float]:
    """``constraints: {max_params: N, max_macs: N, max_latency_ms: X}``: each a positive bound."""
    raw = as_mapping(raw, path)
    check_keys(raw, list(CONSTRAINTS), path)
    out: dict[str, float] = {}
    for key, value in raw.items():
        if key == "max_latency_ms":
            out[key] = as_float(value, f"{path}.{key}", 0.0, strict=True)
        else:
            out[key] = as_int(value, f"{path}.{key}", 1)
    return out


BASELINE_KINDS = ("tuned", "default", "given")
DELTA_AVERAGES = ("task", "metric")
MAX_TUNE_TRIALS = 1000
MAX_BASELINE_SEEDS = 100


@dataclass(frozen=True)
class BaselineSection:
    """``baselines``: how the single-task baselines that Delta-MTL divides by are obtained.

    ``tuned`` (the default; ``auto`` names it too): each task's single-task network is tuned over
    ``search_space.training`` with the run's sampler for ``tune_trials`` trials scored on the
    validation split, then its best settings train on ``seeds`` seeds; the mean is the baseline and
    the spread is stored. A training section with nothing searched skips the tuning.
    ``default``: every training parameter at its default (a range's midpoint), on ``seeds``
    seeds. ``given``: ``values: {task: {metric: value}}`` (or that mapping alone).
    ``keep_weights``: keep each task's trained network (the first seed of its chosen settings) as a
    study artifact, for distillation (on whenever a strategy needs it, such as ``distill``).
    """

    kind: str = "tuned"
    tune_trials: int = 8
    seeds: int = 2
    values: Mapping[str, Mapping[str, float]] | None = None
    keep_weights: bool = False
    #: ``keep_weights: false`` was written out (a strategy that needs the networks then refuses it)
    said_no_weights: bool = field(default=False, compare=False, repr=False)

    KEYS = ["kind", "tune_trials", "seeds", "values", "keep_weights"]

    @classmethod
    def parse(cls, raw: Any, path: str) -> BaselineSection:
        if raw is None or raw == "auto":
            return cls()
        if isinstance(raw, str):
            if raw not in BASELINE_KINDS[:2]:
                raise ConfigError(
                    path,
                    f"unknown baselines {show(raw)}; choose one of: auto, tuned, default, "
                    "or a mapping {kind, tune_trials, seeds, values}",
                )
            return cls(kind=raw)
        raw = as_mapping(raw, path)
        if not raw:
            raise ConfigError(
                path, "expected `auto`, `tuned`, `default` or a mapping {kind, tune_trials, seeds, values}, found `{}`"
            )
        short = not set(raw) & set(cls.KEYS)
        if short:
            raw = {"kind": "given", "values": raw}  # the short form: {task: {metric: value}}
        check_keys(raw, cls.KEYS, path)
        kind = raw.get("kind", "given" if "values" in raw else "tuned")
        if kind not in BASELINE_KINDS:
            raise ConfigError(f"{path}.kind", f"unknown kind {show(kind)}; choose one of: {', '.join(BASELINE_KINDS)}")
        if (kind == "given") != ("values" in raw):
            raise ConfigError(
                f"{path}.values" if kind == "given" else f"{path}.kind",
                "given baselines need `values: {task: {metric: value}}`"
                if kind == "given"
                else f"`values` are given baselines; use kind: given, not {show(kind)}",
            )
        if kind == "given" and set(raw) - {"kind", "values"}:
            extra = sorted(set(raw) - {"kind", "values"})[0]
            raise ConfigError(f"{path}.{extra}", "given baselines are not trained; remove it")
        tune_trials = as_int(raw.get("tune_trials", cls.tune_trials), f"{path}.tune_trials", 1)
        if tune_trials > MAX_TUNE_TRIALS:
            raise ConfigError(f"{path}.tune_trials", f"expected at most {MAX_TUNE_TRIALS}, found {tune_trials}")
        if kind == "default" and "tune_trials" in raw:
            raise ConfigError(f"{path}.tune_trials", "default baselines are not tuned; use kind: tuned")
        seeds = as_int(raw.get("seeds", cls.seeds), f"{path}.seeds", 1)
        if seeds > MAX_BASELINE_SEEDS:
            raise ConfigError(f"{path}.seeds", f"expected at most {MAX_BASELINE_SEEDS}, found {seeds}")
        values = None
        if kind == "given":
            vpath = path if short else f"{path}.values"
            given = as_mapping(raw["values"], vpath)
            if not given:
                raise ConfigError(vpath, "expected a mapping task -> metric -> value, found `{}`")
            values = {
                t: {m: as_float(v, f"{vpath}.{t}.{m}") for m, v in as_mapping(ms, f"{vpath}.{t}").items()}
                for t, ms in given.items()
            }
        keep_weights = as_bool(raw.get("keep_weights", False), f"{path}.keep_weights")
        return cls(
            kind=kind,
            tune_trials=tune_trials,
            seeds=seeds,
            values=values,
            keep_weights=keep_weights,
            said_no_weights="keep_weights" in raw and not keep_weights,
        )

    def to_raw(self) -> Any:
        if self == BaselineSection():
            return "auto"  # so spaces written before tuned baselines keep their fingerprint
        if self.kind == "given":
            return {"kind": "given", "values": copy.deepcopy(dict(self.values or {}))}
        raw: dict[str, Any] = {"kind": self.kind, "seeds": self.seeds}
        if self.kind == "tuned":
            raw["tune_trials"] = self.tune_trials
        if self.keep_weights:  # absent when off, so older spaces keep their fingerprint
            raw["keep_weights"] = True
        return raw


@dataclass(frozen=True)
class DeltaSection:
    """``delta_mtl``: which metrics count and how they are averaged.

    ``average``: ``task`` (the default: metrics averaged within each task, then tasks) or
    ``metric`` (every metric equally); see :func:`mtlsearch.scoring.delta_mtl`. ``metrics``:
    ``{task: [metric, ...]}`` for tasks whose counted metrics are not their type's primary ones
    (accuracy for classification, mae for regression). Every recorded metric is still reported.
    """

    average: str = "task"
    metrics: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    @classmethod
    def parse(cls, raw: Any, path: str) -> DeltaSection:
        raw = as_mapping(raw, path)
        check_keys(raw, ["average", "metrics"], path)
        average = raw.get("average", "task")
        if average not in DELTA_AVERAGES:
            raise ConfigError(
                f"{path}.average",
                f"unknown average {show(average)}; choose one of: task (per task first), metric (every metric equally)",
            )
        metrics = {
            str(t): tuple(as_name_list(ms, f"{path}.metrics.{t}"))
            for t, ms in as_mapping(raw.get("metrics"), f"{path}.metrics").items()
        }
        return cls(average=average, metrics=metrics)

    def to_raw(self) -> dict:
        raw: dict[str, Any] = {"average": self.average}
        if self.metrics:
            raw["metrics"] = {t: list(ms) for t, ms in self.metrics.items()}
        return raw


@dataclass(frozen=True)
class SearchSpace:
    """What to search: data, tasks, backbone, the search space proper, objectives and baselines.

    ``objectives``: ``delta_mtl`` (maximised), ``params``, ``macs`` and ``latency_ms``
    (minimised), or ``TASK.METRIC`` (in the metric's own direction). ``constraints``: upper bounds
    ``max_params``, ``max_macs``, ``max_latency_ms`` (Optuna constraints: an infeasible candidate is
    never trained and never on the front). ``baselines``: see :class:`BaselineSection`;
    ``delta_mtl``: see :class:`DeltaSection`.
    """

    name: str
    data: DataSection
    backbone: Mapping[str, Any]
    search_space: SearchSection
    tasks: tuple[TaskEntry, ...] = ()
    objectives: tuple[str, ...] = ("delta_mtl", "params")
    baselines: BaselineSection = field(default_factory=BaselineSection)
    constraints: Mapping[str, float] = field(default_factory=dict)
    delta_mtl: DeltaSection = field(default_factory=DeltaSection)

    TOP_KEYS = [
        "name",
        "data",
        "tasks",
        "backbone",
        "search_space",
        "objectives",
        "constraints",
        "baselines",
        "delta_mtl",
        "run",
    ]

    @classmethod
    def parse(cls, raw: Any, path: str = "") -> SearchSpace:
        raw = as_mapping(raw, path or "space")
        check_keys(raw, cls.TOP_KEYS, path)

        def p(k: str) -> str:
            return f"{path}.{k}" if path else k

        name = check_name(raw.get("name", "mtlsearch"), p("name"))
        if not re.fullmatch(r"[\w.-]+", name):
            raise ConfigError(p("name"), f"expected letters, digits, '_', '-' or '.', found {show(name)}")
        data = DataSection.parse(raw.get("data"), p("data"))
        tasks_raw = raw.get("tasks", [])
        if tasks_raw is None:
            tasks_raw = []
        if not isinstance(tasks_raw, list):
            raise ConfigError(p("tasks"), f"expected a list of task names or task specs, found {show(tasks_raw)}")
        check_length(tasks_raw, p("tasks"))
        tasks = tuple(TaskEntry.parse(t, f"{p('tasks')}[{i}]") for i, t in enumerate(tasks_raw))
        seen: set[str] = set()
        for i, task in enumerate(tasks):
            if task.name in seen:
                raise ConfigError(f"{p('tasks')}[{i}].name", f"task `{task.name}` is listed twice")
            seen.add(task.name)
        backbone = as_mapping(raw.get("backbone"), p("backbone"))
        if "name" not in backbone:
            raise ConfigError(p("backbone.name"), "required key is missing (e.g. `mlp` or `cnn`)")
        check_name(backbone["name"], p("backbone.name"))
        search = SearchSection.parse(raw.get("search_space"), p("search_space"))
        objectives = tuple(as_name_list(raw.get("objectives", ["delta_mtl", "params"]), p("objectives")))
        for i, obj in enumerate(objectives):
            if not OBJECTIVE_RE.match(obj):
                raise ConfigError(
                    f"{p('objectives')}[{i}]",
                    f"unknown objective {show(obj)}; choose from: delta_mtl, params, macs, latency_ms, "
                    "or TASK.METRIC (e.g. left.accuracy)"
                    + did_you_mean(obj, ["delta_mtl", "params", "macs", "latency_ms"]),
                )
        constraints = parse_constraints(raw.get("constraints"), p("constraints"))
        baselines = BaselineSection.parse(raw.get("baselines"), p("baselines"))
        delta = DeltaSection.parse(raw.get("delta_mtl"), p("delta_mtl"))
        return cls(
            name=name,
            data=data,
            backbone=backbone,
            search_space=search,
            tasks=tasks,
            objectives=objectives,
            baselines=baselines,
            constraints=constraints,
            delta_mtl=delta,
        )

    def to_raw(self) -> dict:
        """The space as plain data (YAML/JSON), without the ``run`` section; parse(to_raw()) == self."""
        raw: dict[str, Any] = {"name": self.name, "data": self.data.to_raw()}
        if self.tasks:
            raw["tasks"] = [t.to_raw() for t in self.tasks]
        raw["backbone"] = dict(self.backbone)
        raw["search_space"] = self.search_space.to_raw()
        raw["objectives"] = list(self.objectives)
        if self.constraints:  # absent when empty, so older spaces keep their fingerprint
            raw["constraints"] = dict(self.constraints)
        raw["baselines"] = self.baselines.to_raw()
        if self.delta_mtl != DeltaSection():  # absent when default, so older spaces keep their fingerprint
            raw["delta_mtl"] = self.delta_mtl.to_raw()
        return raw

    def fingerprint(self) -> str:
        """A short hash of the canonical space, stored with a study to refuse a different space."""
        text = json.dumps(self.to_raw(), sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------------------------
# How to run it.

STORAGE_SCHEMES = ("sqlite", "postgresql", "mysql", "journal")
# The names a run may choose; each is implemented once (search.sampler.SAMPLERS,
# search.early_stopping.RULES, training.OPTIMIZERS), and tests/test_config.py checks they agree.
SAMPLERS = ("tpe", "nsga2", "random")
MAX_SEEDS_PER_TRIAL = 100
MAX_SEED = 2**32 - 1  # trial seeds are run.seed + trial number; torch and Optuna's samplers take them
EARLY_STOPPING = ("none", "median", "asha")
WARM_STARTS = ("none", "affinity")  # run.warm_start (docs/tasks.md#grouping-and-the-warm-start)


def check_storage_url(url: Any, path: str) -> str:
    """An Optuna storage URL (SQLAlchemy style) or ``journal:///file.log`` for a journal file."""
    url = as_str(url, path)
    if not url.isprintable():  # not check_printable: the message must not show a password
        raise ConfigError(path, f"expected no control characters, found some in {show(redact(url))}")
    scheme = url.split(":", 1)[0].split("+", 1)[0] if ":" in url else ""
    if scheme not in STORAGE_SCHEMES or "://" not in url:
        raise ConfigError(
            path,
            f"unknown storage scheme in {show(redact(url))}; choose one of: "
            + ", ".join(f"{s}://..." for s in STORAGE_SCHEMES)
            + f" (e.g. {_storage_example(url)})",
        )
    return url


def _storage_example(url: str) -> str:
    """A URL for a bare file name (``adult.db`` -> ``sqlite:///adult.db``), else the default."""
    if ":" in url or not url.strip():
        return "sqlite:///mtlsearch.db"
    return f"journal:///{url}" if url.endswith(".log") else f"sqlite:///{url}"


def check_device(v: Any, path: str) -> str:
    if not isinstance(v, str) or not re.fullmatch(r"auto|cpu|cuda(:\d+)?|mps", v):
        raise ConfigError(path, f"expected `auto`, `cpu`, `cuda`, `cuda:N` or `mps`, found {show(v)}")
    return v


MAX_CONFIRM = 100


def check_threads(value: Any, path: str) -> int | str:
    """``auto`` (the rule of :func:`mtlsearch.training.auto_threads`) or a number of torch threads."""
    if value == "auto":
        return value
    if isinstance(value, bool) or not isinstance(value, int):  # a string other than `auto`, a float...
        raise ConfigError(path, f"expected `auto` or an integer >= 1, found {show(value)}")
    return as_int(value, path, 1, bound="threads")


def check_confirm(raw: Any, path: str) -> dict[str, int]:
    """``confirm: {top: K, seeds: S}``: after the budget, the K best candidates train S more seeds."""
    raw = as_mapping(raw, path)
    check_keys(raw, ["top", "seeds"], path, required=("top", "seeds"))
    out = {}
    for key in ("top", "seeds"):
        out[key] = as_int(raw[key], f"{path}.{key}", 1)
        if out[key] > MAX_CONFIRM:
            raise ConfigError(f"{path}.{key}", f"expected at most {MAX_CONFIRM}, found {out[key]}")
    return out


@dataclass
class RunConfig:
    """How to run a search: where it is stored, which sampler, budget, seed and device.

    ``n_trials`` is the study-wide total over every worker: running again with the same study
    continues to it. ``timeout`` (seconds) is a study-wide wall-clock limit from the start of the
    run. ``seed`` seeds the sampler (mixed with the number of finished trials, so a resumed study
    does not repeat configurations), the single-task baselines and each trial (``seed + trial
    number``). ``workers``: local worker processes on the study. ``heartbeat_interval`` /
    ``grace_period`` (seconds): a running trial records a heartbeat every interval; one silent for
    the grace period belongs to a dead worker and is failed and re-queued with its parameters,
    continuing from its last epoch checkpoint. ``early_stopping``: ``none``, ``median`` or
    ``asha`` (stop a trial on its validation Delta-MTL after an epoch against the other trials at
    that epoch, once ``min_trials`` trials reached it and from epoch ``min_epochs`` on; recorded as
    PRUNED; see :mod:`mtlsearch.search._early_stopping`). ``confirm``: ``{top: K, seeds: S}``, after
    the budget the K best candidates of the front train S more seeds each (validation only).
    ``threads``: torch threads per process, ``auto`` (one for small models, see
    :func:`mtlsearch.training.auto_threads`) or a number; ``run_search`` sets them in the calling
    process too. ``warm_start``: ``none`` or ``affinity`` (the trees that task affinity proposes
    are the study's first trials; :mod:`mtlsearch.search._warm_start`).
    """

    study: str | None = None
    storage: str = "sqlite:///mtlsearch.db"
    sampler: str = "tpe"
    seed: int = 0
    n_trials: int = 20
    timeout: float | None = None
    device: str = "auto"
    artifacts: str | None = None
    save_weights: bool = True
    workers: int = 1
    heartbeat_interval: int = 10
    grace_period: int = 30
    early_stopping: str = "none"
    min_trials: int = 5
    min_epochs: int = 1
    seeds_per_trial: int = 1
    confirm: dict | None = None
    threads: int | str = "auto"
    warm_start: str = "none"

    KEYS = [
        "study",
        "storage",
        "sampler",
        "seed",
        "n_trials",
        "timeout",
        "device",
        "artifacts",
        "save_weights",
        "workers",
        "heartbeat_interval",
        "grace_period",
        "early_stopping",
        "min_trials",
        "min_epochs",
        "seeds_per_trial",
        "confirm",
        "threads",
        "warm_start",
    ]

    def __post_init__(self) -> None:
        path = "run"
        if self.study is not None:
            self.study = check_name(self.study, f"{path}.study")
        self.storage = check_storage_url(self.storage, f"{path}.storage")
        if self.sampler not in SAMPLERS:
            raise ConfigError(
                f"{path}.sampler",
                f"unknown sampler {show(self.sampler)}; choose one of: {', '.join(SAMPLERS)}"
                f"{did_you_mean(str(self.sampler), SAMPLERS)}",
            )
        self.seed = as_int(self.seed, f"{path}.seed", 0)
        if self.seed > MAX_SEED:
            raise ConfigError(f"{path}.seed", f"expected an integer in [0, {MAX_SEED}], found {show(self.seed)}")
        self.n_trials = as_int(self.n_trials, f"{path}.n_trials", 1)
        if self.timeout is not None:
            self.timeout = as_float(self.timeout, f"{path}.timeout", 0.0, strict=True)
        self.device = check_device(self.device, f"{path}.device")
        if self.artifacts is not None:
            self.artifacts = check_printable(as_str(self.artifacts, f"{path}.artifacts"), f"{path}.artifacts")
        self.save_weights = as_bool(self.save_weights, f"{path}.save_weights")
        self.workers = as_int(self.workers, f"{path}.workers", 1, bound="workers")
        self.heartbeat_interval = as_int(self.heartbeat_interval, f"{path}.heartbeat_interval", 1)
        self.grace_period = as_int(self.grace_period, f"{path}.grace_period", 1)
        if self.grace_period <= self.heartbeat_interval:
            raise ConfigError(
                f"{path}.grace_period",
                f"expected more than heartbeat_interval ({self.heartbeat_interval} s), found {self.grace_period}",
            )
        if self.early_stopping not in EARLY_STOPPING:
            raise ConfigError(
                f"{path}.early_stopping",
                f"unknown rule {show(self.early_stopping)}; choose one of: {', '.join(EARLY_STOPPING)}",
            )
        self.min_trials = as_int(self.min_trials, f"{path}.min_trials", 1)
        self.min_epochs = as_int(self.min_epochs, f"{path}.min_epochs", 1)
        self.seeds_per_trial = as_int(self.seeds_per_trial, f"{path}.seeds_per_trial", 1)
        if self.seeds_per_trial > MAX_SEEDS_PER_TRIAL:
            raise ConfigError(
                f"{path}.seeds_per_trial",
                f"expected at most {MAX_SEEDS_PER_TRIAL} (each seed trains the candidate again), "
                f"found {self.seeds_per_trial}",
            )

        if self.confirm is not None:
            self.confirm = check_confirm(self.confirm, f"{path}.confirm")
        self.threads = check_threads(self.threads, f"{path}.threads")
        if self.warm_start not in WARM_STARTS:
            boolean = (
                " (YAML reads an unquoted yes, no, on or off as a boolean)" if isinstance(self.warm_start, bool) else ""
            )
            raise ConfigError(
                f"{path}.warm_start",
                f"unknown warm start {show(self.warm_start)}{boolean}; choose one of: none, affinity (enqueue the "
                "trees that task affinity proposes as the study's first trials)",
            )

    @classmethod
    def parse(cls, raw: Any, path: str = "run") -> RunConfig:
        raw = as_mapping(raw, path)
        check_keys(raw, cls.KEYS, path)
        return cls(**raw)

    def replace(self, **overrides: Any) -> RunConfig:
        """A copy with the non-None ``overrides`` applied (CLI flags over YAML), re-validated."""
        values = {k: getattr(self, k) for k in self.KEYS}
        values.update({k: v for k, v in overrides.items() if v is not None})
        return RunConfig(**values)


# ---------------------------------------------------------------------------------------------
# Files.


class _Refused(yaml.MarkedYAMLError):
    """A YAML file over one of the bounds of :mod:`mtlsearch.limits` (not malformed)."""


class _Loader(yaml.SafeLoader):
    """``yaml.safe_load``, plus: a repeated key is an error (PyYAML silently keeps the last one),
    and ``1e-4`` without a dot is a float, as in YAML 1.2 (PyYAML's YAML 1.1 reads a string).

    While the file is composed (before any value is built) it is refused past the bounds
    ``nesting``, ``list_items`` and ``yaml_values``, counting what aliases (``*name``) stand for:
    PyYAML's composer recurses per level, and an alias bomb is small until something expands it.
    """

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._bounds = {name: limit(name) for name in ("nesting", "list_items", "yaml_values")}
        self._depth = 0  # lists and mappings open around the node being composed
        self._sizes: dict[int, tuple[int, int]] = {}  # id(node) -> (values, nesting), aliases expanded

    def _refuse(self, name: str, what: str, mark: Any) -> NoReturn:
        raise _Refused(None, None, f"more than {self._bounds[name]} {what} {how_to_raise(name)}", mark)

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()
        if parent is not None and len(parent.value) >= self._bounds["list_items"]:
            self._refuse("list_items", "entries in one list or mapping", event.start_mark)
        opens = isinstance(event, yaml.CollectionStartEvent)
        self._depth += opens
        if self._depth > self._bounds["nesting"]:
            self._refuse("nesting", "lists and mappings inside one another", event.start_mark)
        node = super().compose_node(parent, index)
        self._depth -= opens
        if isinstance(event, yaml.AliasEvent):
            if id(node) not in self._sizes:  # still being composed: it contains itself
                problem = f"alias *{event.anchor} stands for a value that contains it"
                raise _Refused(None, None, problem, event.start_mark)
        else:
            pairs = node.value if isinstance(node, yaml.MappingNode) else ()
            children = node.value if isinstance(node, yaml.SequenceNode) else [n for pair in pairs for n in pair]
            sizes = [self._sizes[id(child)] for child in children]
            self._sizes[id(node)] = (1 + sum(v for v, _ in sizes), opens + max((d for _, d in sizes), default=0))
        values, nesting = self._sizes[id(node)]
        if self._depth + nesting > self._bounds["nesting"]:
            self._refuse("nesting", "lists and mappings inside one another once aliases are expanded", event.start_mark)
        if values > self._bounds["yaml_values"]:
            self._refuse("yaml_values", "values once aliases (*name) are expanded", event.start_mark)
        return node

    def construct_yaml_int(self, node: Any) -> int:
        try:
            return super().construct_yaml_int(node)
        except ValueError:  # more digits than Python converts (sys.get_int_max_str_digits)
            most = sys.get_int_max_str_digits()
            problem = f"an integer of {len(node.value):,} digits, more than Python reads ({most})"
            raise _Refused(None, None, problem, node.start_mark) from None

    def construct_mapping(self, node: Any, deep: bool = False) -> dict:
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, Any] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue  # `<<: *base` keys may be overridden
                key = self.construct_object(key_node, deep=True)
                try:
                    first = seen.setdefault(key, key_node.start_mark)
                except TypeError:  # unhashable: SafeLoader reports it
                    continue
                if first is not key_node.start_mark:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key `{key}` (first given at line {first.line + 1})", key_node.start_mark
                    )
        return super().construct_mapping(node, deep=deep)


_Loader.add_constructor("tag:yaml.org,2002:int", _Loader.construct_yaml_int)
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9][0-9_]*)[eE][-+]?[0-9]+$"),
    list("-+.0123456789"),
)


def read_yaml(path: str | Path) -> Any:
    """Load a YAML file (safely), with clear errors for a missing file, malformed YAML or a file
    over the bounds ``file_bytes``, ``nesting``, ``list_items`` or ``yaml_values``."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError("", f"{p}: no such file")
    if p.stat().st_size > limit("file_bytes"):
        raise ConfigError(
            "",
            f"{p}: a file of {p.stat().st_size:,} bytes, more than {limit('file_bytes')} {how_to_raise('file_bytes')}",
        )
    try:
        return yaml.load(p.read_text(encoding="utf-8"), Loader=_Loader)
    except UnicodeDecodeError as err:
        raise ConfigError("", f"{p}: not a UTF-8 text file ({err.reason} at byte {err.start})") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        if isinstance(err, _Refused):
            raise ConfigError("", f"{p}:{where}: {err.problem}") from None
        problem = getattr(err, "problem", None) or str(err)
        context, cmark = getattr(err, "context", None), getattr(err, "context_mark", None)
        if context and cmark and mark and cmark.line != mark.line:  # where the broken construct began
            problem += f" ({context} started at line {cmark.line + 1}, column {cmark.column + 1})"
        raise ConfigError("", f"{p}: malformed YAML{where}: {problem}") from None


def parse_document(raw: Any) -> tuple[SearchSpace, RunConfig]:
    """A whole YAML document: the space and its ``run`` section."""
    if not isinstance(raw, Mapping):
        raise ConfigError("", f"expected a YAML mapping at the top of the file, found {show(raw)}")
    space = SearchSpace.parse(raw)
    run = RunConfig.parse(raw.get("run"))
    return space, run
