"""Networks of the soft-sharing families: cross-stitch columns, MTAN attention, mixtures of experts
(MMoE, PLE) and residual adapters.

Every backbone block is a fresh ``backbone.build_block(b)``; parameter names depend only on the
block names, the task names and the structural settings, so a network rebuilt from the same
settings has the same ``state_dict`` keys and shapes. Features are images ``(N, C, H, W)`` or
vectors ``(N, W)``; the *channels* of a feature are the first dimension of its per-sample shape.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import cast

import torch
from torch import nn
from torch.nn import functional as F

from ..tasks import TaskSpec
from .backbones import Backbone
from .heads import apply_heads, build_head, pool, pooled_size
from .network import MultiTaskNetwork

Shape = tuple[int, ...]


def is_image(shape: Shape) -> bool:
    return len(shape) == 3


class Segment(nn.ModuleDict):
    """Consecutive backbone blocks, named after them, run in order (empty: the identity)."""

    def __init__(self, backbone: Backbone, indices: Iterable[int]):
        super().__init__({backbone.block_names[b]: backbone.build_block(b) for b in indices})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.values():
            x = block(x)
        return x


class Gate(nn.Module):
    """Mixture weights over ``k`` inputs: ``softmax(Linear(pool(x)))``, rows summing to 1."""

    def __init__(self, in_shape: Shape, k: int):
        super().__init__()
        self.linear = nn.Linear(pooled_size(in_shape), k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.linear(pool(x)), dim=-1)


def mix(weights: torch.Tensor, stacked: torch.Tensor) -> torch.Tensor:
    """``sum_k weights[n, k] * stacked[n, k]`` for weights ``(N, K)`` and stacked ``(N, K, ...)``."""
    return (weights.view(*weights.shape, *[1] * (stacked.dim() - 2)) * stacked).sum(1)


class SoftNetwork(MultiTaskNetwork):
    """Common part: one head per task on the final feature of that task (pooled for a vector
    task, raw for a dense one)."""

    def __init__(self, backbone: Backbone, tasks: Sequence[TaskSpec]):
        super().__init__([t.name for t in tasks], backbone.input_shape)
        self.heads = nn.ModuleDict({t.name: build_head(backbone.output_shape, t, backbone.input_shape) for t in tasks})
        self._dense = {t.name: t.kind.dense for t in tasks}

    def read_out(self, features: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return apply_heads(self.heads, self._dense, {t: features[t] for t in self.task_names})


# -- cross-stitch --------------------------------------------------------------------------------


class CrossStitchUnit(nn.Module):
    """``x'_t = sum_s alpha[t, s] * x_s`` with one alpha per channel (Misra et al., CVPR 2016).

    Starts at ``alpha[t, t] = 0.9`` and ``alpha[t, s] = 0.1 / (T - 1)``: rows sum to 1, each column
    mostly keeps its own feature. The alphas are trained freely (not constrained), as in the paper.
    """

    def __init__(self, num_tasks: int, channels: int):
        super().__init__()
        other = 0.1 / (num_tasks - 1) if num_tasks > 1 else 0.0
        alpha = torch.full((num_tasks, num_tasks, channels), other)
        alpha[torch.arange(num_tasks), torch.arange(num_tasks)] = 1.0 - other * (num_tasks - 1)
        self.alpha = nn.Parameter(alpha)

    def forward(self, stacked: torch.Tensor) -> torch.Tensor:
        """``stacked``: ``(T, N, C, ...)``, one feature per column; returns the mixed ``(T, N, C, ...)``."""
        t, c = self.alpha.shape[0], self.alpha.shape[2]
        alpha = self.alpha.view(t, t, 1, c, *[1] * (stacked.dim() - 3))
        return (alpha * stacked.unsqueeze(0)).sum(1)


class CrossStitchNetwork(SoftNetwork):
    """One column (a full backbone copy) per task, ``columns.<task>.<block>``; a unit
    ``units.<block>`` after each block of ``units`` mixes the columns' outputs.

    ``shared_feature``: the stacked column outputs entering the last unit (every task reads them);
    ``None`` without units (independent columns share nothing).
    """

    def __init__(self, backbone: Backbone, tasks: Sequence[TaskSpec], units: Sequence[str]):
        super().__init__(backbone, tasks)
        every = range(len(backbone.block_names))
        self.columns = nn.ModuleDict({t: Segment(backbone, every) for t in self.task_names})
        out_shapes = dict(zip(backbone.block_names, (o for _, o in backbone.shapes)))
        self.units = nn.ModuleDict({b: CrossStitchUnit(len(tasks), out_shapes[b][0]) for b in units})
        self._block_names = list(backbone.block_names)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        self.shared_feature = None
        features = [x] * len(self.task_names)
        for name in self._block_names:
            features = [cast(Segment, self.columns[t])[name](f) for t, f in zip(self.task_names, features)]
            if name in self.units:
                stacked = torch.stack(features)
                self.shared_feature = stacked
                features = list(self.units[name](stacked).unbind(0))
        return self.read_out(dict(zip(self.task_names, features)))


# -- MTAN ----------------------------------------------------------------------------------------


class Attention(nn.Module):
    """A task's attention at one block (Liu et al., CVPR 2019): ``mask * shared`` with
    ``mask = sigmoid(net([shared, previous attended feature]))``.

    Images: 1x1 conv -> BN -> ReLU -> 1x1 conv -> sigmoid, the previous feature average-pooled to
    the block's spatial size and concatenated along channels. Vectors: Linear -> ReLU -> Linear ->
    sigmoid on the concatenated (pooled) features.
    """

    def __init__(self, shape: Shape, previous: Shape | None):
        super().__init__()
        self.image = is_image(shape)
        if self.image:
            c = shape[0]
            c_in = c + (previous[0] if previous is not None else 0)
            self.net = nn.Sequential(
                nn.Conv2d(c_in, c, 1), nn.BatchNorm2d(c), nn.ReLU(), nn.Conv2d(c, c, 1), nn.Sigmoid()
            )
        else:
            size = math.prod(shape)
            n_in = size + (pooled_size(previous) if previous is not None else 0)
            self.net = nn.Sequential(nn.Linear(n_in, size), nn.ReLU(), nn.Linear(size, size), nn.Sigmoid())

    def forward(self, shared: torch.Tensor, previous: torch.Tensor | None) -> torch.Tensor:
        if self.image:
            size = (shared.shape[-2], shared.shape[-1])
            parts = [shared] if previous is None else [shared, F.adaptive_avg_pool2d(previous, size)]
            mask = self.net(torch.cat(parts, 1))
        else:
            parts = [shared.flatten(1)] if previous is None else [shared.flatten(1), pool(previous)]
            mask = self.net(torch.cat(parts, 1)).view_as(shared)
        return mask * shared


class MTANNetwork(SoftNetwork):
    """One shared trunk ``trunk.<block>``, run once; per task an attention module
    ``attention.<task>.<block>`` at each block of ``attended`` (the last block included), fed by
    the task's previous attended feature. Heads read each task's last attended feature.

    ``shared_feature``: the trunk's last output.
    """

    def __init__(self, backbone: Backbone, tasks: Sequence[TaskSpec], attended: Sequence[str]):
        super().__init__(backbone, tasks)
        names = backbone.block_names
        self.trunk = Segment(backbone, range(len(names)))
        self.attention = nn.ModuleDict()
        for t in self.task_names:
            modules, previous = nn.ModuleDict(), None
            for name, (_, out_shape) in zip(names, backbone.shapes):
                if name in attended:
                    modules[name] = Attention(out_shape, previous)
                    previous = out_shape
            self.attention[t] = modules

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        attended: dict[str, torch.Tensor | None] = dict.fromkeys(self.task_names)
        for name, block in self.trunk.items():
            x = block(x)
            for t in self.task_names:
                modules = cast(nn.ModuleDict, self.attention[t])
                if name in modules:
                    attended[t] = modules[name](x, attended[t])
        self.shared_feature = x
        # The last block is always attended, so every task has its feature by now.
        return self.read_out(cast("dict[str, torch.Tensor]", attended))


# -- mixtures of experts -------------------------------------------------------------------------


class MMoENetwork(SoftNetwork):
    """MMoE (Ma et al., KDD 2018): shared bottom ``bottom.<block>`` (blocks before ``split``), then
    ``experts.<k>.<block>``, K towers over blocks ``split..B-1``, and per task a gate
    ``gates.<task>`` on the bottom's output: ``feature_t = sum_k g_tk * expert_k``.

    ``shared_feature``: the stacked expert outputs ``(N, K, ...)`` (every task mixes them).
    """

    def __init__(self, backbone: Backbone, tasks: Sequence[TaskSpec], experts: int, split: int):
        super().__init__(backbone, tasks)
        blocks = len(backbone.block_names)
        self.bottom = Segment(backbone, range(split))
        self.experts = nn.ModuleList(Segment(backbone, range(split, blocks)) for _ in range(experts))
        self.gates = nn.ModuleDict({t: Gate(backbone.shapes[split][0], experts) for t in self.task_names})

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        h = self.bottom(x)
        stacked = torch.stack([e(h) for e in self.experts], 1)
        self.shared_feature = stacked
        return self.read_out({t: mix(self.gates[t](h), stacked) for t in self.task_names})


def smooth_step(t: torch.Tensor, gamma: float) -> torch.Tensor:
    """DSelect-k's smooth-step (Hazimeh et al., NeurIPS 2021, eq. 4): 0 below ``-gamma/2``, 1 above
    ``gamma/2``, and the cubic ``-2 t^3 / gamma^3 + 3 t / (2 gamma) + 1/2`` between (C1-continuous)."""
    cubic = -2 * t**3 / gamma**3 + 3 * t / (2 * gamma) + 0.5
    return torch.where(t <= -gamma / 2, torch.zeros_like(t), torch.where(t >= gamma / 2, torch.ones_like(t), cubic))


def selector_weights(z: torch.Tensor, experts: int, gamma: float) -> torch.Tensor:
    """The distribution over ``experts`` of each selector of DSelect-k (eq. 5): for codes ``z`` of
    shape ``(..., m)`` with ``m = ceil(log2(experts))``, expert i gets ``prod_j S(z_j)`` over the bits
    of i that are 1 times ``prod_j (1 - S(z_j))`` over those that are 0. When ``experts`` is not a
    power of two, the codes past the last expert are dropped and the rest renormalised."""
    m = z.shape[-1]
    codes = torch.arange(2**m, device=z.device)
    bits = ((codes[:, None] >> torch.arange(m, device=z.device)) & 1).to(z.dtype)  # (2^m, m)
    s = smooth_step(z, gamma).unsqueeze(-2)  # (..., 1, m)
    r = (bits * s + (1 - bits) * (1 - s)).prod(-1)[..., :experts]  # (..., experts)
    return r / r.sum(-1, keepdim=True).clamp_min(1e-12) if experts < 2**m else r


class DSelectGate(nn.Module):
    """DSelect-k's gate (Hazimeh et al., NeurIPS 2021, per-example form): ``k`` selectors, each a
    binary code ``z_i = Linear(pool(x))`` smoothed into a distribution over the experts, mixed by
    ``softmax(Linear(pool(x)))``; rows sum to 1 and become exactly sparse once the codes saturate."""

    def __init__(self, in_shape: Shape, experts: int, k: int, gamma: float = 1.0):
        super().__init__()
        self.experts, self.k, self.gamma = experts, k, gamma
        self.bits = max(1, math.ceil(math.log2(experts)))
        self.codes = nn.Linear(pooled_size(in_shape), k * self.bits)
        self.mixture = nn.Linear(pooled_size(in_shape), k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = pool(x)
        z = self.codes(p).view(p.shape[0], self.k, self.bits)
        r = selector_weights(z, self.experts, self.gamma)  # (N, k, experts)
        return (torch.softmax(self.mixture(p), dim=-1).unsqueeze(-1) * r).sum(1)


class DSelectKNetwork(SoftNetwork):
    """DSelect-k (Hazimeh et al., NeurIPS 2021): MMoE's structure (shared bottom, ``experts.<k>``
    towers over blocks ``split..B-1``) with a :class:`DSelectGate` per task (``gates.<task>``).

    ``shared_feature``: the stacked expert outputs.
    """

    def __init__(self, backbone: Backbone, tasks: Sequence[TaskSpec], experts: int, k: int, split: int, gamma: float):
        super().__init__(backbone, tasks)
        blocks = range(split, len(backbone.block_names))
        self.bottom = Segment(backbone, range(split))
        self.experts = nn.ModuleList(Segment(backbone, blocks) for _ in range(experts))
        self.gates = nn.ModuleDict(
            {t: DSelectGate(backbone.shapes[split][0], experts, k, gamma) for t in self.task_names}
        )

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        h = self.bottom(x)
        stacked = torch.stack([e(h) for e in self.experts], 1)
        self.shared_feature = stacked
        return self.read_out({t: mix(self.gates[t](h), stacked) for t in self.task_names})


class CGCNetwork(SoftNetwork):
    """CGC, Customized Gate Control (Tang et al., RecSys 2020, Section 4.2): shared bottom
    ``bottom.<block>``, then ``shared_experts.<k>.<block>`` and, per task,
    ``task_experts.<task>.<k>.<block>``, towers over blocks ``split..B-1``; task t's gate
    ``gates.<task>`` on the bottom's output mixes its own experts and the shared ones.

    ``shared_feature``: the stacked shared-expert outputs (every task's gate mixes them).
    """

    def __init__(
        self, backbone: Backbone, tasks: Sequence[TaskSpec], shared_experts: int, task_experts: int, split: int
    ):
        super().__init__(backbone, tasks)
        blocks = range(split, len(backbone.block_names))
        self.bottom = Segment(backbone, range(split))
        self.shared_experts = nn.ModuleList(Segment(backbone, blocks) for _ in range(shared_experts))
        self.task_experts = nn.ModuleDict(
            {t: nn.ModuleList(Segment(backbone, blocks) for _ in range(task_experts)) for t in self.task_names}
        )
        self.gates = nn.ModuleDict(
            {t: Gate(backbone.shapes[split][0], task_experts + shared_experts) for t in self.task_names}
        )

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        h = self.bottom(x)
        shared = torch.stack([e(h) for e in self.shared_experts], 1)
        self.shared_feature = shared
        features = {}
        for t in self.task_names:
            own = torch.stack([e(h) for e in cast(nn.ModuleList, self.task_experts[t])], 1)
            features[t] = mix(self.gates[t](h), torch.cat([own, shared], 1))
        return self.read_out(features)


class ExtractionLayer(nn.Module):
    """One CGC extraction layer of PLE (Tang et al., RecSys 2020) at backbone block ``b``.

    ``shared_experts`` copies of the block read the shared path's input; ``task_experts.<task>``
    copies read the task's input. Task t's gate (on the task's input) mixes its own experts and the
    shared ones; the shared gate (on the shared input; absent at the last layer) mixes all experts
    into the next layer's shared input.
    """

    def __init__(self, backbone: Backbone, b: int, tasks: Sequence[str], n_shared: int, n_task: int, last: bool):
        super().__init__()
        in_shape = backbone.shapes[b][0]
        self.shared_experts = nn.ModuleList(backbone.build_block(b) for _ in range(n_shared))
        self.task_experts = nn.ModuleDict(
            {t: nn.ModuleList(backbone.build_block(b) for _ in range(n_task)) for t in tasks}
        )
        self.task_gates = nn.ModuleDict({t: Gate(in_shape, n_task + n_shared) for t in tasks})
        self.shared_gate = None if last else Gate(in_shape, n_shared + len(tasks) * n_task)

    def forward(self, shared: torch.Tensor, inputs: Mapping[str, torch.Tensor]):
        """Returns (the next shared input or ``None``, ``{task: feature}``, the stacked shared experts)."""
        shared_out = torch.stack([e(shared) for e in self.shared_experts], 1)
        own = {
            t: torch.stack([e(inputs[t]) for e in cast(nn.ModuleList, experts)], 1)
            for t, experts in self.task_experts.items()
        }
        features = {t: mix(self.task_gates[t](inputs[t]), torch.cat([own[t], shared_out], 1)) for t in own}
        next_shared = None
        if self.shared_gate is not None:
            next_shared = mix(self.shared_gate(shared), torch.cat([shared_out, *own.values()], 1))
        return next_shared, features, shared_out


class PLENetwork(SoftNetwork):
    """PLE: shared bottom ``bottom.<block>``, then one :class:`ExtractionLayer` ``layers.<block>``
    per block from ``split`` on; heads read the last layer's task features.

    ``shared_feature``: the last layer's stacked shared-expert outputs (every task's gate mixes them).
    """

    def __init__(
        self, backbone: Backbone, tasks: Sequence[TaskSpec], shared_experts: int, task_experts: int, split: int
    ):
        super().__init__(backbone, tasks)
        names = backbone.block_names
        self.bottom = Segment(backbone, range(split))
        self.layers = nn.ModuleDict(
            {
                names[b]: ExtractionLayer(
                    backbone, b, self.task_names, shared_experts, task_experts, b == len(names) - 1
                )
                for b in range(split, len(names))
            }
        )

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        shared = self.bottom(x)
        features = dict.fromkeys(self.task_names, shared)
        for layer in self.layers.values():
            shared, features, self.shared_feature = layer(shared, features)
        return self.read_out(features)


# -- residual adapters ---------------------------------------------------------------------------


class ResidualAdapter(nn.Module):
    """Series residual adapter (Rebuffi et al., NeurIPS 2017): ``x + BN(conv1x1(x))`` on images,
    ``x + Linear(x)`` on vectors. Starts as the identity (BN scale, resp. the linear map, zero)."""

    def __init__(self, shape: Shape):
        super().__init__()
        self.net: nn.Module
        if is_image(shape):
            conv = nn.Conv2d(shape[0], shape[0], 1, bias=False)
            norm = nn.BatchNorm2d(shape[0])
            self.net = nn.Sequential(conv, norm)
            nn.init.zeros_(norm.weight)
        else:
            size = math.prod(shape)
            linear = nn.Linear(size, size)
            self.net = linear
            nn.init.zeros_(linear.weight)
            nn.init.zeros_(linear.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + (self.net(x) if x.dim() == 4 else self.net(x.flatten(1)).view_as(x))


class AdapterNetwork(SoftNetwork):
    """One shared trunk ``trunk.<block>``; after each block of ``adapted`` every task has its own
    adapter ``adapters.<block>.<task>``. The trunk runs once up to the first adapted block; after
    it each task runs the shared blocks on its own feature. No adapter: hard sharing.

    ``shared_feature``: the trunk's output at the first adapted block (else its last output).
    """

    def __init__(self, backbone: Backbone, tasks: Sequence[TaskSpec], adapted: Sequence[str]):
        super().__init__(backbone, tasks)
        out_shapes = dict(zip(backbone.block_names, (o for _, o in backbone.shapes)))
        self.trunk = Segment(backbone, range(len(backbone.block_names)))
        self.adapters = nn.ModuleDict(
            {b: nn.ModuleDict({t: ResidualAdapter(out_shapes[b]) for t in self.task_names}) for b in adapted}
        )

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        features: dict[str, torch.Tensor] | None = None  # per task, once the first adapter is passed
        for name, block in self.trunk.items():
            if features is None:
                x = block(x)
                if name in self.adapters:
                    self.shared_feature = x
                    adapters = cast(nn.ModuleDict, self.adapters[name])
                    features = {t: adapters[t](x) for t in self.task_names}
            else:
                features = {t: block(f) for t, f in features.items()}
                if name in self.adapters:
                    adapters = cast(nn.ModuleDict, self.adapters[name])
                    features = {t: adapters[t](f) for t, f in features.items()}
        if features is None:
            self.shared_feature = x
            features = dict.fromkeys(self.task_names, x)
        return self.read_out(features)
