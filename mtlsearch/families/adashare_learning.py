"""Learning an architecture inside a trial, for families with ``learned = True``.

:func:`learn_architecture` runs AdaShare's policy learning (Sun et al., NeurIPS 2020,
arXiv:1911.12423) on the candidate's train split and returns the final architecture; the search
then retrains that architecture from scratch, as the paper does. Validation and test data are
never read here.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

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
    """Two disjoint random halves of ``dataset``: one trains the weights, the other the policy
    (the paper holds out part of the training data for the policy, so it is not fit to data the
    weights have memorised)."""
    n = len(dataset)
    if n < 2:
        raise ValueError(f"policy learning needs at least 2 training samples to split, found {n}")
    order = torch.randperm(n, generator=generator)
    halves = order[: n // 2], order[n // 2 :]
    if isinstance(dataset, TensorMTLDataset):
        return tuple(TensorMTLDataset(dataset.inputs[i], {k: v[i] for k, v in dataset.targets.items()}) for i in halves)
    return tuple(Subset(dataset, i.tolist()) for i in halves)


def learn_architecture(
    candidate, device: torch.device, seed: int, on_epoch: Callable[[EpochEnd], None] | None = None
) -> Architecture:
    """AdaShare policy learning (Sun et al., 2020) for an ``adashare_learned`` candidate.

    1. Warm-up: ``warmup_epochs`` epochs training the supernet's weights with every block run
       (equal task weights, the candidate's optimizer, learning rate, weight decay, batch size).
    2. ``policy_epochs`` epochs, each one pass over the weight half updating the weights under
       policies drawn by straight-through hard Gumbel-softmax, then one pass over the policy half
       updating only the logits (Adam, lr 0.01) on ``sum_t L_t + sparsity_weight * sparsity +
       sharing_weight * sharing`` (:mod:`mtlsearch.models.gated`). The temperature of policy
       epoch ``e`` (0-based) is ``temperature * 0.965**e``. Curriculum from the top: in epoch
       ``e`` only the last ``min(e + 1, G)`` gated blocks are gated (and regularised); the
       others run.
    3. The final policy: each task runs each gated block with its learned probability ``alpha``
       (one Bernoulli draw, generator seeded by ``seed``); a gated block the curriculum never
       reached runs, and its recorded probability is 1, as for blocks that are not gated.

    Returns ``family.with_learned(architecture, learned)`` with ``learned = {"policy": {task: [run
    | skip per block]}, "select_probability": {task: [alpha per block]}, "epochs": {"warmup": w,
    "policy": p}}``. Raises :class:`~mtlsearch.errors.NonFiniteLossError` when a loss becomes NaN
    or inf (checked once per epoch). ``on_epoch`` gets an :class:`EpochEnd` after every epoch,
    numbered over warm-up and policy epochs together, with the weight pass's training loss.
    """
    problem, arch, training = candidate.problem, candidate.architecture, candidate.training
    s = arch.settings
    tasks, names = problem.tasks, [t.name for t in problem.tasks]
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
