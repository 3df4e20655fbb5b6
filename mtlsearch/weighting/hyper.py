"""Hyperparameters of weighting and aggregation methods: validation errors, and how a space
section (``search_space.cagrad: {c: {low: 0.1, high: 0.9}}``) becomes trial parameters."""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any, ClassVar, Literal, overload

from ..config import Hyperparameter, ParamSpec, parse_hyperparameters
from ..errors import ConfigError


def hyperparameter_error(owner: str, name: str, allowed: str, value: Any) -> ConfigError:
    """``Parameter `c` of CAGrad should be in [0, 1). Found `c = 1.5`.``"""
    return ConfigError("", f"Parameter `{name}` of {owner} should be {allowed}. Found `{name} = {value!r}`.")


@overload
def check_number(
    owner: str,
    name: str,
    value: Any,
    low: float | None = ...,
    high: float | None = ...,
    low_open: bool = ...,
    high_open: bool = ...,
    *,
    integer: Literal[True],
) -> int: ...


@overload
def check_number(
    owner: str,
    name: str,
    value: Any,
    low: float | None = ...,
    high: float | None = ...,
    low_open: bool = ...,
    high_open: bool = ...,
    integer: bool = ...,
) -> float: ...


def check_number(
    owner: str,
    name: str,
    value: Any,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
    integer: bool = False,
) -> float:
    """``value`` as a number in the given interval, else :func:`hyperparameter_error`."""
    kind = "an integer" if integer else "a number"
    ok = isinstance(value, int if integer else (int, float)) and not isinstance(value, bool)
    if ok and not integer:
        value = float(value)
        ok = value == value and abs(value) != float("inf")
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if not ok:
        if low is not None and high is not None:
            interval = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
            allowed = f"an integer in {interval}" if integer else f"in {interval}"
        elif low is not None:
            allowed = f"{kind} {'>' if low_open else '>='} {low:g}"
        elif high is not None:
            allowed = f"{kind} {'<' if high_open else '<='} {high:g}"
        else:
            allowed = kind
        raise hyperparameter_error(owner, name, allowed, value)
    return value


class Searchable:
    """Mixin: a method whose ``__init__`` keyword hyperparameters listed in ``searchable`` can be
    fixed or searched from its space section; the rest keep their defaults.

    ``label`` is the method's name as written in papers (``CAGrad``), used in errors.
    """

    name: ClassVar[str]
    label: ClassVar[str] = ""
    searchable: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def _probe(cls, **hyperparameters: Any) -> Any:
        """An instance built only to validate hyperparameters (override if it needs arguments)."""
        return cls(**hyperparameters)

    @classmethod
    def declared(cls) -> dict[str, Hyperparameter]:
        """The searchable hyperparameters, declared like every other one: the default from
        ``__init__``, one value checked by building a probe instance."""
        defaults = {n: p.default for n, p in inspect.signature(cls.__init__).parameters.items()}

        def probe(name: str):
            def check(value: Any, path: str) -> Any:
                try:
                    cls._probe(**{name: value})
                except ConfigError as err:
                    raise err.prefixed(path) from None
                return value

            return check

        return {
            name: Hyperparameter(
                defaults[name],
                probe(name),
                integer=type(defaults[name]) is int,  # bool is not an integer here
            )
            for name in cls.searchable
        }

    @classmethod
    def space(cls, section: Mapping[str, Any], path: str) -> dict[str, ParamSpec]:
        """The specs of the hyperparameters ``section`` names; the others keep their defaults."""
        return parse_hyperparameters(cls.declared(), section, path, defaults=False)

    @classmethod
    def suggest_hyperparameters(cls, trial: Any, space: Mapping[str, ParamSpec]) -> dict[str, Any]:
        return {k: spec.suggest(trial, f"{cls.name}.{k}") for k, spec in space.items()}

    def hyperparameters(self) -> dict[str, Any]:
        return {
            k: getattr(self, k)
            for k in inspect.signature(type(self).__init__).parameters
            if k not in ("self", "tasks") and hasattr(self, k)
        }
