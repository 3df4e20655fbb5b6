"""AdaShare's policy learning inside a trial (Sun et al., 2020, arXiv:1911.12423).

Reached through :meth:`~mtlsearch.families.base.Family.learn` of ``adashare_learned``. Only the
candidate's train split is read. See docs/families.md#the-learning-schedule.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sized
from typing import cast

import torch
from torch.utils.data import Dataset, Subset

from ..data import TensorMTLDataset
from ..errors import NonFiniteLossError
from ..models.gated import GatedSupernet, sharing_loss, sparsity_loss
from ..training import EpochEnd, batches, make_optimizer
from .adashare import RUN, SKIP
from .base import Architecture

POLICY_LR = 0.01  # Adam on the policy logits, as in the paper's code
TEMPERATURE_DECAY = 0.965  # per policy epoch, as in the paper


def split_halves(dataset: Dataset, generator: torch.Generator) -> tuple[Dataset, Dataset]:
    """Two disjoint random halves of ``dataset``: one trains the weights, the other the policy."""
    n = len(cast(Sized, dataset))  # a split has a length (mtlsearch.data.base.MTLData)
    if n < 2:
        raise ValueError(f"policy learning needs at least 2 training samples to split, found {n}")
    order = torch.randperm(n, generator=generator)
    first, second = order[: n // 2], order[n // 2 :]
    if isinstance(dataset, TensorMTLDataset):
        inputs, targets = dataset.inputs, dataset.targets
        return (
            TensorMTLDataset(inputs[first], {k: v[first] for k, v in targets.items()}),
            TensorMTLDataset(inputs[second], {k: v[second] for k, v in targets.items()}),
        )
    return Subset(dataset, first.tolist()), Subset(dataset, second.tolist())


def learn_architecture(
    candidate, device: torch.device, seed: int, on_epoch: Callable[[EpochEnd], None] | None = None
) -> Architecture:
    """AdaShare policy learning (Sun et al., 2020) for an ``adashare_learned`` candidate.

    Warm-up, then ``policy_epochs`` epochs alternating weight and policy passes under the
    top-down curriculum, then one Bernoulli draw of the final policy (seeded by ``seed``).

    Args:
        candidate: a :class:`~mtlsearch.problem.Candidate` of the ``adashare_learned`` family.
        device: where the supernet trains.
        seed: seeds the data halves, batch order, initialisation, Gumbel noise and final draw.
        on_epoch: called with an :class:`EpochEnd` after every epoch (warm-up and policy epochs
            numbered together), with the weight pass's training loss.

    Returns ``family.with_learned(architecture, learned)``, ``learned`` holding ``policy``,
    ``select_probability`` and ``epochs``. Raises :class:`~mtlsearch.errors.NonFiniteLossError`
    when a loss becomes NaN or inf (checked once per epoch). See
    docs/families.md#the-learning-schedule.
    """
    problem, arch, training = candidate.problem, candidate.architecture, candidate.training
    s = arch.settings
    tasks, names = candidate.tasks, candidate.task_names
    warmup, policy_epochs = s["warmup_epochs"], s["policy_epochs"]
    generator = torch.Generator().manual_seed(seed)
    weight_set, policy_set = split_halves(problem.data.train, generator)
    torch.manual_seed(seed)  # supernet initialisation and the Gumbel noise
    net = GatedSupernet(problem.backbone, tasks, s["gated"]).to(device).train()
    G = len(s["gated"])
    weights = make_optimizer(training["optimizer"], net.weight_parameters(), training["lr"], training["weight_decay"])
    policy_optimizer = torch.optim.Adam([net.logits], lr=POLICY_LR)
    total_epochs = warmup + policy_epochs

    def losses_of(x, y, policy):
        out = net(x, policy)
        return torch.stack([t.kind.loss(out[t.name], y[t.name]) for t in tasks])

    def check(running: torch.Tensor, epoch: int, what: str, labels: list[str]) -> list[float]:
        mean = running.tolist()
        bad = [(n, v) for n, v in zip(labels, mean) if not math.isfinite(v)]
        if bad:
            raise NonFiniteLossError(
                f"adashare_learned: {bad[0][0]} became {bad[0][1]} in {what} of learning epoch {epoch}/{total_epochs} "
                f"(lr = {training['lr']:g}, optimizer = {training['optimizer']})"
            )
        return mean

    def weight_pass(epoch: int, what: str, policy_of: Callable[[], torch.Tensor | None]) -> None:
        start = time.perf_counter()
        running, steps = torch.zeros(len(tasks), device=device), 0
        for x, y in batches(weight_set, training["batch_size"], device, shuffle=True, generator=generator):
            weights.zero_grad(set_to_none=True)
            losses = losses_of(x, y, policy_of())
            losses.sum().backward()
            weights.step()
            running += losses.detach()
            steps += 1
        mean = check(running / max(steps, 1), epoch, what, [f"loss of task `{n}`" for n in names])
        if on_epoch is not None:
            on_epoch(
                EpochEnd(epoch, total_epochs, float(sum(mean)), dict(zip(names, mean)), time.perf_counter() - start)
            )

    def policy_pass(epoch: int, first: int, temperature: float) -> None:
        depths = net.depths[first:]
        running, steps = torch.zeros(len(tasks) + 1, device=device), 0
        for x, y in batches(policy_set, training["batch_size"], device, shuffle=True, generator=generator):
            policy_optimizer.zero_grad(set_to_none=True)
            losses = losses_of(x, y, net.sample_policy(temperature, first))
            alpha = net.select_probabilities()[:, first:]
            total = (
                losses.sum()
                + s["sparsity_weight"] * sparsity_loss(alpha)
                + s["sharing_weight"] * sharing_loss(alpha, depths, len(net.block_names))
            )
            total.backward(inputs=[net.logits])  # the weights stay as they are
            policy_optimizer.step()
            running += torch.cat([losses.detach(), total.detach()[None]])
            steps += 1
        check(
            running / max(steps, 1),
            epoch,
            "the policy pass",
            [*(f"loss of task `{n}`" for n in names), "the policy loss"],
        )

    for e in range(warmup):
        weight_pass(e + 1, "warm-up", lambda: None)
    for e in range(policy_epochs):
        first = G - min(e + 1, G)  # curriculum: gate the top blocks first
        temperature = s["temperature"] * TEMPERATURE_DECAY**e
        weight_pass(warmup + e + 1, "the weight pass", lambda: net.sample_policy(temperature, first).detach())
        policy_pass(warmup + e + 1, first, temperature)

    with torch.no_grad():
        alpha = net.select_probabilities().cpu().double()
        alpha[:, : G - min(policy_epochs, G)] = 1.0  # never gated by the curriculum: runs
        runs = torch.bernoulli(alpha, generator=torch.Generator().manual_seed(seed)).bool().tolist()
    column = {b: g for g, b in enumerate(s["gated"])}
    learned = {
        "policy": {
            t: [RUN if column.get(b) is None or runs[k][column[b]] else SKIP for b in s["blocks"]]
            for k, t in enumerate(names)
        },
        "select_probability": {
            t: [1.0 if column.get(b) is None else round(float(alpha[k, column[b]]), 6) for b in s["blocks"]]
            for k, t in enumerate(names)
        },
        "epochs": {"warmup": warmup, "policy": policy_epochs},
    }
    return candidate.family.with_learned(arch, learned)
