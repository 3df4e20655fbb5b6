"""Training and evaluating one multi-task network on a budget.

The trainer knows nothing of families or weighting methods: it asks the model for
``{task: output}``, the tasks for their losses, and the weighting for per-task weights, then
applies ``total = sum_t w_t * L_t + weighting.regularizer()``.
"""

from __future__ import annotations

import copy
import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from .checkpoints import CheckpointStore
from .errors import ConfigError, NonFiniteLossError
from .tasks import TaskSpec
from .weighting import Aggregator, StepContext, TaskSchedule, TrainingStrategy, Weighting

EVAL_BATCH = 1024
# Input entries per evaluation batch at most: 1024 MultiDigits images, but 170 scenes of 3x64x64,
# whose per-pixel activations and outputs are much larger per sample.
EVAL_ENTRIES = 2**21
# Forward MACs per training batch below which one torch thread per process trains fastest. On 2
# cores, whole searches of the built-in spaces (4e6-2.5e7 MACs per batch) ran 1.2-4x longer with 2
# threads than with 1; single steps gained 1.5-1.7x from a second core only from ~1.4e8 on a quiet
# machine, and lost under load (BENCHMARKS.md section 6, benchmarks/bench_threads.py).
SMALL_MACS = 100_000_000
# How an aggregated step gets the per-task gradients: `loop` (one autograd.grad per task over its
# own parameters) or `batched` (one autograd.grad over every task, is_grads_batched). On CPU the
# loop ties on hard sharing and wins on trees (BENCHMARKS.md section 2, Jacobian strategies); on a
# GPU one batched call replaces T kernel-launch-bound backward passes (section 2, the step at T =
# 3, 8, 16). `auto` picks by the model's device.
JACOBIAN_MODES = ("auto", "loop", "batched")


def auto_threads(macs_per_batch: int, workers: int = 1, cores: int | None = None) -> int:
    """Torch threads for each of ``workers`` processes training models of ``macs_per_batch``
    forward MACs per batch (``run.threads: auto``): 1 for small models, else the cores shared
    out among the workers."""
    cores = cores or os.cpu_count() or 1
    return 1 if macs_per_batch < SMALL_MACS else max(1, cores // max(workers, 1))


def resolve_device(name: str = "auto") -> torch.device:
    """``auto``: CUDA when present, else CPU. An unavailable device is a clear error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("run.device", f"`{name}` was asked for, but no CUDA device is available; use `cpu` or `auto`")
    if name == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("run.device", "`mps` was asked for, but it is not available; use `cpu` or `auto`")
    return torch.device(name)


def batches(
    dataset: Dataset, batch_size: int, device: torch.device, shuffle: bool, generator: torch.Generator | None = None
) -> Iterator[tuple[torch.Tensor, dict[str, torch.Tensor]]]:
    """Mini-batches on ``device``: by slicing for in-memory tensor datasets, else a DataLoader."""
    inputs = getattr(dataset, "inputs", None)
    if inputs is not None:
        n = inputs.shape[0]
        order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
        for start in range(0, n, batch_size):
            idx = order[start : start + batch_size]
            targets: dict[str, torch.Tensor] = getattr(dataset, "targets")
            yield inputs[idx].to(device), {k: v[idx].to(device) for k, v in targets.items()}
        return
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=generator)
    for x, y in loader:
        yield x.to(device), {k: v.to(device) for k, v in y.items()}


def labelled_counts(dataset: Dataset, names: Sequence[str]) -> list[int]:
    """Per task, the training samples that label it (a task schedule's dataset sizes): for an
    in-memory dataset, the samples whose target has an entry other than the ignore index -1 (an
    integer target) or other than NaN (a float target); for any other dataset, its length."""
    targets = getattr(dataset, "targets", None)
    counts = []
    for name in names:
        target = targets.get(name) if isinstance(targets, dict) else None
        if not isinstance(target, torch.Tensor) or target.dim() == 0:
            counts.append(len(dataset))  # type: ignore[arg-type]
            continue
        flat = target.reshape(target.shape[0], -1)
        labelled = flat == flat if flat.is_floating_point() else flat != -1
        counts.append(int(labelled.any(1).sum()) if flat.shape[1] else target.shape[0])
    return counts


OPTIMIZERS: dict[str, Callable[..., torch.optim.Optimizer]] = {  # the names are config.OPTIMIZER_NAMES
    "adam": lambda params, lr, wd: torch.optim.Adam(params, lr=lr, weight_decay=wd),
    "adamw": lambda params, lr, wd: torch.optim.AdamW(params, lr=lr, weight_decay=wd),
    "sgd": lambda params, lr, wd: torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=wd),
}


def make_optimizer(name: str, params: Sequence[nn.Parameter], lr: float, weight_decay: float) -> torch.optim.Optimizer:
    if name not in OPTIMIZERS:
        raise ConfigError("training.optimizer", f"unknown optimizer `{name}`; choose one of: {', '.join(OPTIMIZERS)}")
    return OPTIMIZERS[name](params, lr, weight_decay)


@torch.no_grad()
def evaluate(
    model: nn.Module, tasks: Sequence[TaskSpec], dataset: Dataset, device: torch.device
) -> dict[str, dict[str, float]]:
    """Every task's metrics on ``dataset``: ``{task: {metric: value}}``."""
    was_training = model.training
    model.eval()
    meters = {t.name: t.new_metrics() for t in tasks}
    inputs = getattr(dataset, "inputs", None)
    per_sample = inputs[0].numel() if inputs is not None and len(inputs) else 1
    for x, y in batches(dataset, max(1, min(EVAL_BATCH, EVAL_ENTRIES // per_sample)), device, shuffle=False):
        out = model(x)
        for t in tasks:
            for m in meters[t.name]:
                m.update(out[t.name], y[t.name])
    model.train(was_training)
    return {t.name: {m.name: m.compute() for m in meters[t.name]} for t in tasks}


def task_parameters(model: nn.Module, task_names: Sequence[str]) -> dict[str, list[nn.Parameter]]:
    """The trainable parameters each task's output depends on: the model's own
    ``task_parameters()`` when it has one, else every parameter for every task (all shared)."""
    own = getattr(model, "task_parameters", None)
    if callable(own):
        found = own()
        return {t: [p for p in found[t] if p.requires_grad] for t in task_names}
    params = [p for p in model.parameters() if p.requires_grad]
    return {t: list(params) for t in task_names}


def parameter_groups(per_task: dict[str, list[nn.Parameter]]) -> list[tuple[tuple[str, ...], list[nn.Parameter]]]:
    """Parameters grouped by the set of tasks that use them, in a stable order."""
    users: dict[int, list[str]] = {}
    by_id: dict[int, nn.Parameter] = {}
    for t, params in per_task.items():
        for p in params:
            if t not in users.setdefault(id(p), []):
                users[id(p)].append(t)
            by_id[id(p)] = p
    groups: dict[tuple[str, ...], list[nn.Parameter]] = {}
    for pid, tasks in users.items():
        groups.setdefault(tuple(tasks), []).append(by_id[pid])
    return list(groups.items())


def setup_strategy(model: nn.Module, strategy: TrainingStrategy) -> None:
    """Give ``strategy`` the per-sample shape of the model's shared feature (one forward pass of a
    zero batch in eval mode, so no running statistic moves; ``None`` when there is none)."""
    shape = getattr(model, "input_shape", None)
    feature = None
    if shape is not None:
        param = next(model.parameters(), None)
        was_training = model.training
        model.eval()
        with torch.no_grad():
            model(torch.zeros(2, *shape, device=param.device if param is not None else None))
        model.train(was_training)
        feature = getattr(model, "shared_feature", None)
    device = next(model.parameters()).device
    strategy.setup(tuple(feature.shape[1:]) if feature is not None else None, device)


class Gradients:
    """One step's per-task gradients, from one batched ``autograd.grad`` (``rows``: each
    parameter's ``(R, *shape)`` stack over the R ``tasks``) or from one call per task
    (``per_task``: ``{task: {id(parameter): gradient}}``)."""

    def __init__(
        self,
        tasks: list[str],
        rows: dict[int, torch.Tensor | None] | None = None,
        per_task: dict[str, dict[int, torch.Tensor]] | None = None,
    ):
        self.tasks, self.rows, self.per_task = tasks, rows, per_task
        self.index = {t: r for r, t in enumerate(tasks)}

    def of(self, task: str, p: nn.Parameter) -> torch.Tensor:
        """``task``'s gradient of ``p``."""
        if self.per_task is not None:
            return self.per_task[task][id(p)]
        assert self.rows is not None
        stack = self.rows[id(p)]
        return torch.zeros_like(p) if stack is None else stack[self.index[task]]

    def matrix(self, live: tuple[str, ...], params: list[nn.Parameter], size: int) -> torch.Tensor:
        """The ``(len(live), size)`` matrix of ``live``'s gradients of ``params``, one row per task:
        one concatenation of the stacks when batched (rows of other tasks dropped), else one per row."""
        if self.rows is not None:
            count = len(self.tasks)
            stacks = [self.rows[id(p)] for p in params]
            flat = torch.cat([torch.zeros(count, p.numel(), device=p.device, dtype=p.dtype) if g is None
                              else g.reshape(count, -1) for p, g in zip(params, stacks)], dim=1)  # fmt: skip
            if len(live) == count:
                return flat
            return flat[[self.index[t] for t in live]]
        assert self.per_task is not None
        matrix = torch.empty(len(live), size, device=params[0].device, dtype=params[0].dtype)
        for r, t in enumerate(live):
            torch.cat([self.per_task[t][id(p)].reshape(-1) for p in params], out=matrix[r])
        return matrix


def make_step(
    model: nn.Module,
    tasks: Sequence[TaskSpec],
    method: Weighting | Aggregator,
    optimizer: torch.optim.Optimizer,
    strategy: TrainingStrategy | None = None,
    jacobian: str = "auto",
    schedule: TaskSchedule | None = None,
) -> Callable[[torch.Tensor, dict[str, torch.Tensor]], torch.Tensor]:
    """One optimisation step on a batch: ``step(x, y)`` returns the detached per-task losses.

    A :class:`Weighting` gives ``total = sum_t w_t * L_t (+ regularizer())`` and one backward pass.
    An :class:`Aggregator` gets, per group of parameters shared by two or more tasks, the matrix of
    those tasks' gradients (one ``autograd.grad`` per task, over that task's parameters only) and
    returns the group's update; parameters of one task keep that task's gradient. A
    ``strategy`` (:class:`TrainingStrategy`) adds its term to the weighted total, or has it
    back-propagated onto the aggregated gradients, and updates its own modules after the backward.
    ``jacobian`` (:data:`JACOBIAN_MODES`) says how the per-task gradients are computed; both give
    the same matrix.

    A ``schedule`` (:class:`TaskSchedule`) picks the tasks of each step: the weighted total sums
    only their terms ``w_t * L_t`` (the weighting still sees every loss), and only their gradients
    are computed and aggregated, each subset of a group by an aggregator of its own (created when
    first needed, in ``step.aggregators`` as ``group:subset``). A parameter no selected task uses
    gets no gradient. docs/tasks.md#task-scheduling.
    """
    names = [t.name for t in tasks]
    kinds = [t.kind for t in tasks]
    per_task = task_parameters(model, names)
    if strategy is not None and not strategy.acts:
        strategy = None
    if strategy is not None:
        setup_strategy(model, strategy)
    if schedule is not None and not schedule.acts:
        schedule = None
    # each task's loss before stacking: a backward pass from one of the stacked losses would run
    # through every task's subgraph (with zeros), so per-task passes and a scheduled weighted step
    # start from these
    parts: list[torch.Tensor] = []

    def strategy_loss(losses: torch.Tensor, feature: torch.Tensor | None) -> torch.Tensor | float:
        """The strategy's term (0.0 without one), with this step's unstacked losses at hand."""
        if strategy is None:
            return 0.0
        strategy.task_losses = list(parts)
        try:
            return strategy.loss(losses, feature)
        finally:
            strategy.task_losses = []  # the graph is not kept until the next step

    def losses_of(x, y):
        out = model(x)
        if strategy is not None:
            strategy.batch(x, out)
        parts[:] = [k.loss(out[n], y[n]) for k, n in zip(kinds, names)]
        return torch.stack(parts)

    if isinstance(method, Aggregator):
        groups = parameter_groups(per_task)
        aggregators = {users: copy.deepcopy(method) for users, _ in groups if len(users) > 1}
        sizes = {users: sum(p.numel() for p in params) for users, params in groups}
        if jacobian not in JACOBIAN_MODES:
            raise ValueError(f"jacobian: expected one of {', '.join(JACOBIAN_MODES)}, found {jacobian!r}")
        device = next(model.parameters()).device
        batched = [jacobian == "batched" or (jacobian == "auto" and device.type == "cuda")]
        everything = list({id(p): p for t in names for p in per_task[t]}.values())
        eye = torch.eye(len(names), device=device)

        exposed: dict[str, Aggregator] = {"+".join(users): agg for users, agg in aggregators.items()}
        wanted: dict[tuple[int, ...], list[nn.Parameter]] = {}  # the parameters of a subset of tasks

        def aggregator_for(key: str, create: bool = True) -> Aggregator | None:
            """The aggregator of ``group:subset`` (a scheduled step's tasks within a group), made
            from a fresh copy of the method the first time; ``None`` for a key of no subset."""
            if key in exposed:
                return exposed[key]
            group, _, subset = key.partition(":")
            users = tuple(group.split("+"))
            live = tuple(subset.split("+"))
            ordered = tuple(t for t in users if t in live)
            if users not in aggregators or len(live) < 2 or live == users or live != ordered:
                return None
            if create:
                exposed[key] = copy.deepcopy(method)
            return exposed.get(key, method)

        def per_task_gradients(losses: torch.Tensor, keep: bool, chosen: list[int] | None = None) -> Gradients:
            """The per-task gradients of the tasks at ``chosen`` (all when ``None``), each over its
            own parameters."""
            picked = list(range(len(names))) if chosen is None else chosen
            if chosen is None:
                wrt, outputs = everything, eye
            else:
                wrt = wanted.setdefault(
                    tuple(chosen), list({id(p): p for i in chosen for p in per_task[names[i]]}.values())
                )
                outputs = eye[chosen]
            if batched[0]:
                try:
                    found = torch.autograd.grad(
                        losses,
                        wrt,
                        grad_outputs=outputs.to(losses.dtype),
                        retain_graph=keep,
                        is_grads_batched=True,
                        allow_unused=True,
                    )
                except RuntimeError:  # an operation vmap cannot batch: the loop, from now on
                    batched[0] = False
                else:
                    return Gradients([names[i] for i in picked], rows={id(p): g for p, g in zip(wrt, found)})
            grads: dict[str, dict[int, torch.Tensor]] = {}
            for r, i in enumerate(picked):
                t = names[i]
                found = torch.autograd.grad(
                    parts[i], per_task[t], retain_graph=keep or r < len(picked) - 1, allow_unused=True
                )
                grads[t] = {id(p): torch.zeros_like(p) if g is None else g for p, g in zip(per_task[t], found)}
            return Gradients([names[i] for i in picked], per_task=grads)

        def aggregated_step(x: torch.Tensor, y: dict[str, torch.Tensor]) -> torch.Tensor:
            optimizer.zero_grad(set_to_none=True)
            mask = schedule.next_mask() if schedule is not None else None
            losses = losses_of(x, y)
            extra = strategy_loss(losses, getattr(model, "shared_feature", None))
            chosen = None if mask is None else [i for i, m in enumerate(mask) if m]
            grads = per_task_gradients(losses, isinstance(extra, torch.Tensor), chosen)
            parts.clear()  # an unselected loss's graph is not kept until the next step
            for users, params in groups:
                live = users if mask is None else tuple(t for t in users if t in grads.tasks)
                if not live:  # no selected task uses them: no gradient (the optimizer skips them)
                    continue
                if len(live) == 1:
                    for p in params:
                        p.grad = grads.of(live[0], p)
                    continue
                # parameter_groups lists each group's tasks in task order: rows follow it
                matrix = grads.matrix(live, params, sizes[users])
                agg = aggregators[users] if live == users else aggregator_for(f"{'+'.join(users)}:{'+'.join(live)}")
                assert agg is not None
                update = agg(matrix)
                for p, piece in zip(params, update.split([p.numel() for p in params])):
                    p.grad = piece.view_as(p)
            if isinstance(extra, torch.Tensor):
                extra.backward()  # adds the strategy's gradient to the aggregated ones
            if strategy is not None:
                strategy.after_backward()
            optimizer.step()
            if schedule is not None:
                schedule.observe(losses.detach())
            return losses.detach()

        aggregated_step.aggregators = exposed  # type: ignore[attr-defined]
        if schedule is not None:
            aggregated_step.aggregator_for = aggregator_for  # type: ignore[attr-defined]
        return aggregated_step

    context = StepContext(
        task_parameters=per_task,
        shared_parameters=[p for users, ps in parameter_groups(per_task) if len(users) > 1 for p in ps],
    )

    def weighted_step(x: torch.Tensor, y: dict[str, torch.Tensor]) -> torch.Tensor:
        optimizer.zero_grad(set_to_none=True)
        mask = schedule.next_mask() if schedule is not None else None
        losses = losses_of(x, y)
        context.shared_feature = getattr(model, "shared_feature", None)
        context.task_losses = list(parts)
        weights = method(losses, context)
        context.task_losses = []  # the graph is not kept until the next step
        if mask is None:
            total = (weights * losses).sum()
        else:  # only the selected terms: the other tasks' own parameters get no gradient at all
            total = torch.stack([weights[i] * parts[i] for i, m in enumerate(mask) if m]).sum()
        regularizer = method.regularizer()
        if isinstance(regularizer, torch.Tensor):  # a plain 0.0 adds nothing to the graph
            total = total + regularizer
        extra = strategy_loss(losses, context.shared_feature)
        if isinstance(extra, torch.Tensor):
            total = total + extra
        parts.clear()  # an unselected loss's graph is not kept until the next step
        total.backward()
        if strategy is not None:
            strategy.after_backward()
        optimizer.step()
        if schedule is not None:
            schedule.observe(losses.detach())
        return losses.detach()

    return weighted_step


def check_finite(
    names: Sequence[str], mean: Sequence[float], when: str, training: dict[str, Any], who: str = ""
) -> None:
    """Raise :class:`NonFiniteLossError` naming the first task whose epoch-mean loss is NaN or inf:
    ``[who: ]loss of task `t` became nan in <when> (lr = ..., optimizer = ...)``."""
    bad = [(n, v) for n, v in zip(names, mean) if not math.isfinite(v)]
    if bad:
        raise NonFiniteLossError(
            f"{who + ': ' if who else ''}loss of task `{bad[0][0]}` became {bad[0][1]} in {when} "
            f"(lr = {training['lr']:g}, optimizer = {training['optimizer']})"
        )


@dataclass
class EpochEnd:
    """What the trainer reports after each epoch."""

    epoch: int  # 1-based
    epochs: int
    train_loss: float
    task_losses: dict[str, float]
    seconds: float
    resumed_from: int = 0  # the checkpointed epoch this run continued from (0: from scratch)


@dataclass
class TrainResult:
    epochs: int
    train_loss: float
    history: list[EpochEnd] = field(default_factory=list)
    resumed_from: int = 0  # the checkpointed epoch training continued from (0: from scratch)


def training_state(
    epoch: int,
    model: nn.Module,
    weighting: Weighting | Aggregator,
    optimizer: torch.optim.Optimizer,
    step: Callable,
    generator: torch.Generator,
    history: list[EpochEnd],
    strategy: TrainingStrategy | None = None,
    schedule: TaskSchedule | None = None,
) -> dict[str, Any]:
    """Everything needed to continue training after ``epoch`` exactly as if never stopped."""
    rng: dict[str, Any] = {"torch": torch.get_rng_state(), "shuffle": generator.get_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    return {
        "epoch": epoch,
        "model": model.state_dict(),
        "weighting": weighting.state_dict(),
        "aggregators": {k: a.state_dict() for k, a in getattr(step, "aggregators", {}).items()},
        "strategy": strategy.checkpoint_state() if strategy is not None else {},
        "schedule": schedule.state_dict() if schedule is not None and schedule.acts else {},
        "optimizer": optimizer.state_dict(),
        "rng": rng,
        "history": [vars(e) for e in history],
    }


def restore_training_state(
    state: dict[str, Any],
    model: nn.Module,
    weighting: Weighting | Aggregator,
    optimizer: torch.optim.Optimizer,
    step: Callable,
    generator: torch.Generator,
    strategy: TrainingStrategy | None = None,
    schedule: TaskSchedule | None = None,
) -> str | None:
    """Load a :func:`training_state`; returns why it does not fit this run (nothing loaded), or ``None``.
    A scheduled step's subset aggregators (``group:subset``) are created as the checkpoint lists
    them; a checkpoint without ``schedule`` fits the schedule ``all``."""
    own = model.state_dict()
    saved = state.get("model", {})
    if saved.keys() != own.keys() or any(saved[k].shape != own[k].shape for k in own):
        return "its model does not match this candidate's"
    aggregators = getattr(step, "aggregators", {})
    subsets = getattr(step, "aggregator_for", None)
    saved_groups = set(state.get("aggregators", {}))
    if not set(aggregators) <= saved_groups or any(
        k not in aggregators and (subsets is None or subsets(k, create=False) is None) for k in saved_groups
    ):
        return "its gradient groups do not match this candidate's"
    own_schedule = schedule.state_dict() if schedule is not None and schedule.acts else {}
    if set(state.get("schedule", {})) != set(own_schedule):
        return "its task schedule does not match this candidate's"
    own_strategy = strategy.checkpoint_state() if strategy is not None else {}
    if set(state.get("strategy", {})) != set(own_strategy):
        return "its training strategy does not match this candidate's"
    model.load_state_dict(saved)
    weighting.load_state_dict(state["weighting"])
    for key in saved_groups:
        agg = aggregators[key] if key in aggregators else subsets(key) if subsets is not None else None
        if agg is not None:
            agg.load_state_dict(state["aggregators"][key])
    if schedule is not None and own_schedule:
        schedule.load_state_dict(state["schedule"])
    if strategy is not None:
        strategy.load_checkpoint_state(state.get("strategy", {}))
    optimizer.load_state_dict(state["optimizer"])
    torch.set_rng_state(state["rng"]["torch"])
    generator.set_state(state["rng"]["shuffle"])
    if "cuda" in state["rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["rng"]["cuda"])
    return None


def train(
    model: nn.Module,
    tasks: Sequence[TaskSpec],
    weighting: Weighting | Aggregator,
    train_set: Dataset,
    training: dict[str, Any],
    device: torch.device,
    seed: int,
    on_epoch: Callable[[EpochEnd], None] | None = None,
    checkpoints: CheckpointStore | None = None,
    strategy: TrainingStrategy | None = None,
    schedule: TaskSchedule | None = None,
) -> TrainResult:
    """Train ``model`` for ``training["epochs"]`` epochs; raise :class:`NonFiniteLossError` on NaN/inf.

    ``training`` holds ``epochs``, ``batch_size``, ``optimizer``, ``lr``, ``weight_decay``.
    Shuffling and torch's global RNG (dropout, random weightings) are seeded by ``seed``. The
    finiteness check runs once per epoch on the accumulated task losses (NaN and inf propagate
    through the sum), so the hot loop never waits on the device.

    With ``checkpoints``, the state after every epoch is saved (:func:`training_state`), and
    training starts from the newest readable checkpoint already there: a run killed after epoch
    k and started again with the same store continues at epoch k + 1 with the same weights,
    optimizer and weighting state and random streams, so it ends as the uninterrupted run would.

    A ``schedule`` (:class:`TaskSchedule`) is set up with each task's :func:`labelled_counts` and
    ``seed``; its state is checkpointed too. The epoch's task losses are every task's, selected in
    a step or not (the forward pass computes them all), so they and the finiteness check read as
    without a schedule.
    """
    if schedule is not None and schedule.acts:
        schedule.setup(labelled_counts(train_set, [t.name for t in tasks]), seed)
    model.to(device).train()
    if isinstance(weighting, nn.Module):
        weighting.to(device)
    names = [t.name for t in tasks]
    params = list(model.parameters()) + (list(weighting.parameters()) if isinstance(weighting, nn.Module) else [])
    optimizer = make_optimizer(training["optimizer"], params, training["lr"], training["weight_decay"])
    with torch.random.fork_rng(devices=[]):  # a strategy's modules are initialised from the seed
        torch.manual_seed(seed)
        step = make_step(model, tasks, weighting, optimizer, strategy, schedule=schedule)
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)  # dropout and random weightings/aggregators draw from torch's global RNG
    result = TrainResult(epochs=training["epochs"], train_loss=math.nan)
    state = checkpoints.load() if checkpoints is not None else None
    if checkpoints is not None and state is not None:
        unfit = restore_training_state(state, model, weighting, optimizer, step, generator, strategy, schedule)
        if unfit is None:
            result.history = [EpochEnd(**h) for h in state["history"]]
            result.train_loss = result.history[-1].train_loss if result.history else math.nan
            result.resumed_from = state["epoch"]
        else:
            checkpoints.warn(f"checkpoint {state['path']} cannot continue this run ({unfit}); training from scratch")
    for epoch in range(result.resumed_from + 1, training["epochs"] + 1):
        start = time.perf_counter()
        running = torch.zeros(len(tasks), device=device)
        steps = 0
        for x, y in batches(train_set, training["batch_size"], device, shuffle=True, generator=generator):
            running += step(x, y)
            steps += 1
        mean = (running / max(steps, 1)).tolist()
        check_finite(names, mean, f"epoch {epoch}", training)
        end = EpochEnd(
            epoch,
            training["epochs"],
            float(sum(mean)),
            dict(zip(names, mean)),
            time.perf_counter() - start,
            result.resumed_from,
        )
        result.history.append(end)
        result.train_loss = end.train_loss
        if checkpoints is not None:
            checkpoints.save(
                training_state(epoch, model, weighting, optimizer, step, generator, result.history, strategy, schedule)
            )
        if on_epoch is not None:
            on_epoch(end)
    return result
