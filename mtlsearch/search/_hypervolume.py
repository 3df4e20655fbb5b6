"""The hypervolume of a study's front, against a reference point stored with the study.

The reference point and a scale per objective are derived once, from the single-task baselines
and the single-task networks' cost, and stored as the study attribute ``mtlsearch.hypervolume``
(:class:`~mtlsearch.search._records.StudyRecord`), so that two studies of the same space measure
their fronts in the same box. Objectives are divided by their scale before the volume is taken,
so the hypervolume has no unit (Delta-MTL in fractions, costs in multiples of the single-task
networks' cost). The rule (the README, "Seeing a study"):

- ``delta_mtl``: reference -100 %, scale 100. The single-task networks score 0 by construction,
  so every candidate no worse than "each task lost all it had" counts.
- ``params``, ``macs``, ``latency_ms``: reference ``COST_FACTOR`` times the cost of the
  single-task networks (one per primary task, what the baselines train), scale that cost. ``latency_ms``
  is measured once on this machine's CPU when the reference is derived.
- a task metric (``left.accuracy``): the baseline moved by 100 % the wrong way (0 for a metric
  to maximise, twice the baseline for one to minimise), scale the baseline.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import optuna

from ..errors import MTLSearchError
from ..scoring import count_macs, count_params, hypervolume, hypervolume_contributions, measure_latency
from ._progress import Progress
from ._records import StudyRecord, study_record, typed, write_study

COST_FACTOR = 2.0
RULE = (
    f"delta_mtl: -100 %; params/macs/latency_ms: {COST_FACTOR:g} x the single-task networks' cost; "
    "task metric: the baseline 100 % worse; each objective divided by its scale (100, the single-task cost, "
    "the baseline)"
)


def derive_reference(
    objectives: Sequence[str],
    baselines: Mapping[str, Any],
    single_task_cost: Callable[[str], float],
    directions: Mapping[str, Mapping[str, str]],
) -> dict[str, Any]:
    """The reference point and scales of ``objectives`` (the rule in the module docstring).

    Args:
        objectives: the study's objectives, in order.
        baselines: ``{task: {metric: value}}`` of the single-task baselines.
        single_task_cost: the summed cost of the single-task networks for ``params``, ``macs`` or
            ``latency_ms`` (called only for the cost objectives present).
        directions: ``{task: {metric: "max" | "min"}}``, the problem's ``metric_directions`` (a
            user's metric class included).
    """
    point, scale = [], []
    for objective in objectives:
        if objective == "delta_mtl":
            point.append(-100.0)
            scale.append(100.0)
        elif objective in ("params", "macs", "latency_ms"):
            cost = float(single_task_cost(objective))
            if not cost > 0:
                raise MTLSearchError(f"the single-task networks' {objective} is {cost}: no hypervolume scale")
            point.append(COST_FACTOR * cost)
            scale.append(cost)
        else:
            task, metric = objective.split(".", 1)
            base = typed((baselines.get(task) or {}).get(metric), "float")
            if base is None or base == 0:
                raise MTLSearchError(f"no usable baseline value for objective `{objective}`: found {base}")
            direction = (directions.get(task) or {}).get(metric)
            if direction not in ("max", "min"):
                raise MTLSearchError(f"objective `{objective}`: no direction known for metric `{metric}`")
            point.append(0.0 if direction == "max" else 2.0 * base)
            scale.append(abs(base))
    return {"objectives": list(objectives), "point": point, "scale": scale, "rule": RULE}


def valid_reference(record: Any, objectives: Sequence[str]) -> bool:
    """A stored reference record (untrusted) fits ``objectives``: finite points and positive
    scales whose quotients are finite too."""
    if not isinstance(record, Mapping) or record.get("objectives") != list(objectives):
        return False
    point, scale = record.get("point"), record.get("scale")
    return (
        isinstance(point, list)
        and isinstance(scale, list)
        and len(point) == len(scale) == len(objectives)
        and all(typed(v, "float") is not None for v in point)
        and all(typed(v, "float") is not None and v > 0 for v in scale)
        and all(math.isfinite(p / s) for p, s in zip(point, scale))
    )


def study_reference(study: optuna.Study, progress: Progress | None = None) -> dict[str, Any] | None:
    """The study's stored reference; derived and stored the first time it is needed. ``None``
    where it cannot be derived yet (no baselines stored, a study not made by mtlsearch).

    Raises:
        MTLSearchError: the stored space cannot be rebuilt, or disagrees with the stored objectives.
    """
    record = study_record(study)
    objectives = record.objectives
    if not objectives or not all(isinstance(o, str) for o in objectives) or len(objectives) != len(study.directions):
        return None
    if valid_reference(record.hypervolume, objectives):
        return dict(record.hypervolume or {})
    if record.hypervolume is not None:  # stored but unreadable: derive again, leave the stored one be
        return _derive(study, record, objectives, progress)
    reference = _derive(study, record, objectives, progress)
    if reference is not None:
        try:
            write_study(study, hypervolume=reference)
        except Exception:  # noqa: BLE001 - a read-only storage: the same rule derives it again next time
            pass
    return reference


def _derive(
    study: optuna.Study, record: StudyRecord, objectives: Sequence[str], progress: Progress | None
) -> dict[str, Any] | None:
    values = (record.baselines or {}).get("values")
    if not isinstance(values, Mapping) or record.space is None:
        return None
    from ._study import stored_problem

    problem = stored_problem(study, progress)
    if list(problem.objectives) != list(objectives):
        raise MTLSearchError(
            f"the stored objectives {list(objectives)} differ from those of the stored space {problem.objectives}"
        )
    nets = [problem.single_task_model(task, 0) for task in problem.primary_tasks]  # what the baselines train

    def cost(objective: str) -> float:
        if objective == "params":
            return float(sum(count_params(n) for n in nets))
        if objective == "macs":
            return float(sum(count_macs(n, problem.input_shape) for n in nets))
        return sum(measure_latency(n, problem.input_shape) for n in nets)

    reference = derive_reference(objectives, values, cost, problem.metric_directions)
    if not valid_reference(reference, objectives):
        raise MTLSearchError(f"the derived reference point is not usable: {reference['point']}")
    return reference


def scaled(values: Sequence[Sequence[float]], reference: Mapping[str, Any]) -> tuple[list[list[float]], list[float]]:
    """Points and reference point divided by the reference's scales; a point with a value that
    is not finite there (a value stored by hand) is left out."""
    scale = reference["scale"]
    rows = ([v / s for v, s in zip(row, scale)] for row in values)
    points = [row for row in rows if all(math.isfinite(v) for v in row)]
    return points, [p / s for p, s in zip(reference["point"], scale)]


def front_hypervolume(
    values: Sequence[Sequence[float]], directions: Sequence[str], reference: Mapping[str, Any]
) -> tuple[float, list[float]]:
    """The hypervolume of ``values`` (scaled) and each point's exclusive contribution (0 for a
    point whose values are not finite)."""
    scale = reference["scale"]
    finite = [all(math.isfinite(v / s) for v, s in zip(row, scale)) for row in values]
    pts, ref = scaled(values, reference)
    shares = iter(hypervolume_contributions(pts, directions, ref))
    return hypervolume(pts, directions, ref), [next(shares) if ok else 0.0 for ok in finite]
