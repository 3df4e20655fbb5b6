"""Task affinity: which tasks help each other, measured on a short run of a hard-sharing network.

Three measures, each a T x T matrix in one convention: **row i, column j is the effect of task i
on task j**.

* ``cosine``: the cosine of the per-task gradients on the shared parameters, averaged over the
  steps (symmetric; gradient conflict in the sense of Yu et al., NeurIPS 2020, arXiv:2001.06782).
* ``lookahead``: TAG's inter-task affinity (Fifty et al., NeurIPS 2021, arXiv:2109.04617),
  ``Z[i, j] = 1 - L_j(theta_s - lr * grad_s L_i) / L_j(theta_s)`` on the same batch, averaged over
  the steps: how much a step on task i's gradient alone lowers task j's loss.
* ``cka``: linear CKA (Kornblith et al., ICML 2019, arXiv:1905.00414) between the shared features
  of trained single-task networks on validation inputs (symmetric).

The maths and the stored record: docs/tasks.md, "Task affinity".
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from .errors import ConfigError, show
from .families import FAMILIES
from .scoring import measure_costs
from .training import (
    batches,
    check_finite,
    evaluate,
    make_optimizer,
    parameter_groups,
    resolve_device,
    task_parameters,
    train,
)
from .weighting import WEIGHTINGS

if TYPE_CHECKING:
    from .problem import Problem

METHODS = ("cosine", "lookahead", "cka")
CONVENTION = "row i, column j: the effect of task i on task j"
CKA_SAMPLES = 1024  # validation inputs whose features CKA compares, at most
RECORD = "mtlsearch.affinity"  # where the record is stored: the study attribute, and the path in its errors
CKA_NEEDS = (
    "`cka` needs the study's single-task networks: keep the baselines with their weights (in the space: "
    "`baselines: {keep_weights: true}`, then `mtlsearch run`) and run `mtlsearch affinity` on that study; "
    "use cosine or lookahead otherwise"
)


# -- the measures (pure functions) -------------------------------------------------------------------


def gradient_cosine(grads: torch.Tensor) -> torch.Tensor:
    """Pairwise cosine similarity of per-task gradients ``grads`` (T x P): a T x T matrix.

    A task whose gradient is zero has similarity 0 with every task (itself included), not NaN.
    Computed in float64 and returned in ``grads``' dtype.
    """
    if grads.dim() != 2:
        raise ValueError(f"grads: expected a (tasks x parameters) matrix, found shape {tuple(grads.shape)}")
    g = grads.detach().double()
    norms = g.norm(dim=1)
    unit = torch.where(norms[:, None] > 0, g / norms.clamp_min(1e-300)[:, None], torch.zeros_like(g))
    return (unit @ unit.T).clamp(-1.0, 1.0).to(grads.dtype)


def lookahead_affinity(before: torch.Tensor, after: torch.Tensor) -> torch.Tensor:
    """TAG's inter-task affinity (Fifty et al., NeurIPS 2021): ``Z[i, j] = 1 - after[i, j] / before[j]``.

    Args:
        before: (T,) each task's loss on a batch.
        after: (T, T) ``after[i, j]`` is task j's loss on the same batch after one SGD step of the
            shared parameters on task i's gradient alone.

    Positive ``Z[i, j]``: the step on task i lowered task j's loss. A task whose loss is already 0
    gets 0 in its column (nothing to lower).
    """
    if before.dim() != 1 or after.shape != (before.shape[0], before.shape[0]):
        raise ValueError(
            f"expected before (T,) and after (T, T), found shapes {tuple(before.shape)} and {tuple(after.shape)}"
        )
    b = before.detach().double()[None, :]
    ratio = torch.where(b != 0, after.detach().double() / torch.where(b != 0, b, torch.ones_like(b)), 1.0)
    return (1.0 - ratio).to(after.dtype)


def linear_cka(x: torch.Tensor, y: torch.Tensor) -> float:
    """Linear centred kernel alignment of two representations of the same N inputs (Kornblith
    et al., ICML 2019, arXiv:1905.00414):

        CKA = ||Yc^T Xc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F),   Xc, Yc: column-centred x (N x D1), y (N x D2).

    1 for the same representation, and invariant to orthogonal transforms and isotropic scaling;
    0 where either representation is constant. Features beyond the first dimension are flattened.
    """
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"x and y must describe the same inputs: found {x.shape[0]} and {y.shape[0]} rows")
    xc = x.detach().reshape(x.shape[0], -1).double()
    yc = y.detach().reshape(y.shape[0], -1).double()
    xc, yc = xc - xc.mean(0), yc - yc.mean(0)
    if max(xc.shape[1], yc.shape[1]) > xc.shape[0]:  # wide features: the N x N Gram form is cheaper
        kx, ky = xc @ xc.T, yc @ yc.T
        num, den = (kx * ky).sum(), kx.norm() * ky.norm()
    else:
        num, den = (yc.T @ xc).pow(2).sum(), (xc.T @ xc).norm() * (yc.T @ yc).norm()
    return float(num / den) if float(den) > 0 else 0.0


# -- the result and its stored record -------------------------------------------------------------


@dataclass(frozen=True)
class AffinityResult:
    """Task affinity matrices of one short run (``matrices[method][i][j]``: the effect of task i
    on task j), with what the run cost.

    ``seconds`` is the affinity run's wall time, ``candidate_seconds`` the time of one hard-sharing
    candidate as a trial computes it at the space's default training settings (built, its costs
    measured, trained, evaluated; in the same call), ``cost_ratio`` their ratio; both after an
    untimed warm-up step. ``epochs`` is 0 for ``cka`` alone (nothing trained). Stored as the study
    attribute ``mtlsearch.affinity`` (:meth:`to_record`).
    """

    tasks: list[str]
    matrices: dict[str, list[list[float]]]
    seed: int
    epochs: int
    steps: int
    seconds: float
    candidate_seconds: float
    cost_ratio: float

    def to_record(self) -> dict[str, Any]:
        """The stored form (plain JSON)."""
        return {
            "tasks": list(self.tasks),
            "methods": {m: [list(row) for row in rows] for m, rows in self.matrices.items()},
            "convention": CONVENTION,
            "seed": self.seed,
            "epochs": self.epochs,
            "steps": self.steps,
            "seconds": self.seconds,
            "candidate_seconds": self.candidate_seconds,
            "cost_ratio": self.cost_ratio,
        }

    @classmethod
    def from_record(cls, record: Any) -> AffinityResult:
        """The result of a stored record, checked (a stored value is untrusted): a matrix that is
        not T x T finite numbers, an unknown method or a missing field is a :class:`ConfigError`."""
        if not isinstance(record, Mapping):
            raise ConfigError(RECORD, f"expected a mapping, found {show(record)}")
        tasks = record.get("tasks")
        if (
            not isinstance(tasks, list)
            or len(tasks) < 2
            or not all(isinstance(t, str) for t in tasks)
            or len(set(tasks)) != len(tasks)
        ):
            raise ConfigError(
                f"{RECORD}.tasks", f"expected a list of 2 or more distinct task names, found {show(tasks)}"
            )
        convention = record.get("convention", CONVENTION)
        if convention != CONVENTION:
            raise ConfigError(f"{RECORD}.convention", f"expected `{CONVENTION}`, found {show(convention)}")
        methods = record.get("methods")
        if not isinstance(methods, Mapping) or not methods:
            raise ConfigError(f"{RECORD}.methods", f"expected a mapping of method to matrix, found {show(methods)}")
        n = len(tasks)
        matrices: dict[str, list[list[float]]] = {}
        for method, rows in methods.items():
            where = f"{RECORD}.methods.{method}"
            if method not in METHODS:
                raise ConfigError(where, f"unknown method; choose one of: {', '.join(METHODS)}")
            if (
                not isinstance(rows, list)
                or len(rows) != n
                or not all(isinstance(r, list) and len(r) == n for r in rows)
            ):
                raise ConfigError(
                    where, f"expected a {n} x {n} matrix (one row and column per task), found {show(rows)}"
                )
            for i, row in enumerate(rows):
                for j, value in enumerate(row):
                    if not _finite(value):
                        raise ConfigError(f"{where}[{i}][{j}]", f"expected a finite number, found {show(value)}")
            matrices[str(method)] = [[float(v) for v in row] for row in rows]
        numbers: dict[str, Any] = {}
        for key in ("seed", "epochs", "steps"):
            value = record.get(key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigError(f"{RECORD}.{key}", f"expected an integer >= 0, found {show(value)}")
            numbers[key] = value
        for key in ("seconds", "candidate_seconds", "cost_ratio"):
            stored: Any = record.get(key)
            number = float(stored) if _finite(stored) else math.nan
            if not number >= 0:  # NaN too
                raise ConfigError(f"{RECORD}.{key}", f"expected a finite number >= 0, found {show(stored)}")
            numbers[key] = number
        return cls(tasks=list(tasks), matrices=matrices, **numbers)


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def task_roles(tasks: Sequence[Any]) -> tuple[list[str], list[str]]:
    """The names of the primary and the auxiliary tasks (``TaskSpec.role``; primary by default)."""
    primary = [t.name for t in tasks if getattr(t, "role", "primary") != "auxiliary"]
    auxiliary = [t.name for t in tasks if getattr(t, "role", "primary") == "auxiliary"]
    return primary, auxiliary


def rank_auxiliary(
    result: AffinityResult, method: str, primary: Sequence[str], auxiliary: Sequence[str]
) -> dict[str, list[tuple[str, float]]]:
    """For each primary task, the auxiliary tasks by how much they help it, best first: the
    primary task's column, read at the auxiliaries' rows (``matrices[method][aux][primary]``)."""
    if method not in result.matrices:
        raise ConfigError("method", f"`{method}` was not measured; choose one of: {', '.join(result.matrices)}")
    for where, names in (("primary", primary), ("auxiliary", auxiliary)):
        for name in names:
            if name not in result.tasks:
                raise ConfigError(where, f"unknown task `{name}`; choose one of: {', '.join(result.tasks)}")
    matrix, index = result.matrices[method], {t: i for i, t in enumerate(result.tasks)}
    return {
        p: sorted(
            ((a, matrix[index[a]][index[p]]) for a in auxiliary if a != p),
            key=lambda pair: -pair[1],
        )
        for p in primary
    }


# -- the estimator --------------------------------------------------------------------------------


def check_methods(methods: Any, path: str = "methods") -> tuple[str, ...]:
    """``methods`` as a tuple of known, distinct method names."""
    if isinstance(methods, str) or not isinstance(methods, Sequence) or not methods:
        raise ConfigError(path, f"expected a non-empty list of methods ({', '.join(METHODS)}), found {show(methods)}")
    for m in methods:
        if m not in METHODS:
            raise ConfigError(path, f"unknown method {show(m)}; choose one of: {', '.join(METHODS)}")
    if len(set(methods)) != len(methods):
        raise ConfigError(path, f"a method is named twice in {show(list(methods))}")
    return tuple(methods)


def estimate_affinity(
    problem: Problem,
    *,
    methods: Sequence[str] = ("cosine", "lookahead"),
    epochs: int = 1,
    seed: int = 0,
    device: str | torch.device = "cpu",
    teachers: Mapping[str, nn.Module] | None = None,
    progress: Any = None,
) -> AffinityResult:
    """Estimate task affinity on a short, seeded run of a hard-sharing network on the train split.

    The network is the space's backbone with one head per task (family ``hard_sharing``), trained
    for ``epochs`` epochs with equal weighting and the space's default training settings
    (:meth:`~mtlsearch.problem.Problem.baseline_training`). At each step the per-task gradients of
    the shared trunk give ``cosine``; for ``lookahead`` the losses of every task are recomputed on
    the same batch after a step of the trunk on each task's gradient alone (``lr`` of the training
    settings; :func:`torch.func.functional_call`, so the weights are never copied or touched),
    then the normal step is taken. ``cka`` compares the shared features of ``teachers`` (``{task:
    trained single-task network}``) on at most 1,024 validation inputs; it needs no training run
    (``epochs`` is then 0 in the result) and is refused when the space has auxiliary tasks. Before
    anything is timed, one untimed optimizer step on a throwaway network pays the process's
    one-off start-up costs.

    Args:
        progress: an object with ``event(kind, message, **data)`` (a
            :class:`~mtlsearch.search.Progress`): one line per epoch, and one for the timing.

    The caller's random state is left as it was. Raises :class:`ConfigError` for bad arguments.
    """
    methods = check_methods(methods)
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ConfigError("epochs", f"expected an integer >= 1, found {show(epochs)}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ConfigError("seed", f"expected an integer, found {show(seed)}")
    names = [t.name for t in problem.tasks]
    if "cka" in methods:
        check_cka(problem.tasks)
        if teachers is None:
            raise ConfigError("methods", CKA_NEEDS)
        missing = [t for t in problem.tasks if t.name not in teachers]
        if missing:
            raise ConfigError(
                "teachers", f"no network for task `{missing[0].name}`; expected one per task: {', '.join(names)}"
            )
    dev = resolve_device(str(device))
    training = {**problem.baseline_training(), "epochs": epochs}
    trains = "cosine" in methods or "lookahead" in methods  # cka alone trains nothing
    matrices: dict[str, list[list[float]]] = {}
    steps = 0
    seconds = 0.0
    with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
        _warm_up(problem, training, dev, seed)
        if trains:
            sums, steps, seconds = _run(problem, methods, training, dev, seed, progress)
            matrices.update({m: (sums[m] / max(steps, 1)).tolist() for m in methods if m in sums})
        if "cka" in methods and teachers is not None:  # checked above: cka comes with teachers
            start = time.perf_counter()
            matrices["cka"] = _cka(problem, teachers, dev)
            seconds += time.perf_counter() - start
        full = problem.baseline_training()
        _tell(
            progress,
            "affinity_timing",
            f"affinity: timing one hard-sharing candidate as a trial runs it (costs, {full['epochs']} epoch"
            f"{'' if full['epochs'] == 1 else 's'}, evaluation) for the cost ratio",
            epochs=full["epochs"],
        )
        candidate_seconds = _time_candidate(problem, full, dev, seed)
    return AffinityResult(
        tasks=names,
        matrices={m: matrices[m] for m in methods},
        seed=seed,
        epochs=epochs if trains else 0,
        steps=steps,
        seconds=seconds,
        candidate_seconds=candidate_seconds,
        cost_ratio=seconds / candidate_seconds if candidate_seconds > 0 else 0.0,
    )


def check_cka(tasks: Sequence[Any], path: str = "methods") -> None:
    """``cka`` needs a single-task network per task: refused when the space has auxiliary tasks."""
    _, auxiliary = task_roles(tasks)
    if auxiliary:
        raise ConfigError(
            path,
            f"`cka` is not possible in a space with auxiliary tasks: it compares every task's single-task "
            f"network, and auxiliary tasks ({', '.join(auxiliary)}) have none (they get no baseline); "
            "use cosine or lookahead",
        )


def _warm_up(problem: Problem, training: Mapping[str, Any], device: torch.device, seed: int) -> None:
    """One optimizer step of a throwaway hard-sharing network on one batch, untimed: the first
    optimizer step of a process imports parts of torch for seconds, which neither the affinity run
    nor the candidate it is compared with should be charged."""
    model = _hard_sharing(problem, seed).to(device).train()
    optimizer = make_optimizer(
        training["optimizer"], list(model.parameters()), training["lr"], training["weight_decay"]
    )
    x, y = next(batches(problem.data.train, training["batch_size"], device, shuffle=False))
    out = model(x)
    torch.stack([t.kind.loss(out[t.name], y[t.name]) for t in problem.tasks]).sum().backward()
    optimizer.step()


def _time_candidate(problem: Problem, training: Mapping[str, Any], device: torch.device, seed: int) -> float:
    """The seconds of one hard-sharing candidate as a trial computes it (the denominator of the
    cost ratio): build it, measure its costs (parameters, MACs, latency), train it with equal
    weighting at ``training`` and evaluate it on the validation split. A trial's recorded
    ``train_seconds`` also includes its writes to the storage."""
    start = time.perf_counter()
    model = _hard_sharing(problem, seed).to(device)
    measure_costs(model, problem.input_shape)
    equal = WEIGHTINGS.get("equal")(problem.task_names)
    train(model, problem.tasks, equal, problem.data.train, dict(training), device, seed)
    evaluate(model, problem.tasks, problem.data.val, device)
    return time.perf_counter() - start


def _tell(progress: Any, kind: str, message: str, **data: Any) -> None:
    if progress is not None:
        progress.event(kind, message, **data)


def _hard_sharing(problem: Problem, seed: int) -> nn.Module:
    """The space's backbone shared by every task, one head each, initialised from ``seed``."""
    family = FAMILIES.get("hard_sharing")()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return family.build(family.sample(None, problem.task_names, problem.backbone), problem.backbone, problem.tasks)


def _run(
    problem: Problem,
    methods: Sequence[str],
    training: Mapping[str, Any],
    device: torch.device,
    seed: int,
    progress: Any,
) -> tuple[dict[str, torch.Tensor], int, float]:
    """The short training run: the per-step sums of the ``cosine``/``lookahead`` matrices, the
    number of steps, and the seconds of its epochs (set-up excluded: the first optimizer of a
    process imports parts of torch for seconds)."""
    from torch.func import functional_call

    tasks, names = problem.tasks, problem.task_names
    kinds = [t.kind for t in tasks]
    model = _hard_sharing(problem, seed).to(device).train()
    per_task = task_parameters(model, names)
    shared = [p for users, ps in parameter_groups(per_task) if len(users) == len(names) for p in ps]
    if not shared:
        raise ConfigError("backbone", "the hard-sharing network has no parameters shared by every task to measure")
    name_of = {id(p): n for n, p in model.named_parameters()}
    shared_names = [name_of[id(p)] for p in shared]
    optimizer = make_optimizer(
        training["optimizer"], list(model.parameters()), training["lr"], training["weight_decay"]
    )
    lr = float(training["lr"])
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)  # dropout draws from torch's global RNG, as in the trainer
    cuda = [device] if device.type == "cuda" else []
    t = len(names)
    sums = {m: torch.zeros(t, t, dtype=torch.float64, device=device) for m in ("cosine", "lookahead") if m in methods}
    steps, total = 0, 0.0

    def losses_of(out: Mapping[str, torch.Tensor], y: Mapping[str, torch.Tensor]) -> list[torch.Tensor]:
        """Each task's loss, unstacked: a gradient pass from one of them runs through its own head
        only (from a stacked tensor it would run through every head, with zeros)."""
        return [k.loss(out[n], y[n]) for k, n in zip(kinds, names)]

    for epoch in range(1, int(training["epochs"]) + 1):
        began = time.perf_counter()
        running = torch.zeros(t, device=device)
        count = 0
        for x, y in batches(problem.data.train, training["batch_size"], device, shuffle=True, generator=generator):
            rng = (torch.get_rng_state(), torch.cuda.get_rng_state(device) if cuda else None)
            optimizer.zero_grad(set_to_none=True)
            parts = losses_of(model(x), y)
            losses = torch.stack(parts)
            rows = []
            for i, task in enumerate(names):
                found = torch.autograd.grad(parts[i], per_task[task], retain_graph=i < t - 1, allow_unused=True)
                grads = {id(p): torch.zeros_like(p) if g is None else g for p, g in zip(per_task[task], found)}
                for p in per_task[task]:  # equal weighting: the gradient of the plain sum of the losses
                    p.grad = grads[id(p)].clone() if p.grad is None else p.grad + grads[id(p)]
                rows.append(torch.cat([grads[id(p)].reshape(-1) for p in shared]))
            matrix = torch.stack(rows)
            if "cosine" in sums:
                sums["cosine"] += gradient_cosine(matrix).double()
            if "lookahead" in sums:
                buffers = dict(model.named_buffers())
                after = torch.empty(t, t, device=device)
                with torch.no_grad():
                    for i in range(t):
                        stepped = {
                            n: p - lr * g.view_as(p) for n, p, g in zip(shared_names, shared, _split(rows[i], shared))
                        }
                        stepped.update({n: b.clone() for n, b in buffers.items()})  # running statistics stay put
                        with torch.random.fork_rng(devices=cuda):  # the batch's own dropout masks
                            torch.set_rng_state(rng[0])
                            if rng[1] is not None:
                                torch.cuda.set_rng_state(rng[1], device)
                            after[i] = torch.stack(losses_of(functional_call(model, stepped, (x,)), y))
                sums["lookahead"] += lookahead_affinity(losses.detach(), after).double()
            optimizer.step()
            running += losses.detach()
            count += 1
        steps += count
        mean = (running / max(count, 1)).tolist()
        check_finite(names, mean, f"epoch {epoch} of the affinity run", dict(training), who="affinity")
        seconds = time.perf_counter() - began
        total += seconds
        _tell(
            progress,
            "affinity_epoch",
            f"affinity: epoch {epoch}/{training['epochs']}, train loss {sum(mean):.4f}, {duration(seconds)}",
            epoch=epoch,
            epochs=training["epochs"],
            train_loss=sum(mean),
            seconds=seconds,
        )
    return {m: s.cpu() for m, s in sums.items()}, steps, total


def _split(flat: torch.Tensor, params: Sequence[nn.Parameter]) -> list[torch.Tensor]:
    return list(flat.split([p.numel() for p in params]))


@torch.no_grad()
def _cka(problem: Problem, teachers: Mapping[str, nn.Module], device: torch.device) -> list[list[float]]:
    """Linear CKA between the teachers' shared features on the first validation inputs."""
    x, _ = next(batches(problem.data.val, CKA_SAMPLES, device, shuffle=False))
    features = []
    for name in problem.task_names:
        net = teachers[name].to(device)
        was_training = net.training
        net.eval()
        out = net(x)
        net.train(was_training)
        feature = getattr(net, "shared_feature", None)
        if feature is None:  # no trunk feature: the task's own output
            feature = out[name] if isinstance(out, Mapping) else out
        features.append(feature.reshape(feature.shape[0], -1))
    n = len(features)
    return [[1.0 if i == j else linear_cka(features[i], features[j]) for j in range(n)] for i in range(n)]


# -- text output ----------------------------------------------------------------------------------


def format_matrix(tasks: Sequence[str], matrix: Sequence[Sequence[float]]) -> str:
    """A matrix as an aligned table, task names on both axes (rows: the acting task)."""
    width = max(9, *(len(t) for t in tasks))
    head = " " * width + "".join(f"  {t:>{width}}" for t in tasks)
    lines = [head] + [f"{t:<{width}}" + "".join(f"  {v:>{width}.3g}" for v in row) for t, row in zip(tasks, matrix)]
    return "\n".join(lines)


TITLES = {
    "cosine": "gradient cosine on the shared parameters, mean over steps",
    "lookahead": "TAG: 1 - L_j after a step on task i alone / L_j before, mean over steps",
    "cka": "linear CKA of the single-task networks' shared features",
}


def format_affinity(result: AffinityResult, auxiliary: Mapping[str, Mapping[str, Any]] | None = None) -> str:
    """The result as text: one table per method, the auxiliary ranking (``{method: ranking}`` of
    :func:`rank_auxiliary`, if any) and the cost."""
    if result.epochs == 0:  # cka alone: nothing trained
        run = "no training: cka compares the study's single-task networks"
    else:
        run = f"hard sharing, {result.epochs} epoch(s), {result.steps} steps, seed {result.seed}"
    parts = [f"task affinity ({CONVENTION}; {run})"]
    for method, matrix in result.matrices.items():
        parts.append(f"{method} ({TITLES[method]}):\n{format_matrix(result.tasks, matrix)}")
        for primary, ranked in ((auxiliary or {}).get(method) or {}).items():
            listed = ", ".join(f"{a} {v:+.3g}" for a, v in ranked) or "none"
            parts.append(f"  auxiliary tasks for `{primary}`, most helpful first: {listed}")
    parts.append(
        f"cost: {duration(result.seconds)}, {ratio(result.cost_ratio)}x one candidate's training "
        f"({duration(result.candidate_seconds)})"
    )
    return "\n".join(parts)


def duration(seconds: float) -> str:
    """Seconds for people: two decimals below 10 s (``0.07 s``, ``2.35 s``), one above (``42.1 s``)."""
    return f"{seconds:.2f} s" if seconds < 10 else f"{seconds:.1f} s"


def ratio(value: float) -> str:
    """A cost ratio for people: ``0.8``, ``0.042``, ``12.5``."""
    return f"{value:.2g}" if value < 1 else f"{value:.1f}"


def describe_stored(record: Any) -> str:
    """The report's line on a study's stored affinity record (untrusted: a damaged one is said so)."""
    try:
        result = AffinityResult.from_record(record)
    except ConfigError as err:
        return f"affinity: the stored record is unreadable ({err}); run `mtlsearch affinity` again"
    return f"affinity: {', '.join(result.matrices)} (stored with the study)"
