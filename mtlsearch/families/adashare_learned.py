"""AdaShare layer gating, learned: each trial learns its run/skip policy with Gumbel-softmax."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..config import Hyperparameter, as_int, nonnegative_float, parse_hyperparameters, positive_float
from ..errors import ConfigError, show
from .adashare import RUN, SKIP, check_block_list, gateable_blocks, gating_paths, gating_table
from .base import FAMILIES, Architecture, Family, block_table


def _epochs(minimum: int):
    return lambda v, path: as_int(v, path, minimum, bound="epochs")


GATING = {
    "sparsity_weight": Hyperparameter({"low": 1e-3, "high": 1e-1, "log": True}, nonnegative_float),
    "sharing_weight": Hyperparameter({"low": 1e-3, "high": 1e-1, "log": True}, nonnegative_float),
    "temperature": Hyperparameter(5.0, positive_float),
    "warmup_epochs": Hyperparameter(2, _epochs(0), integer=True),
    "policy_epochs": Hyperparameter(5, _epochs(1), integer=True),
}


@FAMILIES.register("adashare_learned")
class AdaShareLearned(Family):
    """AdaShare with the run/skip policy learned inside the trial by Gumbel-softmax.

    AdaShare (Sun et al., 2020, arXiv:1911.12423). :meth:`learn` learns the policy on the train
    split and samples the final one; the candidate is then retrained from scratch on it. Each
    gating hyperparameter is fixed, a list of choices or a ``{low, high, log}`` range, drawn as
    trial parameter ``adashare_learned.<name>``.

    Args:
        blocks: the gateable blocks (default: every block whose input and output shapes match).
        sparsity_weight, sharing_weight: the regularisers' weights, >= 0 (default: each searched
            on ``[1e-3, 1e-1]``, log).
        temperature: initial Gumbel-softmax temperature, > 0 (default 5, the paper's).
        warmup_epochs: weight-only epochs, >= 0 (default 2).
        policy_epochs: epochs alternating weight and policy updates, >= 1 (default 5).

    See docs/families.md#adashare-learned.
    """

    citation = "Sun et al., NeurIPS 2020"
    learned = True
    learns = "the architecture's policy"

    def __init__(
        self,
        blocks: list[str] | None = None,
        sparsity_weight: Any = GATING["sparsity_weight"].default,
        sharing_weight: Any = GATING["sharing_weight"].default,
        temperature: Any = GATING["temperature"].default,
        warmup_epochs: Any = GATING["warmup_epochs"].default,
        policy_epochs: Any = GATING["policy_epochs"].default,
    ):
        self.blocks = check_block_list(blocks)
        given = dict(
            sparsity_weight=sparsity_weight,
            sharing_weight=sharing_weight,
            temperature=temperature,
            warmup_epochs=warmup_epochs,
            policy_epochs=policy_epochs,
        )
        self.specs = parse_hyperparameters(GATING, given, "")

    def hyperparameters(self):
        return {"blocks": self.blocks, **{k: spec.to_raw() for k, spec in self.specs.items()}}

    def check(self, backbone, tasks):
        gateable_blocks(self.blocks, backbone, self.name)

    def sample(self, trial, tasks, backbone):
        gated = set(gateable_blocks(self.blocks, backbone, self.name))
        settings = {
            "blocks": list(backbone.block_names),
            "gated": [b for b in backbone.block_names if b in gated],
            "tasks": list(tasks),
            **{k: spec.suggest(trial, f"{self.name}.{k}") for k, spec in self.specs.items()},
        }
        return Architecture(self.name, None, settings)

    def with_learned(self, architecture, learned):
        settings = architecture.settings
        policy = check_learned(learned, settings["tasks"], settings["blocks"], settings["gated"])
        runs = {t: [v == RUN for v in policy[t]] for t in settings["tasks"]}
        return Architecture(self.name, gating_paths(runs, settings["blocks"]), settings, dict(learned))

    def learn(self, candidate, device, seed, on_epoch=None):
        from .adashare_learning import learn_architecture  # it trains: imported only when learning

        return learn_architecture(candidate, device, seed, on_epoch)

    def describe(self, architecture, block_names):
        s = architecture.settings
        if architecture.learned is None:
            values = ", ".join(f"{k} {s[k]:g}" for k in GATING)
            return [f"run/skip policy of {', '.join(s['gated'])} learned inside the trial (Gumbel-softmax): {values}"]
        probs = architecture.learned["select_probability"]
        return [
            *gating_table(architecture, block_names),
            "learned select probability:",
            *block_table({t: [f"{p:.2f}" for p in ps] for t, ps in probs.items()}, block_names),
        ]


def check_learned(learned: Any, tasks: list[str], blocks: list[str], gated: list[str]) -> dict[str, list[str]]:
    """The policy of a learned record, every entry checked: ``{task: [run|skip per block]}``
    (only gated blocks may be skipped), select probabilities in [0, 1] of the same shape."""
    if not isinstance(learned, Mapping) or not isinstance(learned.get("policy"), Mapping):
        raise ConfigError("learned.policy", f"expected a mapping {{task: [run|skip per block]}}, found {show(learned)}")
    for key in ("policy", "select_probability"):
        record = learned.get(key)
        if not isinstance(record, Mapping) or set(record) != set(tasks):
            found = list(record) if isinstance(record, Mapping) else record
            raise ConfigError(
                f"learned.{key}", f"expected one entry per task ({', '.join(tasks)}), found {show(found)}"
            )
        for t in tasks:
            row = record[t]
            if not isinstance(row, list) or len(row) != len(blocks):
                raise ConfigError(
                    f"learned.{key}.{t}",
                    f"expected a list of {len(blocks)} entries (one per block: {', '.join(blocks)}), found {show(row)}",
                )
            for i, v in enumerate(row):
                where = f"learned.{key}.{t}[{i}]"
                if key == "policy" and v not in (RUN, SKIP):
                    raise ConfigError(where, f"expected `{RUN}` or `{SKIP}`, found {show(v)}")
                if key == "policy" and v == SKIP and blocks[i] not in gated:
                    raise ConfigError(
                        where,
                        f"block `{blocks[i]}` is not gated and always runs, found `{SKIP}`; "
                        f"gated blocks: {', '.join(gated)}",
                    )
                if key == "select_probability" and (
                    isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= 1
                ):
                    raise ConfigError(where, f"expected a number in [0, 1], found {show(v)}")
    return {t: list(learned["policy"][t]) for t in tasks}
