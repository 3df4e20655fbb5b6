"""Learning to Branch: each trial learns its sharing tree with Gumbel-softmax, then retrains it."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from ..config import as_int, positive_float
from ..errors import ConfigError, show
from .base import FAMILIES, Architecture, Family
from .soft import count_choices

LOGIT_LR = 0.01  # Adam on the branching logits
TEMPERATURE_DECAY = 0.965  # per learning epoch, as AdaShare's schedule


@FAMILIES.register("learn_to_branch")
class LearnToBranch(Family):
    """Learning to Branch: a tree learned inside the trial by Gumbel-softmax over branching choices.

    Learning to Branch (Guo, Lee & Ulbricht, ICML 2020). A supernet has ``width`` candidate nodes
    per block; each node of block b picks its parent among block b - 1's nodes and each task picks a
    node of the last block, by hard Gumbel-softmax over learned logits, trained jointly with the
    weights on the train split for ``learn_epochs`` epochs. The most probable choices give a tree,
    which is then trained from scratch as the trial's candidate; the choices are stored (trial
    attribute ``learned``) and exported, so the tree is rebuilt without learning again.

    Args:
        width: candidate nodes per block (a count or a list of choices, default [2, 3]; trial
            parameter ``learn_to_branch.width``). Each task can then have its own branch from any
            block on when ``width`` >= the number of tasks.
        temperature: the initial Gumbel-softmax temperature, > 0 (default 5.0); multiplied by
            0.965 each epoch.
        learn_epochs: supernet epochs, >= 1 (default 3).

    See docs/families.md#learn_to_branch.
    """

    citation = "Guo et al., ICML 2020"
    learned = True
    learns = "the tree"

    def __init__(self, width: int | Sequence[int] = (2, 3), temperature: float = 5.0, learn_epochs: int = 3):
        self.width = count_choices(width, "width")
        self.temperature = positive_float(temperature, "temperature")
        self.learn_epochs = as_int(learn_epochs, "learn_epochs", 1, bound="epochs")

    def hyperparameters(self):
        return {"width": self.width, "temperature": self.temperature, "learn_epochs": self.learn_epochs}

    def sample(self, trial, tasks, backbone):
        settings = {
            "width": trial.suggest_categorical(f"{self.name}.width", self.width),
            "temperature": self.temperature,
            "learn_epochs": self.learn_epochs,
            "blocks": list(backbone.block_names),
            "tasks": list(tasks),
        }
        return Architecture(self.name, None, settings)

    def with_learned(self, architecture, learned):
        s = architecture.settings
        parents, task_nodes = check_learned(learned, s["tasks"], s["blocks"], int(s["width"]))
        paths = {}
        for t in s["tasks"]:
            node, path = task_nodes[t], []
            for b in range(len(s["blocks"]) - 1, -1, -1):
                path.append(str(node))
                if b:
                    node = parents[s["blocks"][b]][node]
            paths[t] = tuple(reversed(path))
        return Architecture(self.name, paths, s, dict(learned))

    def learn(self, candidate, device, seed, on_epoch=None):
        return learn_tree(candidate, device, seed, on_epoch)

    def describe(self, architecture, block_names):
        s = architecture.settings
        if architecture.learned is None:
            return [
                f"tree learned inside the trial (Gumbel-softmax over {s['width']} nodes per block, "
                f"{s['learn_epochs']} epochs, temperature {s['temperature']:g})"
            ]
        return super().describe(architecture, block_names)


def check_learned(
    learned: Any, tasks: Sequence[str], blocks: Sequence[str], width: int
) -> tuple[dict[str, list[int]], dict[str, int]]:
    """The parent of every node after block 0 and the node of every task, each checked."""
    if not isinstance(learned, Mapping):
        raise ConfigError("learned", f"expected a mapping with `parents` and `task_nodes`, found {show(learned)}")
    parents, task_nodes = learned.get("parents"), learned.get("task_nodes")
    if not isinstance(parents, Mapping) or set(parents) != set(blocks[1:]):
        found = list(parents) if isinstance(parents, Mapping) else parents
        raise ConfigError(
            "learned.parents",
            f"expected one entry per block after the first ({', '.join(blocks[1:])}), found {show(found)}",
        )
    if not isinstance(task_nodes, Mapping) or set(task_nodes) != set(tasks):
        found = list(task_nodes) if isinstance(task_nodes, Mapping) else task_nodes
        raise ConfigError(
            "learned.task_nodes", f"expected one entry per task ({', '.join(tasks)}), found {show(found)}"
        )

    def node(v: Any, where: str) -> int:
        if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < width:
            raise ConfigError(where, f"expected a node index in [0, {width}), found {show(v)}")
        return v

    out = {}
    for b in blocks[1:]:
        row = parents[b]
        if not isinstance(row, list) or len(row) != width:
            raise ConfigError(f"learned.parents.{b}", f"expected a list of {width} parent indices, found {show(row)}")
        out[b] = [node(v, f"learned.parents.{b}[{i}]") for i, v in enumerate(row)]
    return out, {t: node(task_nodes[t], f"learned.task_nodes.{t}") for t in tasks}


def learn_tree(candidate, device, seed: int, on_epoch=None) -> Architecture:
    """Train the branching supernet of ``candidate`` on its train split and read the most probable
    tree (seeded by ``seed``: batch order, initialisation and Gumbel noise). Raises
    :class:`~mtlsearch.errors.NonFiniteLossError` when a loss becomes NaN or inf."""
    import torch

    from ..models.branching import BranchingSupernet
    from ..training import EpochEnd, batches, check_finite, make_optimizer

    problem, arch, training = candidate.problem, candidate.architecture, candidate.training
    s = arch.settings
    tasks, names = candidate.tasks, candidate.task_names
    epochs = int(s["learn_epochs"])
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    net = BranchingSupernet(problem.backbone, tasks, int(s["width"])).to(device).train()
    weights = make_optimizer(training["optimizer"], net.weight_parameters(), training["lr"], training["weight_decay"])
    logits = torch.optim.Adam([net.parent_logits, net.task_logits], lr=LOGIT_LR)
    for e in range(epochs):
        start, temperature = time.perf_counter(), float(s["temperature"]) * TEMPERATURE_DECAY**e
        running, steps = torch.zeros(len(tasks), device=device), 0
        for x, y in batches(problem.data.train, training["batch_size"], device, shuffle=True, generator=generator):
            weights.zero_grad(set_to_none=True)
            logits.zero_grad(set_to_none=True)
            out = net(x, temperature)
            losses = torch.stack([t.kind.loss(out[t.name], y[t.name]) for t in tasks])
            losses.sum().backward()
            weights.step()
            logits.step()
            running += losses.detach()
            steps += 1
        mean = (running / max(steps, 1)).tolist()
        check_finite(names, mean, f"learning epoch {e + 1}/{epochs}", training, who="learn_to_branch")
        if on_epoch is not None:
            on_epoch(EpochEnd(e + 1, epochs, float(sum(mean)), dict(zip(names, mean)), time.perf_counter() - start))
    parent_p, task_p = net.parent_probabilities()
    blocks = s["blocks"]
    learned = {
        "parents": {blocks[b + 1]: [int(v) for v in parent_p[b].argmax(-1)] for b in range(len(blocks) - 1)},
        "task_nodes": {t: int(task_p[i].argmax()) for i, t in enumerate(names)},
        "parent_probability": {
            blocks[b + 1]: [[round(float(v), 6) for v in row] for row in parent_p[b]] for b in range(len(blocks) - 1)
        },
        "task_probability": {t: [round(float(v), 6) for v in task_p[i]] for i, t in enumerate(names)},
        "epochs": epochs,
    }
    return candidate.family.with_learned(arch, learned)
