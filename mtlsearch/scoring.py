"""Scoring candidates: Delta-MTL against single-task baselines, cost, and Pareto dominance.

Everything here is a pure function of numbers (or of a model, for cost), tested on hand-computed
values.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

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


def hypervolume(values: Sequence[Sequence[float]], directions: Sequence[str], reference: Sequence[float]) -> float:
    """Hypervolume of a point set: the measure of the objective space that the points dominate and
    that dominates ``reference``: the "size of the space covered" of Zitzler and Thiele (IEEE TEC
    3(4), 1999, doi:10.1109/4235.797969).

    Args:
        values: one row of objective values per point, in the objectives' own directions.
        directions: ``"maximize"`` or ``"minimize"`` per objective.
        reference: the reference point, in the same directions; a point not strictly better than
            it in every objective adds nothing.

    Computed by ``moocore`` (exact, any number of objectives). An empty set has hypervolume 0.
    """
    pts, ref = _hv_inputs(values, directions, reference)
    if not len(pts):
        return 0.0
    if pts.shape[1] == 1:  # one objective: the length from the reference to the best point
        return max(0.0, float(ref[0] - pts[:, 0].min()))
    import moocore

    return float(moocore.hypervolume(pts, ref=ref))


def hypervolume_contributions(
    values: Sequence[Sequence[float]], directions: Sequence[str], reference: Sequence[float]
) -> list[float]:
    """Each point's exclusive hypervolume contribution: ``HV(all) - HV(all without it)``
    (arguments as :func:`hypervolume`). A dominated or duplicated point contributes 0; dominated
    points do not reduce the others' contributions. Computed by ``moocore``."""
    pts, ref = _hv_inputs(values, directions, reference)
    if not len(pts):
        return []
    if pts.shape[1] == 1:  # one objective: only a strictly best point adds, up to the runner-up
        col = [min(float(v), float(ref[0])) for v in pts[:, 0]]
        order = sorted(range(len(col)), key=col.__getitem__)
        out = [0.0] * len(col)
        runner_up = col[order[1]] if len(col) > 1 else float(ref[0])
        out[order[0]] = runner_up - col[order[0]]
        return out
    import moocore

    return [float(v) for v in moocore.hv_contributions(pts, ref=ref)]


def hypervolume_2d(values: Sequence[Sequence[float]], directions: Sequence[str], reference: Sequence[float]) -> float:
    """:func:`hypervolume` of exactly two objectives (kept for callers that check the count)."""
    if len(directions) != 2:
        raise ValueError("hypervolume_2d needs exactly two objectives")
    return hypervolume(values, directions, reference)


def _hv_inputs(values: Sequence[Sequence[float]], directions: Sequence[str], reference: Sequence[float]) -> tuple:
    """Points and reference as minimised float arrays, every length and value checked."""
    import numpy as np

    signs = np.array([-1.0 if d == "maximize" else 1.0 for d in _checked(directions)])
    ref = np.asarray(reference, dtype=float)
    if ref.shape != signs.shape:
        raise ValueError(
            f"reference has {ref.size} values for {len(directions)} objectives: expected one per objective"
        )
    if any(len(row) != len(signs) for row in values):
        raise ValueError(f"a point has a number of values other than the {len(directions)} objectives")
    pts = np.asarray(values, dtype=float).reshape(len(values), len(signs))
    if not (np.isfinite(ref).all() and np.isfinite(pts).all()):
        raise ValueError("hypervolume needs finite values, found NaN or infinity")
    return pts * signs, ref * signs


def _checked(directions: Sequence[str]) -> Sequence[str]:
    for d in directions:
        if d not in ("maximize", "minimize"):
            raise ValueError(f"direction must be `maximize` or `minimize`, found `{d}`")
    return directions


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


def measure_costs(model: nn.Module, input_shape: tuple[int, ...]) -> dict[str, Any]:
    """What a candidate costs: parameters, MACs of one forward for all tasks, median latency (ms)."""
    return {
        "params": count_params(model),
        "macs": count_macs(model, input_shape),
        "latency_ms": round(measure_latency(model, input_shape), 4),
    }
