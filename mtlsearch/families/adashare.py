"""AdaShare layer gating, searched: each task runs or skips each gateable block of one shared trunk."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..errors import ConfigError, show
from ..models.backbones import Backbone
from .base import FAMILIES, Architecture, Family, block_index, block_table, sharing_lines

RUN, SKIP = "run", "skip"


def skippable_blocks(backbone: Backbone) -> list[str]:
    """Blocks whose input and output shapes match, so that skipping one is an identity."""
    return [n for n, (i, o) in zip(backbone.block_names, backbone.shapes) if i == o]


def gateable_blocks(blocks: Sequence[str] | None, backbone: Backbone, family: str) -> list[str]:
    """The blocks a gating family may skip: those listed (each checked), else every skippable one."""
    allowed = skippable_blocks(backbone)
    if blocks is None:
        if not allowed:
            raise ConfigError(
                "blocks",
                f"backbone `{backbone.name}` has no block whose input and output shapes match, so `{family}` "
                f"has nothing to skip; block shapes: {shape_list(backbone)}; use more blocks (e.g. a deeper backbone)",
            )
        return allowed
    for i, name in enumerate(blocks):
        b = block_index(name, backbone, f"blocks[{i}]")
        if name not in allowed:
            i_shape, o_shape = backbone.shapes[b]
            raise ConfigError(
                f"blocks[{i}]",
                f"block `{name}` cannot be skipped: its input shape {i_shape} differs from its output shape {o_shape}; "
                f"skippable blocks: {', '.join(allowed) or 'none'}",
            )
    return list(blocks)


def shape_list(backbone: Backbone) -> str:
    return ", ".join(f"{n} {i}->{o}" for n, (i, o) in zip(backbone.block_names, backbone.shapes))


def check_block_list(blocks: Any, field: str = "blocks") -> list[str] | None:
    if blocks is None:
        return None
    if not isinstance(blocks, list) or not blocks or not all(isinstance(b, str) for b in blocks):
        raise ConfigError(field, f"expected a non-empty list of block names, found {show(blocks)}")
    if len(set(blocks)) != len(blocks):
        raise ConfigError(field, f"lists a block twice: {show(blocks)}")
    return list(blocks)


def gating_paths(policy: dict[str, Sequence[bool]], block_names: Sequence[str]) -> dict[str, tuple[str | None, ...]]:
    """Paths through one shared trunk: ``"shared"`` where a task runs a block, ``None`` where it skips."""
    return {t: tuple("shared" if run else None for run in runs) for t, runs in policy.items()}


def gating_table(architecture: Architecture, block_names: Sequence[str]) -> list[str]:
    assert architecture.paths is not None  # a gating architecture (learned ones once learned)
    rows = {t: [RUN if key is not None else SKIP for key in p] for t, p in architecture.paths.items()}
    return [
        "per task, each block run or skipped:",
        *block_table(rows, block_names),
        "computed together:",
        *sharing_lines(architecture, block_names),
    ]


@FAMILIES.register("adashare")
class AdaShare(Family):
    """AdaShare layer gating with the policy searched (Sun et al., NeurIPS 2020, arXiv:1911.12423).

    One trunk of shared blocks; each task runs or skips each *gateable* block, a categorical trial
    parameter ``adashare.<task>.<block>`` in ``{run, skip}`` (the paper learns it with
    Gumbel-softmax; ``adashare_learned`` does that). A skipped block is an identity, so only blocks
    whose input and output shapes match can be gated: ``blocks`` lists them (default: every such
    block); the other blocks always run. Tasks with the same run/skip prefix share computation up
    to the first block where their policies differ. See docs/families.md#adashare-searched.
    """

    citation = "Sun et al., NeurIPS 2020"

    def __init__(self, blocks: list[str] | None = None):
        self.blocks = check_block_list(blocks)

    def hyperparameters(self):
        return {"blocks": self.blocks}

    def check(self, backbone, tasks):
        gateable_blocks(self.blocks, backbone, self.name)

    def sample(self, trial, tasks, backbone):
        gated = set(gateable_blocks(self.blocks, backbone, self.name))
        policy = {
            t: [
                b not in gated or trial.suggest_categorical(f"adashare.{t}.{b}", [RUN, SKIP]) == RUN
                for b in backbone.block_names
            ]
            for t in tasks
        }
        return Architecture(
            self.name,
            gating_paths(policy, backbone.block_names),
            {"gated": [b for b in backbone.block_names if b in gated]},
        )

    def describe(self, architecture, block_names):
        return gating_table(architecture, block_names)
