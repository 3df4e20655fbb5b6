"""The supernet of Learning to Branch (Guo, Lee & Ulbricht, ICML 2020): ``width`` candidate nodes
per block, each choosing its parent among the previous block's nodes, and each task choosing a
node of the last block, all by Gumbel-softmax over learned logits."""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from ..tasks import TaskSpec
from .backbones import Backbone
from .heads import apply_heads, build_head


class BranchingSupernet(nn.Module):
    """``nodes.<block>.<n>``: node n of a block (a copy of the block); block 0's nodes read the
    input. ``parent_logits[b - 1, n]``: node n of block b's logits over block b - 1's nodes;
    ``task_logits[t]``: task t's logits over the last block's nodes. ``forward(x, temperature)``
    samples every choice with hard (straight-through) Gumbel-softmax, so each node and head reads
    one parent while the logits get gradients."""

    def __init__(self, backbone: Backbone, tasks: Sequence[TaskSpec], width: int):
        super().__init__()
        self.task_names = [t.name for t in tasks]
        self.block_names = list(backbone.block_names)
        self.width = width
        self.nodes = nn.ModuleDict(
            {
                name: nn.ModuleList(backbone.build_block(b) for _ in range(width))
                for b, name in enumerate(self.block_names)
            }
        )
        self.heads = nn.ModuleDict({t.name: build_head(backbone.output_shape, t, backbone.input_shape) for t in tasks})
        self._dense = {t.name: t.kind.dense for t in tasks}
        self.parent_logits = nn.Parameter(torch.zeros(len(self.block_names) - 1, width, width))
        self.task_logits = nn.Parameter(torch.zeros(len(self.task_names), width))

    def weight_parameters(self) -> list[nn.Parameter]:
        return [p for name, p in self.named_parameters() if not name.endswith("_logits")]

    def forward(self, x: torch.Tensor, temperature: float) -> dict[str, torch.Tensor]:
        first = cast(nn.ModuleList, self.nodes[self.block_names[0]])
        feats = torch.stack([node(x) for node in first], 1)  # (N, width, ...)
        for b, name in enumerate(self.block_names[1:], start=1):
            choice = F.gumbel_softmax(self.parent_logits[b - 1], tau=temperature, hard=True)  # (width, width)
            inputs = torch.einsum("nm,bm...->bn...", choice, feats)
            feats = torch.stack([node(inputs[:, n]) for n, node in enumerate(cast(nn.ModuleList, self.nodes[name]))], 1)
        choice = F.gumbel_softmax(self.task_logits, tau=temperature, hard=True)  # (T, width)
        final = torch.einsum("tm,bm...->bt...", choice, feats)
        return apply_heads(self.heads, self._dense, {t: final[:, i] for i, t in enumerate(self.task_names)})

    def parent_probabilities(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``softmax`` of the parent and task logits (detached)."""
        return self.parent_logits.detach().softmax(-1), self.task_logits.detach().softmax(-1)
