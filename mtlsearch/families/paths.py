"""Families whose candidates are task paths through copies of backbone blocks."""

from __future__ import annotations

from collections.abc import Sequence

from ..config import as_int
from .base import FAMILIES, Architecture, Family


@FAMILIES.register("single_task")
class SingleTask(Family):
    """No sharing: one full backbone per task (the reference point of Delta-MTL)."""

    shares = False  # a weighting only rescales separate losses: it is not searched

    def sample(self, trial, tasks, backbone):
        return Architecture(self.name, {t: tuple(t for _ in backbone.block_names) for t in tasks})


@FAMILIES.register("hard_sharing")
class HardSharing(Family):
    """Hard parameter sharing (Caruana, 1997): one trunk for all tasks, one head per task."""

    def sample(self, trial, tasks, backbone):
        return Architecture(self.name, {t: tuple("shared" for _ in backbone.block_names) for t in tasks})


@FAMILIES.register("tree")
class Tree(Family):
    """Branched sharing trees: tasks share a block until their branches part.

    After fully-adaptive feature sharing (Lu et al., CVPR 2017, arXiv:1611.05377), Learning to
    Branch (Guo et al., ICML 2020) and BMTAS (Bruggemann et al., BMVC 2020). Encoding: task t gets a
    label ``g[t][b]`` in ``0..G-1`` at every block b, and its node at block b is the label prefix
    ``g[t][0..b]``; equal prefixes are one node. Every labelling is therefore a valid tree in which
    groups can only split with depth, and at most G branches leave any node. The first task's
    labels are fixed to 0 (relabelling does not change the tree), so the trial has
    ``(T - 1) * B`` categorical parameters ``tree.<task>.<block>``. Node keys are the prefixes with
    labels renumbered in order of first appearance, so equal trees get equal parameter names. See
    docs/families.md#tree.
    """

    citation = "Lu et al., CVPR 2017; Guo et al., ICML 2020; Bruggemann et al., BMVC 2020"

    def __init__(self, max_groups: int = 2):
        self.max_groups = as_int(max_groups, "max_groups", 1)
        self.space_tasks = 0  # the space's number of tasks (set by check)

    def hyperparameters(self):
        return {"max_groups": self.max_groups}

    def check(self, backbone, tasks):
        # A candidate may train fewer tasks than the space has (auxiliary tasks it leaves out); its
        # labels are drawn from the same choices, which Optuna needs fixed per parameter name.
        self.space_tasks = len(tasks)

    def sample(self, trial, tasks, backbone):
        block_names = backbone.block_names
        groups = min(self.max_groups, max(len(tasks), self.space_tasks))
        labels = {}
        for i, t in enumerate(tasks):
            labels[t] = tuple(
                0 if i == 0 or groups == 1 else trial.suggest_categorical(f"tree.{t}.{b}", list(range(groups)))
                for b in block_names
            )
        return Architecture(self.name, canonical_paths(labels, len(block_names)))


def canonical_paths(labels: dict[str, Sequence[int]], num_blocks: int) -> dict[str, tuple[str, ...]]:
    """Node keys from label prefixes, with labels renumbered per parent in order of first use.

    ``{a: (0, 0), b: (1, 0), c: (1, 1)}`` -> ``{a: (n0, n0_0), b: (n1, n1_0), c: (n1, n1_1)}``.
    """
    renumber: dict[tuple, dict[int, int]] = {}
    paths: dict[str, tuple[str, ...]] = {}
    for t, labs in labels.items():
        prefix: tuple[int, ...] = ()
        keys = []
        for b in range(num_blocks):
            children = renumber.setdefault(prefix, {})
            prefix = prefix + (children.setdefault(labs[b], len(children)),)
            keys.append("n" + "_".join(map(str, prefix)))
        paths[t] = tuple(keys)
    return paths
