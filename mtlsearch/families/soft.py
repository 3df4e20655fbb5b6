"""Soft-sharing families: cross-stitch networks, MTAN, MMoE and PLE.

Their candidates are not task paths (``Architecture.paths`` is ``None``): ``settings`` holds the
structure as plain data, and ``build`` makes the network from it alone. See
docs/families.md#soft-sharing.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

from ..errors import ConfigError, show
from ..models.backbones import Backbone
from ..models.network import MultiTaskNetwork
from ..models.soft import CGCNetwork, CrossStitchNetwork, DSelectKNetwork, MMoENetwork, MTANNetwork, PLENetwork
from .adashare import check_block_list
from .base import FAMILIES, Architecture, Family, block_index

# -- hyperparameter and settings helpers (shared with the adapters family) ----------------------


def count_choices(raw: Any, field: str) -> list[int]:
    """An integer >= 1 (fixed) or a non-empty list of distinct ones (choices)."""
    values = list(raw) if isinstance(raw, (list, tuple)) else [raw]
    if not values or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in values):
        raise ConfigError(field, f"expected an integer >= 1 or a non-empty list of them, found {show(raw)}")
    if len(set(values)) != len(values):
        raise ConfigError(field, f"lists a value twice: {show(raw)}")
    return values


def candidate_blocks(blocks: list[str] | None, backbone: Backbone, field: str, default: Sequence[str]) -> list[str]:
    """The listed blocks checked against the backbone, in backbone order; ``default`` when unset."""
    if blocks is None:
        return list(default)
    indices = {block_index(b, backbone, f"{field}[{i}]") for i, b in enumerate(blocks)}
    return [backbone.block_names[b] for b in sorted(indices)]


def chosen_blocks(trial: Any, family: str, candidates: Sequence[str]) -> list[str]:
    """The candidates switched on by the boolean trial parameters ``<family>.<block>``."""
    return [b for b in candidates if trial.suggest_categorical(f"{family}.{b}", [True, False])]


def setting_blocks(settings: Any, key: str, backbone: Backbone) -> list[str]:
    """A list of block names from an architecture's settings, checked against the backbone."""
    names = settings.get(key, [])
    for i, name in enumerate(names):
        block_index(name, backbone, f"settings.{key}[{i}]")
    return list(names)


def span(names: Sequence[str], first: int, last: int) -> str:
    """``block1..block2``, or one name when the span has one block."""
    return names[first] if first == last else f"{names[first]}..{names[last]}"


def listed(names: Sequence[str]) -> str:
    return ", ".join(names) if names else "none"


class BlockSwitches(Family):
    """A family that switches something on after each of its candidate ``blocks``."""

    def __init__(self, blocks: list[str] | None = None):
        self.blocks = check_block_list(blocks)

    def hyperparameters(self):
        return {"blocks": self.blocks}

    def candidates(self, backbone: Backbone) -> list[str]:
        return candidate_blocks(self.blocks, backbone, "blocks", backbone.block_names)

    def check(self, backbone, tasks):
        self.candidates(backbone)


# -- the families --------------------------------------------------------------------------------


@FAMILIES.register("cross_stitch")
class CrossStitch(BlockSwitches):
    """Cross-stitch networks: one column per task, mixed by trained units after chosen blocks.

    Cross-stitch networks (Misra et al., 2016, arXiv:1604.03539). A unit follows a candidate block
    (``blocks``, default every block) when the boolean trial parameter ``cross_stitch.<block>`` says
    so; settings ``{"units": [block, ...]}``. See docs/families.md#cross_stitch.
    """

    citation = "Misra et al., CVPR 2016"

    def sample(self, trial, tasks, backbone):
        return Architecture(self.name, settings={"units": chosen_blocks(trial, self.name, self.candidates(backbone))})

    def build(self, architecture, backbone, tasks):
        return CrossStitchNetwork(backbone, tasks, setting_blocks(architecture.settings, "units", backbone))

    def describe(self, architecture, block_names):
        units = architecture.settings.get("units", [])
        if not units:
            return ["one column per task; no cross-stitch unit (independent columns)"]
        return ["one column per task", f"cross-stitch units after: {listed(units)}"]


@FAMILIES.register("mtan")
class MTAN(BlockSwitches):
    """MTAN: one shared trunk, per-task attention modules at the attended blocks.

    Multi-Task Attention Network (Liu, Johns & Davison, 2019, arXiv:1803.10704). The last block is
    always attended; an earlier candidate block (``blocks``, default every block but the last) is
    when the boolean trial parameter ``mtan.<block>`` says so; settings
    ``{"attended": [block, ..., last block]}``. See docs/families.md#mtan.
    """

    citation = "Liu et al., CVPR 2019"

    def candidates(self, backbone):
        names = backbone.block_names
        blocks = candidate_blocks(self.blocks, backbone, "blocks", names[:-1])
        if names[-1] in blocks:
            raise ConfigError(
                "blocks",
                f"the last block `{names[-1]}` is always attended; list only earlier blocks, found {show(self.blocks)}",
            )
        return blocks

    def sample(self, trial, tasks, backbone):
        attended = chosen_blocks(trial, self.name, self.candidates(backbone)) + [backbone.block_names[-1]]
        return Architecture(self.name, settings={"attended": attended})

    def build(self, architecture, backbone, tasks):
        attended = setting_blocks(architecture.settings, "attended", backbone)
        if backbone.block_names[-1] not in attended:
            raise ConfigError(
                "settings.attended",
                f"the last block `{backbone.block_names[-1]}` must be attended (the heads read it), "
                f"found {show(attended)}",
            )
        return MTANNetwork(backbone, tasks, attended)

    def describe(self, architecture, block_names):
        return [
            f"shared trunk {span(block_names, 0, len(block_names) - 1)}, run once",
            f"per-task attention after: {listed(architecture.settings.get('attended', []))}",
        ]


class Experts(Family):
    """Mixture-of-experts families: a ``split`` block (choices, default every block)."""

    split: list[str] | None

    def candidate_splits(self, backbone: Backbone) -> list[str]:
        return candidate_blocks(self.split, backbone, "split", backbone.block_names)

    def check(self, backbone, tasks):
        self.candidate_splits(backbone)

    @staticmethod
    def split_index(architecture: Architecture, backbone: Backbone) -> int:
        return block_index(architecture.settings["split"], backbone, "settings.split")

    @staticmethod
    def gate_source(split: int, block_names: Sequence[str]) -> str:
        """What the gates read: the shared bottom's output, or the input when there is none."""
        return f"{block_names[split - 1]}'s output" if split else "the input"

    @staticmethod
    def bottom(split: int, block_names: Sequence[str]) -> str:
        return f"shared bottom: {span(block_names, 0, split - 1)}, run once" if split else "shared bottom: none"

    def describe(self, architecture, block_names):
        """The shared bottom, then ``experts: <towers> towers over <blocks>, <gating> from <source>``
        (:meth:`experts_phrase` gives the towers and the gating)."""
        split = block_names.index(architecture.settings["split"])
        towers, gating = self.experts_phrase(architecture.settings)
        return [
            self.bottom(split, block_names),
            f"experts: {towers} towers over {span(block_names, split, len(block_names) - 1)}, "
            f"{gating} from {self.gate_source(split, block_names)}",
        ]

    def experts_phrase(self, settings: Mapping[str, Any]) -> tuple[str, str]:
        """How many expert towers a candidate has, and how each task's gate uses them."""
        return str(settings["experts"]), "gated per task"


@FAMILIES.register("mmoe")
class MMoE(Experts):
    """MMoE: a shared bottom, then K expert towers mixed by a softmax gate per task.

    Multi-gate Mixture-of-Experts (Ma et al., 2018, KDD). Trial parameters ``mmoe.experts`` (from
    ``experts``: a count or a list, default [2, 3, 4]) and ``mmoe.split`` (from ``split``, default
    every block); settings ``{"experts": K, "split": block}``. See docs/families.md#mmoe.
    """

    citation = "Ma et al., KDD 2018"

    def __init__(self, experts: int | Sequence[int] = (2, 3, 4), split: list[str] | None = None):
        self.experts = count_choices(experts, "experts")
        self.split = check_block_list(split, "split")

    def hyperparameters(self):
        return {"experts": self.experts, "split": self.split}

    def sample(self, trial, tasks, backbone):
        return Architecture(
            self.name,
            settings={
                "experts": trial.suggest_categorical("mmoe.experts", self.experts),
                "split": trial.suggest_categorical("mmoe.split", self.candidate_splits(backbone)),
            },
        )

    def build(self, architecture, backbone, tasks):
        return MMoENetwork(
            backbone, tasks, int(architecture.settings["experts"]), self.split_index(architecture, backbone)
        )


@FAMILIES.register("dselect_k")
class DSelectK(Experts):
    """DSelect-k: MMoE with a differentiable, sparse top-k gate per task.

    DSelect-k (Hazimeh et al., NeurIPS 2021): each task's gate is ``k`` selectors, each choosing
    one expert through a smoothed binary code, mixed by softmax weights (per example). Trial
    parameters ``dselect_k.experts`` (default [4, 8]), ``dselect_k.k`` (default [1, 2]) and
    ``dselect_k.split`` (default every block); ``gamma`` (the smooth-step's width, default 1.0) is a
    fixed setting. Settings ``{"experts": n, "k": k, "split": block, "gamma": gamma}``. See
    docs/families.md#dselect_k.
    """

    citation = "Hazimeh et al., NeurIPS 2021"

    def __init__(
        self,
        experts: int | Sequence[int] = (4, 8),
        k: int | Sequence[int] = (1, 2),
        split: list[str] | None = None,
        gamma: float = 1.0,
    ):
        self.experts = count_choices(experts, "experts")
        self.k = count_choices(k, "k")
        self.split = check_block_list(split, "split")
        if isinstance(gamma, bool) or not isinstance(gamma, (int, float)) or not 0 < gamma < float("inf"):
            raise ConfigError("gamma", f"expected a number > 0, found {show(gamma)}")
        self.gamma = float(gamma)

    def hyperparameters(self):
        return {"experts": self.experts, "k": self.k, "split": self.split, "gamma": self.gamma}

    def sample(self, trial, tasks, backbone):
        return Architecture(
            self.name,
            settings={
                "experts": trial.suggest_categorical("dselect_k.experts", self.experts),
                "k": trial.suggest_categorical("dselect_k.k", self.k),
                "split": trial.suggest_categorical("dselect_k.split", self.candidate_splits(backbone)),
                "gamma": self.gamma,
            },
        )

    def build(self, architecture, backbone, tasks):
        s = architecture.settings
        return DSelectKNetwork(
            backbone,
            tasks,
            int(s["experts"]),
            int(s["k"]),
            self.split_index(architecture, backbone),
            float(s.get("gamma", 1.0)),
        )

    def experts_phrase(self, settings):
        return str(settings["experts"]), f"each task's gate selects {settings['k']} of them (DSelect-k)"


class SharedAndTaskExperts(Experts):
    """Expert families with ``S`` shared and ``E`` per-task experts from a ``split`` block on (CGC,
    PLE): trial parameters ``<name>.shared_experts`` and ``<name>.task_experts`` (counts or lists,
    default [1, 2]) and ``<name>.split``; settings ``{"shared_experts": S, "task_experts": E,
    "split": block}``."""

    network: ClassVar[Callable[..., MultiTaskNetwork]]  # (backbone, tasks, shared, per task, split index)

    def __init__(
        self,
        shared_experts: int | Sequence[int] = (1, 2),
        task_experts: int | Sequence[int] = (1, 2),
        split: list[str] | None = None,
    ):
        self.shared_experts = count_choices(shared_experts, "shared_experts")
        self.task_experts = count_choices(task_experts, "task_experts")
        self.split = check_block_list(split, "split")

    def hyperparameters(self):
        return {"shared_experts": self.shared_experts, "task_experts": self.task_experts, "split": self.split}

    def sample(self, trial, tasks, backbone):
        return Architecture(
            self.name,
            settings={
                "shared_experts": trial.suggest_categorical(f"{self.name}.shared_experts", self.shared_experts),
                "task_experts": trial.suggest_categorical(f"{self.name}.task_experts", self.task_experts),
                "split": trial.suggest_categorical(f"{self.name}.split", self.candidate_splits(backbone)),
            },
        )

    def build(self, architecture, backbone, tasks):
        s = architecture.settings
        return self.network(
            backbone, tasks, int(s["shared_experts"]), int(s["task_experts"]), self.split_index(architecture, backbone)
        )


@FAMILIES.register("cgc")
class CGC(SharedAndTaskExperts):
    """CGC: a shared bottom, then shared and per-task expert towers, mixed by a gate per task.

    Customized Gate Control (Tang et al., 2020, RecSys, Section 4.2), the single-level form of
    PLE: each expert is a tower over the blocks from ``split`` on, and task t's gate mixes its own
    experts and the shared ones. Trial parameters ``cgc.shared_experts`` and ``cgc.task_experts``
    (counts or lists, default [1, 2]) and ``cgc.split`` (default every block); settings
    ``{"shared_experts": S, "task_experts": E, "split": block}``. See docs/families.md#cgc.
    """

    citation = "Tang et al., RecSys 2020"
    network = CGCNetwork

    def experts_phrase(self, settings):
        return f"{settings['shared_experts']} shared + {settings['task_experts']} per-task", "gated per task"


@FAMILIES.register("ple")
class PLE(SharedAndTaskExperts):
    """PLE: a shared bottom, then one extraction layer of shared and per-task experts per block.

    Progressive Layered Extraction (Tang et al., 2020, RecSys). Trial parameters
    ``ple.shared_experts`` and ``ple.task_experts`` (counts or lists, default [1, 2]) and
    ``ple.split`` (default every block); settings ``{"shared_experts": S, "task_experts": E,
    "split": block}``. See docs/families.md#ple.
    """

    citation = "Tang et al., RecSys 2020"
    network = PLENetwork

    def describe(self, architecture, block_names):
        s = architecture.settings
        split = block_names.index(s["split"])
        return [
            self.bottom(split, block_names),
            f"extraction layers at {span(block_names, split, len(block_names) - 1)}: "
            f"{s['shared_experts']} shared + {s['task_experts']} per-task experts each, gated per task",
        ]
