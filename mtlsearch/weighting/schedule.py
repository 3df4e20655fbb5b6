"""Task schedules: the fourth extension point of a training step, deciding per step which tasks'
losses are back-propagated (task scheduling in Crawshaw's survey, 2020, arXiv:2009.09796).

Contract of :class:`TaskSchedule` (a plain object, like an aggregator):

* ``__init__(tasks, **hyperparameters)`` validates its hyperparameters (raising
  :class:`~mtlsearch.errors.ConfigError`, see :func:`~mtlsearch.weighting.hyper.hyperparameter_error`)
  and shows them in ``repr``; ``tasks`` are the task names in the trainer's order.
* ``setup(sizes, seed)``: called by the trainer before the first step with ``sizes[t]``, the
  number of training samples labelled for task t, and the training seed. It seeds the schedule's
  own ``torch.Generator`` (never torch's global one), so a schedule changes no other random stream
  and a resumed run draws what the uninterrupted run would. A schedule used without it behaves as
  if set up with equal sizes and seed 0.
* ``select(step)``: the tasks whose losses count in step ``step`` (0, 1, ... over the whole run),
  as T booleans in task order, at least one true. It may draw from its generator.
* ``observe(losses)``: called after every step with the T detached losses of that step (every
  task's, selected or not), for schedules that follow the losses.
* ``state_dict()`` / ``load_state_dict(state)``: its generator, counters and loss history
  (tensors and numbers only), saved in the per-epoch checkpoints.

The trainer calls :meth:`TaskSchedule.next_mask`, which checks the mask and counts the steps.
Schedules are searched like strategies: ``search_space.schedules`` (trial parameter
``schedule``) and a section per schedule for its hyperparameters. How the trainer applies a mask
to weightings and aggregators is in docs/tasks.md#task-scheduling.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import torch

from ..config import ParamSpec
from ..errors import ConfigError
from ..registry import Registry
from .hyper import Searchable, check_number, hyperparameter_error

# Added to the training seed, so the schedule's stream differs from the shuffling generator's.
SEED_OFFSET = 7_919


class TaskSchedule(Searchable, ABC):
    """Base of every task schedule (see the module docstring for the contract)."""

    #: False for the schedule that selects every task every step (the trainer then skips it).
    acts: ClassVar[bool] = True

    def __init__(self, tasks: Sequence[str]):
        self.tasks = list(tasks)
        self.step = 0
        self.generator: torch.Generator | None = None
        self.sizes: list[int] = [1] * len(self.tasks)

    def setup(self, sizes: Sequence[int] | None = None, seed: int = 0) -> None:
        self.sizes = [int(n) for n in sizes] if sizes is not None else [1] * len(self.tasks)
        if len(self.sizes) != len(self.tasks):
            raise ValueError(f"setup: expected {len(self.tasks)} task sizes, found {len(self.sizes)}")
        self.generator = torch.Generator().manual_seed(seed + SEED_OFFSET)

    @abstractmethod
    def select(self, step: int) -> list[bool]: ...

    def observe(self, losses: torch.Tensor) -> None:
        pass

    def next_mask(self) -> list[bool]:
        """The mask of the next step (:meth:`select` at the step count, checked), then count it."""
        if self.generator is None:
            self.setup()
        mask = [bool(m) for m in self.select(self.step)]
        if len(mask) != len(self.tasks) or not any(mask):
            raise RuntimeError(
                f"{type(self).__name__}.select gave {mask}: expected {len(self.tasks)} booleans, one true"
            )
        self.step += 1
        return mask

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"step": self.step}
        if self.generator is not None:
            state["generator"] = self.generator.get_state()
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.step = int(state["step"])
        if "generator" in state:
            if self.generator is None:
                self.setup()
            assert self.generator is not None
            self.generator.set_state(state["generator"])

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.hyperparameters().items())})"

    def _draw(self, probabilities: torch.Tensor, k: int) -> list[bool]:
        """``k`` distinct tasks drawn one after another, each with probability proportional to
        ``probabilities`` among the tasks not drawn yet."""
        assert self.generator is not None
        chosen = torch.multinomial(probabilities.to(torch.float64), k, replacement=False, generator=self.generator)
        mask = [False] * len(self.tasks)
        for i in chosen.tolist():
            mask[i] = True
        return mask

    def _check_k(self, k: Any) -> int:
        k = check_number(self.label, "k", k, low=1, integer=True)
        if k > len(self.tasks):
            raise hyperparameter_error(self.label, "k", f"at most the number of tasks, {len(self.tasks)}", k)
        return k

    @classmethod
    def _probe(cls, **hyperparameters: Any) -> TaskSchedule:
        # as many probe tasks as `k` asks for: the bound k <= T is checked against the real tasks
        # by space_for
        k = hyperparameters.get("k")
        count = k if isinstance(k, int) and not isinstance(k, bool) and k > 2 else 2
        return cls([f"task_{i}" for i in range(count)], **hyperparameters)

    @classmethod
    def space_for(
        cls, section: Mapping[str, Any], path: str, tasks: Sequence[str], bound: str | None = None
    ) -> dict[str, ParamSpec]:
        """:meth:`space`, with every listed value and range end also checked against ``tasks``
        (``k`` at most the number of tasks; ``bound`` says what ``tasks`` are in the error, e.g.
        ``the fewest tasks a candidate trains, 2 (the primary tasks)``)."""
        specs = cls.space(section, path)
        for name, spec in specs.items():
            for value in spec.values() or (spec.low, spec.high):
                if spec.kind == "int":
                    value = int(value)
                if name == "k" and bound is not None and isinstance(value, int) and value > len(tasks):
                    raise hyperparameter_error(cls.label, "k", f"at most {bound}", value).prefixed(f"{path}.{name}")
                try:
                    cls(tasks, **{name: value})
                except ConfigError as err:
                    raise err.prefixed(f"{path}.{name}") from None
        return specs

    @classmethod
    def sample(cls, trial: Any, space: Mapping[str, ParamSpec], tasks: Sequence[str]) -> TaskSchedule:
        return cls(tasks, **cls.suggest_hyperparameters(trial, space))


SCHEDULES: Registry[type[TaskSchedule]] = Registry("task schedule")


@SCHEDULES.register("all")
class AllTasks(TaskSchedule):
    """Every task in every step: the plain multi-task step."""

    label = "all"
    acts = False

    def select(self, step: int) -> list[bool]:
        return [True] * len(self.tasks)


@SCHEDULES.register("proportional")
class Proportional(TaskSchedule):
    """``k`` tasks per step, drawn with probability proportional to ``n_t ** (1 / temperature)``.

    Temperature-based sampling of multi-task NMT (Arivazhagan et al., 2019, arXiv:1907.05019, Sec.
    4.2): temperature 1 samples in proportion to each task's number of labelled training samples
    ``n_t``; a large temperature samples uniformly. The ``k`` tasks are drawn without
    replacement, each draw in proportion among the tasks not drawn yet.

    Args:
        k: tasks per step, an integer in [1, T] (default 1; searchable).
        temperature: > 0 (default 1.0; searchable).

    .. note::
        On data where every sample labels every task (the built-in benchmarks) all ``n_t`` are
        equal and the draw is uniform whatever the temperature.
    """

    label = "proportional task sampling"
    searchable = ("k", "temperature")

    def __init__(self, tasks, k: int = 1, temperature: float = 1.0):
        super().__init__(tasks)
        self.k = self._check_k(k)
        self.temperature = check_number(self.label, "temperature", temperature, low=0, low_open=True)

    def probabilities(self) -> torch.Tensor:
        sizes = torch.tensor(self.sizes, dtype=torch.float64).clamp(min=1)
        # n ** (1 / tau) normalised, in log space so that a small temperature does not overflow
        return torch.softmax(sizes.log() / self.temperature, 0)

    def select(self, step: int) -> list[bool]:
        return self._draw(self.probabilities(), self.k)


@SCHEDULES.register("round_robin")
class RoundRobin(TaskSchedule):
    """``k`` tasks per step in a fixed cycle: step s selects tasks ``(s k + j) mod T``, j < k."""

    label = "round-robin task scheduling"
    searchable = ("k",)

    def __init__(self, tasks, k: int = 1):
        super().__init__(tasks)
        self.k = self._check_k(k)

    def select(self, step: int) -> list[bool]:
        count = len(self.tasks)
        mask = [False] * count
        for j in range(self.k):
            mask[(step * self.k + j) % count] = True
        return mask


@SCHEDULES.register("progress")
class Progress(TaskSchedule):
    """``k`` tasks per step, the ones whose loss has fallen least sampled most:
    ``p = softmax(r / temperature)``, ``r_t = mean L_t(window k-1) / mean L_t(window k-2)``.

    The learning-progress signal of DWA (Liu, Johns & Davison, 2019, arXiv:1803.10704), the ratio of
    a task's mean loss over the last two windows of ``window`` steps, turned into a sampling
    distribution as in active task sampling (Sharma et al., 2018, arXiv:1702.06053), which draws
    the tasks that lag behind more often; task scheduling in Crawshaw's survey (2020,
    arXiv:2009.09796). Sampling is uniform until two windows have closed. The losses are every
    task's, selected or not (the forward pass computes them all).

    Args:
        k: tasks per step, an integer in [1, T] (default 1; searchable).
        temperature: > 0 (default 0.1; searchable). Loss ratios differ by a few hundredths from
            one window to the next, so a temperature of DWA's 2.0 is nearly uniform.
        window: steps per window, an integer >= 1 (default 10; searchable).

    .. note::
        Sharma et al. measure how far each task is from a target score; mtlsearch has no target
        before the search, so the loss ratio stands for it. A non-finite ratio counts as 1.
    """

    label = "progress-based task sampling"
    searchable = ("k", "temperature", "window")

    def __init__(self, tasks, k: int = 1, temperature: float = 0.1, window: int = 10):
        super().__init__(tasks)
        self.k = self._check_k(k)
        self.temperature = check_number(self.label, "temperature", temperature, low=0, low_open=True)
        self.window = check_number(self.label, "window", window, low=1, integer=True)
        self.seen = 0  # steps observed
        self.window_sum = torch.zeros(len(self.tasks), dtype=torch.float64)
        self.window_means = torch.zeros(2, len(self.tasks), dtype=torch.float64)  # [window k-2, k-1]

    def probabilities(self) -> torch.Tensor:
        if self.seen < 2 * self.window:
            return torch.full((len(self.tasks),), 1.0 / len(self.tasks), dtype=torch.float64)
        ratio = self.window_means[1] / self.window_means[0]
        ratio = torch.where(torch.isfinite(ratio), ratio, torch.ones_like(ratio))
        return torch.softmax(ratio / self.temperature, 0)

    def select(self, step: int) -> list[bool]:
        return self._draw(self.probabilities(), self.k)

    def observe(self, losses: torch.Tensor) -> None:
        self.window_sum += losses.detach().to("cpu", torch.float64)
        self.seen += 1
        if self.seen % self.window == 0:
            self.window_means = torch.stack([self.window_means[1], self.window_sum / self.window])
            self.window_sum = torch.zeros_like(self.window_sum)

    def state_dict(self) -> dict[str, Any]:
        return {
            **super().state_dict(),
            "seen": self.seen,
            "window_sum": self.window_sum.clone(),
            "window_means": self.window_means.clone(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        self.seen = int(state["seen"])
        self.window_sum = state["window_sum"].clone()
        self.window_means = state["window_means"].clone()
