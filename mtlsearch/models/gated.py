"""The AdaShare supernet: one shared trunk whose gated blocks each task may run or skip, with the
per-task policy logits, and AdaShare's two policy regularisers as pure functions.

AdaShare (Sun et al., NeurIPS 2020, arXiv:1911.12423) learns, for every task ``k`` and gated block
``l``, the probability ``alpha_{k,l}`` of *selecting* (running) the block; a skipped block is an
identity. :mod:`mtlsearch.families.adashare_learning` (reached through ``Family.learn``) trains
this supernet and samples the final policy from it. See docs/families.md#the-supernet.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from ..tasks import TaskSpec
from .backbones import Backbone
from .heads import apply_heads, build_head

SELECT, SKIP = 0, 1  # positions in the last axis of the policy logits


def sparsity_loss(select_probs: torch.Tensor) -> torch.Tensor:
    """AdaShare's sparsity regulariser (Sun et al., 2020, eq. 3): ``sum_{k,l} log alpha_{k,l}``.

    ``select_probs`` is ``(T, G)``: per task and gated block, the probability of running it.
    Minimising the sum pushes every ``alpha`` down, towards skipping (smaller models).
    """
    return torch.log(select_probs).sum()


def sharing_loss(select_probs: torch.Tensor, depths: Sequence[int], num_blocks: int) -> torch.Tensor:
    """AdaShare's sharing regulariser (Sun et al., 2020, eq. 4):
    ``sum_{k1 < k2} sum_l (L - l) / L * |alpha_{k1,l} - alpha_{k2,l}|``.

    ``select_probs`` is ``(T, G)``; ``depths[g]`` is the 1-based depth ``l`` of gated block ``g`` in
    the backbone and ``num_blocks`` is ``L``. Low blocks weigh more, so tasks are pushed to agree on
    (and so share) the bottom of the network while they may differ near the top.
    """
    T = select_probs.shape[0]
    if T < 2:
        return select_probs.sum() * 0
    weights = (num_blocks - torch.as_tensor(depths, dtype=select_probs.dtype, device=select_probs.device)) / num_blocks
    first, second = torch.triu_indices(T, T, offset=1, device=select_probs.device)
    gaps = (select_probs[first] - select_probs[second]).abs()  # (pairs, G)
    return (gaps * weights).sum()


class GatedSupernet(nn.Module):
    """One trunk (one copy of every backbone block), one head per task, and policy logits.

    Args:
        backbone: the blueprint whose blocks form the trunk.
        tasks: one head per task.
        gated: the names of the ``G`` gated blocks, in backbone order.

    ``logits`` has shape ``(T, G, 2)`` (select, skip) and starts equal: every block is selected
    with probability 0.5, as in the paper. Parameters are named ``blocks.<block>.shared.*`` and
    ``heads.<task>.*``, as in :class:`~mtlsearch.models.PathNetwork` for a gating policy.
    ``forward(x, policy)`` takes a ``(T, G)`` hard or relaxed policy (``None``: every block runs)
    and returns ``{task: output}``; task ``t``'s feature after gated block ``b`` is
    ``p * block(x) + (1 - p) * x``. A hard policy that needs no gradient computes each distinct
    run/skip prefix once. See docs/families.md#the-supernet.
    """

    def __init__(self, backbone: Backbone, tasks: Sequence[TaskSpec], gated: Sequence[str]):
        super().__init__()
        self.task_names = [t.name for t in tasks]
        self.block_names = list(backbone.block_names)
        self.gate_column = {self.block_names.index(b): g for g, b in enumerate(gated)}
        self.depths = [self.block_names.index(b) + 1 for b in gated]  # 1-based, per column
        self.blocks = nn.ModuleDict(
            {n: nn.ModuleDict({"shared": backbone.build_block(b)}) for b, n in enumerate(self.block_names)}
        )
        self.heads = nn.ModuleDict({t.name: build_head(backbone.output_shape, t, backbone.input_shape) for t in tasks})
        self._dense = {t.name: t.kind.dense for t in tasks}
        self.logits = nn.Parameter(torch.zeros(len(tasks), len(gated), 2))

    def weight_parameters(self) -> list[nn.Parameter]:
        """Every parameter but the policy logits: the trunk and the heads."""
        return [*self.blocks.parameters(), *self.heads.parameters()]

    def select_probabilities(self) -> torch.Tensor:
        """``(T, G)``: per task and gated block, the probability ``alpha`` of running it."""
        return F.softmax(self.logits, dim=-1)[..., SELECT]

    def sample_policy(self, temperature: float, first_learnable: int = 0) -> torch.Tensor:
        """A ``(T, G)`` hard policy by straight-through Gumbel-softmax (values in ``{0, 1}``,
        gradient of the relaxed sample); gated blocks before ``first_learnable`` are forced to run."""
        T, G, _ = self.logits.shape
        sampled = F.gumbel_softmax(self.logits[:, first_learnable:], tau=temperature, hard=True)[..., SELECT]
        return torch.cat([sampled.new_ones(T, first_learnable), sampled], dim=1)

    def forward(self, x: torch.Tensor, policy: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        hard = policy is not None and not policy.requires_grad and bool(((policy == 0) | (policy == 1)).all())
        values: list[list[float]] = policy.tolist() if hard and policy is not None else []
        groups: list[tuple[torch.Tensor, list[int]]] = [(x, list(range(len(self.task_names))))]
        for b, name in enumerate(self.block_names):
            block = cast(nn.ModuleDict, self.blocks[name])["shared"]
            g = self.gate_column.get(b)
            if g is None or policy is None:
                groups = [(block(f), tasks) for f, tasks in groups]
            elif hard:
                new = []
                for f, tasks in groups:
                    run = [t for t in tasks if values[t][g] == 1]
                    skip = [t for t in tasks if values[t][g] == 0]
                    new += [(block(f), run)] if run else []
                    new += [(f, skip)] if skip else []
                groups = new
            else:
                new = []
                for f, tasks in groups:
                    y = block(f)
                    new += [(policy[t, g] * y + (1 - policy[t, g]) * f, [t]) for t in tasks]
                groups = new
        final = {self.task_names[t]: f for f, tasks in groups for t in tasks}
        return apply_heads(self.heads, self._dense, {t: final[t] for t in self.task_names})
