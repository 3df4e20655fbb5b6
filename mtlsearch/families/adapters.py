"""Residual adapters: one shared trunk, small task-specific modules after selected blocks."""

from __future__ import annotations

from ..models.soft import AdapterNetwork
from .base import FAMILIES, Architecture
from .soft import BlockSwitches, chosen_blocks, listed, setting_blocks, span


@FAMILIES.register("adapters")
class Adapters(BlockSwitches):
    """Series residual adapters (Rebuffi, Bilen and Vedaldi, NeurIPS 2017, arXiv:1705.08045).

    The trunk's blocks are shared by every task; after an adapted block each task applies its own
    adapter, ``y = x + BN(conv1x1(x))`` on images and ``y = x + Linear(x)`` on vectors (both start
    as the identity). Whether a candidate block (``blocks``, default every block) is adapted is the
    boolean trial parameter ``adapters.<block>``; settings: ``{"adapted": [block, ...]}``. Tasks
    share the trunk's computation up to the first adapter; no adapter is hard sharing. See
    docs/families.md#adapters.
    """

    citation = "Rebuffi et al., NeurIPS 2017"

    def sample(self, trial, tasks, backbone):
        return Architecture(self.name, settings={"adapted": chosen_blocks(trial, self.name, self.candidates(backbone))})

    def build(self, architecture, backbone, tasks):
        return AdapterNetwork(backbone, tasks, setting_blocks(architecture.settings, "adapted", backbone))

    def describe(self, architecture, block_names):
        adapted = architecture.settings.get("adapted", [])
        trunk = f"shared trunk {span(block_names, 0, len(block_names) - 1)}"
        if not adapted:
            return [f"{trunk}, run once for all tasks (no adapter: hard sharing)"]
        return [
            f"{trunk}; per-task residual adapters after: {listed(adapted)}",
            f"computed together up to {adapted[0]}, then once per task",
        ]
