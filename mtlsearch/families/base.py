"""The search-family extension point.

A *family* is a kind of multi-task architecture (hard sharing, a branched tree, layer gating,
routing, soft sharing...). It turns trial parameters into an :class:`Architecture` and an
architecture into a model.

Contract of :class:`Family`:

* ``__init__(**hyperparameters)`` validates the family's settings from the space
  (``search_space.tree: {max_groups: 3}``), raising :class:`~mtlsearch.errors.ConfigError`.
* ``check(backbone, tasks)`` validates them against the backbone.
* ``sample(trial, tasks, backbone)`` draws an architecture through an Optuna-like trial, with
  parameter names ``"<family name>."...``; replaying the parameters gives the same architecture.
* ``build(architecture, backbone, tasks)`` returns a :class:`~mtlsearch.models.MultiTaskNetwork`.
* ``describe(architecture, block_names)``: a few readable lines for ``report`` and ``export``.
* Learned families (``learned = True``) learn the final architecture inside the trial with
  :meth:`Family.learn` (AdaShare: :mod:`mtlsearch.families.adashare_learning`), and
  ``with_learned(architecture, learned)`` rebuilds it from its stored record.

See docs/families.md#the-family-contract.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from ..errors import ConfigError
from ..models.backbones import Backbone
from ..models.network import MultiTaskNetwork, Path, PathNetwork
from ..registry import Registry
from ..tasks import TaskSpec


@dataclass(frozen=True)
class Architecture:
    """A sampled architecture.

    ``paths``: per task and block, the key of the module that computes it (``None`` = skip), or
    ``None`` for families that are not path-shaped. ``settings``: the structural choices as plain
    data. ``learned``: the outcome of learning (JSON) for learned families, else ``None``. See
    docs/families.md#architectures.
    """

    family: str
    paths: Mapping[str, Path] | None = None
    settings: Mapping[str, Any] = field(default_factory=dict)
    learned: Mapping[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"family": self.family}
        if self.paths is not None:
            out["paths"] = {t: list(p) for t, p in self.paths.items()}
        if self.settings:
            out["settings"] = dict(self.settings)
        if self.learned is not None:
            out["learned"] = dict(self.learned)
        return out

    def sharing(self, block_names: Sequence[str]) -> list[list[list[str]]] | None:
        """Per block, the groups of tasks that share that block's computation (same prefix);
        ``None`` for architectures without paths."""
        if self.paths is None:
            return None
        out = []
        for b in range(len(block_names)):
            groups: dict[Path, list[str]] = {}
            for t, p in self.paths.items():
                groups.setdefault(tuple(p[: b + 1]), []).append(t)
            out.append(list(groups.values()))
        return out


def sharing_lines(architecture: Architecture, block_names: Sequence[str]) -> list[str]:
    """One line per block, tasks computed together joined by ``+``: ``block1: left+right | sum``."""
    sharing = architecture.sharing(block_names) or []
    return [f"{name}: " + " | ".join("+".join(g) for g in groups) for name, groups in zip(block_names, sharing)]


def block_table(rows: Mapping[str, Sequence[str]], block_names: Sequence[str]) -> list[str]:
    """A fixed-width table, one row per task and one column per block."""
    first = max(len("task"), *(len(t) for t in rows))
    widths = [max(len(b), *(len(str(r[i])) for r in rows.values())) for i, b in enumerate(block_names)]

    def line(head: str, cells: Sequence[Any]) -> str:
        return "  ".join([head.ljust(first), *(str(c).ljust(w) for c, w in zip(cells, widths))]).rstrip()

    return [line("task", block_names), *(line(t, r) for t, r in rows.items())]


def block_index(name: Any, backbone: Backbone, field_path: str) -> int:
    """The index of a block named in a family's settings, or a clear error listing the names."""
    names = backbone.block_names
    if name not in names:
        raise ConfigError(field_path, f"unknown block `{name}`; the backbone's blocks are: {', '.join(names)}")
    return names.index(name)


class Family(ABC):
    """Base of every search family (see the module docstring for the contract)."""

    name: ClassVar[str]
    citation: ClassVar[str] = ""
    learned: ClassVar[bool] = False
    learns: ClassVar[str] = "the architecture"  # what a learned family learns, as its errors name it
    shares: ClassVar[bool] = True  # tasks share parameters: only then is a weighting searched

    def __init__(self) -> None:  # families without hyperparameters
        pass

    def check(self, backbone: Backbone, tasks: Sequence[str]) -> None:
        """Validate the hyperparameters against the backbone; raise ConfigError naming the field."""

    @abstractmethod
    def sample(self, trial: Any, tasks: Sequence[str], backbone: Backbone) -> Architecture: ...

    def build(self, architecture: Architecture, backbone: Backbone, tasks: Sequence[TaskSpec]) -> MultiTaskNetwork:
        if self.learned and architecture.learned is None:
            raise ValueError(
                f"family `{self.name}`: {self.learns} has not been learned yet; learn it with "
                "family.learn(candidate, ...) or rebuild it from its record with with_learned()"
            )
        if architecture.paths is None:
            raise ValueError(f"family `{self.name}`: architecture has no paths; build() must be overridden")
        return PathNetwork(backbone, tasks, architecture.paths)

    def describe(self, architecture: Architecture, block_names: Sequence[str]) -> list[str]:
        """Readable lines for report/export; path families show who shares each block."""
        return sharing_lines(architecture, block_names)

    def with_learned(self, architecture: Architecture, learned: Mapping[str, Any]) -> Architecture:
        """The final architecture of a learned family from its stored ``learned`` record."""
        raise ValueError(f"family `{self.name}` does not learn its architecture inside a trial")

    def learn(
        self, candidate: Any, device: Any, seed: int, on_epoch: Callable[[Any], None] | None = None
    ) -> Architecture:
        """Learn the final architecture of ``candidate`` (a :class:`~mtlsearch.problem.Candidate`
        of this family) on its train split only, seeded by ``seed``; ``on_epoch`` gets each
        learning epoch's :class:`~mtlsearch.training.EpochEnd`. Returns
        ``self.with_learned(candidate.architecture, learned)``. Learned families override it."""
        raise ValueError(f"family `{self.name}` does not learn its architecture inside a trial")

    def hyperparameters(self) -> dict[str, Any]:
        return {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.hyperparameters().items())})"


FAMILIES: Registry[type[Family]] = Registry("family")
