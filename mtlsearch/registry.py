"""Strict registries: one per extension point (families, backbones, weightings, task types...)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from .errors import ConfigError, did_you_mean

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to classes (or factories) of one kind.

    ``kind`` is used in errors: ``unknown family `tre`; choose one of: hard_sharing, single_task,
    tree (did you mean `tree`?)``.
    """

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Register ``obj`` under ``name``; a class gets ``name`` as its ``name`` attribute (it is
        written once, here)."""

        def decorator(obj: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} `{name}` is registered twice")
            if isinstance(obj, type):
                own = obj.__dict__.get("name")
                if isinstance(own, str) and own != name:
                    raise ValueError(
                        f"{self.kind} class {obj.__name__} says name `{own}` but is registered as `{name}`"
                    )
                setattr(obj, "name", name)
            self._entries[name] = obj
            return obj

        return decorator

    def get(self, name: str, path: str = "") -> T:
        if not isinstance(name, str) or name not in self._entries:
            hint = did_you_mean(name, self._entries) if isinstance(name, str) else ""
            raise ConfigError(path, f"unknown {self.kind} `{name}`; choose one of: {', '.join(self.names())}{hint}")
        return self._entries[name]

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
