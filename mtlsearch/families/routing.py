"""Routing networks: every block has K candidate modules and each task picks one per block."""

from __future__ import annotations

from ..config import as_int
from .base import FAMILIES, Architecture, Family, block_table, sharing_lines


@FAMILIES.register("routing")
class Routing(Family):
    """Routing networks (Rosenbaum, Klinger and Riemer, ICLR 2018, arXiv:1711.01239).

    Each block ``b`` has ``modules`` (K) independent copies ``m0 .. m{K-1}``; task ``t`` picks the
    copy ``routing.<task>.<block>`` it runs at ``b`` (a categorical trial parameter, where the paper
    learns the router by reinforcement). Routes may part and meet again; tasks whose routes agree
    up to block ``b`` share all computation up to ``b`` (the network computes each distinct route
    prefix once). ``modules: 1`` is hard sharing. See docs/families.md#routing.
    """

    citation = "Rosenbaum et al., ICLR 2018"

    def __init__(self, modules: int = 2):
        self.modules = as_int(modules, "modules", 1, bound="modules")

    def hyperparameters(self):
        return {"modules": self.modules}

    def sample(self, trial, tasks, backbone):
        choices = [f"m{k}" for k in range(self.modules)]
        return Architecture(
            self.name,
            {
                t: tuple(
                    "m0" if self.modules == 1 else trial.suggest_categorical(f"routing.{t}.{b}", choices)
                    for b in backbone.block_names
                )
                for t in tasks
            },
        )

    def describe(self, architecture, block_names):
        return [
            "route per task (module of each block):",
            *block_table(architecture.paths, block_names),
            "computed together:",
            *sharing_lines(architecture, block_names),
        ]
