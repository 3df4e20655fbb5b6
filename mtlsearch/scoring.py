"""Scoring candidates: Delta-MTL against single-task baselines, cost, and Pareto dominance.

Everything here is a pure function of numbers (or of a model, for cost), tested on hand-computed
values.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from torch import nn

from .config import CONSTRAINTS, DELTA_AVERAGES
from .errors import ConfigError

Metrics = Mapping[str, Mapping[str, float]]  # {task: {metric: value}}


def delta_mtl(
    metrics: Metrics,
    baselines: Metrics,
    directions: Mapping[str, Mapping[str, str]],
    average: str = "task",
) -> float:
    """Delta-MTL in percent: the mean signed relative change against the single-task baselines,

        d_m = (-1)^{l_m} * (M_m - S_m) / S_m * 100,   l_m = 1 where lower is better.

    ``average="task"`` averages the metrics within each task first, then the tasks, so every task
    counts equally (Maninis et al., CVPR 2019; LibMTL's ``count_improvement``). ``"metric"``
    averages every metric equally (Vandenhende et al., TPAMI 2021; Nash-MTL's ``delta_fn``).
    The two differ when tasks have different numbers of metrics. ``directions[task][metric]`` is
    ``"max"`` or ``"min"``; the metrics counted are exactly those of ``directions``.
    """
    if average not in DELTA_AVERAGES:
        raise ValueError(f"average must be one of {DELTA_AVERAGES}, found {average!r}")
    per_task = []
    for task, dirs in directions.items():
        terms = []
        for metric, direction in dirs.items():
            m = metrics[task][metric]
            s = baselines[task][metric]
            if s == 0:
                raise ConfigError(f"baselines.{task}.{metric}", "is 0; Delta-MTL divides by the baseline")
            sign = -1.0 if direction == "min" else 1.0
            terms.append(sign * (m - s) / s * 100.0)
        per_task.append(terms)
    if average == "metric":
        flat = [d for terms in per_task for d in terms]
        return sum(flat) / len(flat)
    return sum(sum(terms) / len(terms) for terms in per_task) / len(per_task)


def count_params(model: nn.Module) -> int:
    """Number of trainable parameters (shared parameters counted once)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def count_macs(model: nn.Module, input_shape: Sequence[int]) -> int:
    """Multiply-accumulates of one forward pass for one sample and *all* tasks.

    Counted with ``torch.utils.flop_counter.FlopCounterMode`` (matmul and convolution FLOPs,
    which dominate; elementwise ops are not counted), MACs = FLOPs / 2.
    """
    from torch.utils.flop_counter import FlopCounterMode

    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(torch.zeros(1, *input_shape, device=device))
    model.train(was_training)
    return int(counter.get_total_flops() // 2)


LATENCY_WARMUP, LATENCY_REPEATS = 5, 30


@torch.no_grad()
def measure_latency(
    model: nn.Module,
    input_shape: Sequence[int],
    batch_size: int = 1,
    warmup: int = LATENCY_WARMUP,
    repeats: int = LATENCY_REPEATS,
) -> float:
    """Median wall-clock milliseconds of one forward pass (all tasks) on the model's device.

    ``warmup`` passes are run and discarded first (allocator, kernel selection, caches); then
    ``repeats`` timed passes, each waited for on CUDA, in eval mode and without autograd. The
    median is robust to the odd scheduler hiccup, but a latency is a measurement: expect a few
    percent of noise between runs on a busy CPU.
    """
    import statistics
    import time

    device = next(model.parameters()).device
    x = torch.zeros(batch_size, *input_shape, device=device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    was_training = model.training
    model.eval()
    try:
        for _ in range(warmup):
            model(x)
        sync()
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            model(x)
            sync()
            times.append(time.perf_counter() - start)
    finally:
        model.train(was_training)
    return statistics.median(times) * 1000.0


def constraint_values(costs: Mapping[str, float], bounds: Mapping[str, float]) -> dict[str, float]:
    """Optuna constraint values (``<= 0`` is feasible) of costs against ``max_*`` bounds, relative
    to the bound so that constraints of different units weigh alike: ``cost / bound - 1``."""
    return {name: costs[CONSTRAINTS[name]] / bound - 1.0 for name, bound in bounds.items()}


def _as_minimised(values: Sequence[Sequence[float]], directions: Sequence[str]) -> list[list[float]]:
    for d in directions:
        if d not in ("maximize", "minimize"):
            raise ValueError(f"direction must be `maximize` or `minimize`, found `{d}`")
    return [[-v if d == "maximize" else v for v, d in zip(row, directions)] for row in values]


def dominates(a: Sequence[float], b: Sequence[float]) -> bool:
    """``a`` dominates ``b`` (both minimised): no worse in every objective, better in one."""
    return all(x <= y for x, y in zip(a, b)) and any(x < y for x, y in zip(a, b))


def pareto_front(values: Sequence[Sequence[float]], directions: Sequence[str]) -> list[int]:
    """Indices of the non-dominated points (in input order). Equal points are all kept."""
    pts = _as_minimised(values, directions)
    return [i for i, p in enumerate(pts) if not any(dominates(q, p) for j, q in enumerate(pts) if j != i)]


def knee_point(values: Sequence[Sequence[float]], directions: Sequence[str]) -> int:
    """Index of the knee of a front: the point closest (Euclidean) to the ideal point after each
    objective is min-max normalised over the given points (0 = best seen, 1 = worst seen).

    A common, scale-free choice for picking one trade-off (see Branke et al., PPSN 2004, for
    other knee definitions). Objectives that are equal on every point are ignored.
    """
    if not values:
        raise ValueError("knee_point needs at least one point")
    pts = _as_minimised(values, directions)
    columns = list(zip(*pts))
    lows = [min(c) for c in columns]
    spans = [max(c) - min(c) for c in columns]

    def distance(p: Sequence[float]) -> float:
        return math.sqrt(sum(((v - lo) / s) ** 2 for v, lo, s in zip(p, lows, spans) if s > 0))

    return min(range(len(pts)), key=lambda i: distance(pts[i]))


def hypervolume_2d(values: Sequence[Sequence[float]], directions: Sequence[str], reference: Sequence[float]) -> float:
    """Hypervolume of a two-objective point set w.r.t. ``reference`` (in the objectives' own
    directions; points not strictly better than the reference in both objectives add nothing)."""
    if len(directions) != 2:
        raise ValueError("hypervolume_2d needs exactly two objectives")
    pts = _as_minimised(values, directions)
    ref = _as_minimised([reference], directions)[0]
    pts = sorted(p for p in pts if p[0] < ref[0] and p[1] < ref[1])
    volume, best_y = 0.0, ref[1]
    for x, y in pts:
        if y < best_y:
            volume += (ref[0] - x) * (best_y - y)
            best_y = y
    return volume


# Two-sided 95 % quantiles of Student's t by degrees of freedom (standard tables); beyond 30 the
# next tabulated value is used, which errs on the wide side.
_T975: tuple[float, ...] = (
    *(12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131),
    *(2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042),
)


def t_quantile_975(df: int) -> float:
    """Student's t quantile at 0.975 with ``df`` degrees of freedom (>= 1)."""
    if df < 1:
        raise ValueError(f"t_quantile_975 needs df >= 1, found {df}")
    if df <= len(_T975):
        return _T975[df - 1]
    return 2.021 if df <= 40 else 2.000 if df <= 60 else 1.980 if df <= 120 else 1.960


def mean_interval(values: Sequence[float]) -> dict[str, float | None]:
    """Mean, sample standard deviation and the 95 % confidence interval of the mean
    (``mean ± t_{0.975, n-1} * std / sqrt(n)``; seeds as independent draws). A single value has
    std 0 and no interval (``low`` and ``high`` are None)."""
    n = len(values)
    if n == 0:
        raise ValueError("mean_interval needs at least one value")
    mean = math.fsum(values) / n
    if n == 1:
        return {"mean": mean, "std": 0.0, "low": None, "high": None}
    std = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))
    half = t_quantile_975(n - 1) * std / math.sqrt(n)
    return {"mean": mean, "std": std, "low": mean - half, "high": mean + half}
