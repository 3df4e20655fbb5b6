"""Reading a finished study: the Pareto front, picking one trial, exporting it as a config that
rebuilds the exact model, and retraining that config from scratch on several seeds.

The test split is read in one place only: :func:`retrain` (``mtlsearch train``).
"""

from __future__ import annotations

import datetime
import math
import re
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import torch
import yaml
from optuna.trial import TrialState

from ..affinity import describe_stored
from ..checkpoints import describe_value
from ..config import MAX_SEED, TRAINING, SearchSpace, check_keys, check_threads, read_yaml
from ..errors import ConfigError, MTLSearchError, cut, show
from ..problem import Problem, method_label
from ..scoring import count_params, delta_mtl, hypervolume, knee_point, mean_interval, pareto_front
from ..storage_url import redact
from ..tasks import METRICS
from ..training import evaluate, resolve_device, train
from ..version import __version__
from ._baselines import train_single_task
from ._hypervolume import front_hypervolume, scaled, study_reference
from ._progress import QUIET, Progress
from ._records import StudyRecord, TrialRecord, study_record, typed
from ._storage import load_study, retried_numbers
from ._study import announce_factory, stored_problem, stored_space
from ._threads import threads_for, use_threads
from ._warm_start import describe as describe_warm_start
from ._warm_start import summary as warm_start_summary

EXPORT_FORMAT = "mtlsearch-export/1"
ARTIFACT_ID = re.compile(
    r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
)  # what Optuna's upload_artifact makes
PICKS = ("delta", "knee", "min-cost")


def load(study_name: str, storage_url: str) -> optuna.Study:
    return load_study(study_name, storage_url)


def feasible(trial: optuna.trial.FrozenTrial) -> bool:
    """No constraint of the trial is violated (Optuna's rule: every value ``<= 0``)."""
    return all(v <= 0 for v in trial.constraints.values())


def complete_trials(study: optuna.Study, family: str | None = None) -> list[optuna.trial.FrozenTrial]:
    """Complete, feasible trials (of one ``family`` when given)."""
    return [
        t
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if t.values is not None
        and feasible(t)
        and (family is None or (TrialRecord.from_attrs(t.user_attrs).architecture or {}).get("family") == family)
    ]


@dataclass(frozen=True)
class Pooled:
    """The complete, feasible trials of one candidate (one ``candidate`` key: the same network
    trained the same way), pooled as one candidate trained on all their seeds.

    ``trial`` is the first of them (its parameters rebuild the candidate); ``values`` are the
    objective values averaged over every seed (a trial of ``k`` seeds counts ``k`` times);
    ``runs`` the validation Delta-MTL of each seed.
    """

    trial: optuna.trial.FrozenTrial
    trials: tuple[int, ...]
    values: tuple[float, ...]
    runs: tuple[float, ...]
    val_metrics: dict[str, dict[str, float]]
    confirmed: bool = False  # some of its trials are confirmation trials (``confirm_of``)

    @property
    def delta_mtl(self) -> float:
        return statistics.fmean(self.runs)

    @property
    def delta_std(self) -> float:
        return statistics.stdev(self.runs) if len(self.runs) > 1 else 0.0


def seed_runs(trial: optuna.trial.FrozenTrial) -> list[float]:
    """The validation Delta-MTL of each seed the trial trained (stored values are checked)."""
    a = trial.user_attrs
    per_seed = a.get("seed_delta_mtl")
    if isinstance(per_seed, list) and per_seed and all(is_number(v) for v in per_seed):
        return [float(v) for v in per_seed]
    delta: Any = a.get("delta_mtl")
    return [float(delta)] if is_number(delta) else []


def is_number(value: Any) -> bool:
    """A finite number (not a bool), read from a storage: the record fields' own check."""
    return typed(value, "float") is not None


def pool(trials: Sequence[optuna.trial.FrozenTrial]) -> list[Pooled]:
    """Trials grouped by their ``candidate`` key (a trial without one is its own group), each
    group pooled over its seeds (:class:`Pooled`), in the order of their first trials."""
    groups: dict[str, list[optuna.trial.FrozenTrial]] = {}
    for t in trials:
        if not seed_runs(t):  # no readable Delta-MTL (stored values are untrusted): not a candidate
            continue
        key = t.user_attrs.get("candidate")
        groups.setdefault(key if isinstance(key, str) else f"#{t.number}", []).append(t)
    out = []
    for members in groups.values():
        weights = [max(1, len(seed_runs(t))) for t in members]
        total = sum(weights)
        values = tuple(
            math.fsum(w * t.values[i] for w, t in zip(weights, members)) / total for i in range(len(members[0].values))
        )
        runs = tuple(r for t in members for r in seed_runs(t))
        stored = (t.user_attrs.get("val_metrics") for t in members)
        metrics: list[dict] = [m if isinstance(m, dict) else {} for m in stored]
        pooled_metrics = metrics[0]
        if len(members) > 1 and all(m.keys() == pooled_metrics.keys() for m in metrics):
            try:
                pooled_metrics = {
                    task: {k: math.fsum(w * m[task][k] for w, m in zip(weights, metrics)) / total for k in ms}
                    for task, ms in pooled_metrics.items()
                }
            except (KeyError, TypeError, AttributeError):  # stored values are untrusted: keep the first's
                pooled_metrics = metrics[0]
        confirmed = any(isinstance(t.user_attrs.get("confirm_of"), int) for t in members)
        out.append(Pooled(members[0], tuple(t.number for t in members), values, runs, pooled_metrics, confirmed))
    return out


def pool_of(study: optuna.Study, family: str | None = None) -> list[Pooled]:
    """Every candidate of the study: its complete, feasible trials pooled (:func:`pool`)."""
    return pool(complete_trials(study, family))


def candidates(study: optuna.Study, family: str | None = None) -> list[Pooled]:
    """The study's Pareto front of candidates: complete, feasible trials pooled per candidate
    (:func:`pool`), non-dominated on their pooled values; with ``family``, that family's alone."""
    pooled = pool_of(study, family)
    directions = [d.name.lower() for d in study.directions]
    return [pooled[i] for i in pareto_front([p.values for p in pooled], directions)]


def front(study: optuna.Study, family: str | None = None) -> list[optuna.trial.FrozenTrial]:
    """The first trial of each candidate on the front (:func:`candidates`): the non-dominated
    complete, feasible candidates under the study's objectives, pooled over their seeds."""
    return [p.trial for p in candidates(study, family)]


def trial_record(study: optuna.Study, trial: optuna.trial.FrozenTrial, pooled: Pooled | None = None) -> dict[str, Any]:
    """What ``report`` shows of a trial; with ``pooled``, the values of its whole candidate."""
    objectives = study_record(study).objectives or [f"objective{i}" for i in range(len(trial.values))]
    a = TrialRecord.from_attrs(trial.user_attrs)
    pooled = pooled or Pooled(trial, (trial.number,), tuple(trial.values), tuple(seed_runs(trial)), {})
    return {
        "trial": trial.number,
        "trials": list(pooled.trials),
        "seeds": len(pooled.runs),
        "confirmed": pooled.confirmed,
        "values": dict(zip(objectives, pooled.values)),
        "delta_mtl": pooled.delta_mtl if pooled.runs else a.delta_mtl,
        "delta_mtl_std": pooled.delta_std,
        "val_metrics": pooled.val_metrics or a.val_metrics,
        "params": a.params,
        "macs": a.macs,
        "latency_ms": a.latency_ms,
        "family": (a.architecture or {}).get("family"),
        "architecture": a.architecture,
        "seed": a.seed,
        "train_seconds": a.train_seconds,
        "warm_start": a.warm_start,  # the proposal's label, for a trial of `run --warm-start affinity`
    }


def report(study: optuna.Study, progress: Progress | None = None) -> dict[str, Any]:
    """Everything ``mtlsearch report`` shows, as plain data. ``progress`` is told before code that
    the stored space names is imported (rebuilding the space for the hypervolume's reference)."""
    counts = {s.name.lower(): 0 for s in TrialState}
    retried = retried_numbers(study)
    counts["retried"] = 0  # failed trials that a later trial retries (interrupted, or their worker stopped)
    for t in study.get_trials(deepcopy=False):
        counts[t.state.name.lower()] += 1
        counts["retried"] += t.state == TrialState.FAIL and t.number in retried
    front_ = candidates(study)
    records = [trial_record(study, p.trial, p) for p in front_]
    volume = front_volume(study, front_, records, progress)
    records.sort(key=lambda r: -(r["delta_mtl"] or -math.inf))
    stored = study_record(study)
    return {
        "study": study.study_name,
        "objectives": stored.objectives,
        "directions": [d.name.lower() for d in study.directions],
        "trials": counts,
        "baselines": stored.baselines,
        "metric_directions": stored.metric_directions,  # None in a study made before it was stored
        "data": stored.data,
        "front": records,
        "hypervolume": volume if volume and "error" not in volume else None,
        "warnings": baseline_warnings(study) + ([volume["error"]] if volume and "error" in volume else []),
        "confirm": stored.confirm,
        "confirmed": sorted(
            (trial_record(study, p.trial, p) for p in pool_of(study) if p.confirmed),
            key=lambda r: -(r["delta_mtl"] or -math.inf),
        ),
        "affinity": stored.affinity,  # mtlsearch affinity's record, as stored
        "warm_start": warm_start_summary(study),
    }


def front_volume(
    study: optuna.Study, front_: Sequence[Pooled], records: list[dict[str, Any]], progress: Progress | None = None
) -> dict[str, Any] | None:
    """The front's hypervolume against the study's stored reference (derived and stored the first
    time, :mod:`._hypervolume`), each record's exclusive contribution (``hv_contribution``, added
    to ``records``) and the anytime curve; ``None`` while no reference can be derived."""
    try:
        reference = study_reference(study, progress)
    except MTLSearchError as err:  # e.g. a stored space this version cannot rebuild: the rest of the report stands
        return {"error": f"no hypervolume: {err}"}
    if reference is None:
        return None
    directions = [d.name.lower() for d in study.directions]
    total, shares = front_hypervolume([p.values for p in front_], directions, reference)
    for record, share in zip(records, shares):
        record["hv_contribution"] = share
    return {"value": total, "reference": reference, "curve": anytime_curve(study, reference)}


def anytime_curve(study: optuna.Study, reference: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The hypervolume after each finished trial (complete, pruned or failed), in the order they
    finished: each entry has the trial's number, how many had finished, and the hypervolume of
    the candidates (complete, feasible trials pooled per candidate, :func:`pool`) at that moment.
    A new trial re-pools only its own candidate, so the curve costs one hypervolume per trial."""
    directions = [d.name.lower() for d in study.directions]
    done = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
    finished = sorted(
        study.get_trials(deepcopy=False, states=done),
        key=lambda t: (t.datetime_complete is None, t.datetime_complete or datetime.datetime.min, t.number),
    )
    groups: dict[str, list[optuna.trial.FrozenTrial]] = {}
    values: dict[str, list[tuple[float, ...]]] = {}
    curve, volume = [], 0.0
    for i, t in enumerate(finished, 1):
        if t.state == TrialState.COMPLETE and t.values is not None and feasible(t):
            key = t.user_attrs.get("candidate")
            key = key if isinstance(key, str) else f"#{t.number}"
            groups.setdefault(key, []).append(t)
            values[key] = [p.values for p in pool(groups[key])]
            pts, ref = scaled([v for vs in values.values() for v in vs], reference)
            volume = hypervolume(pts, directions, ref)
        curve.append({"trial": t.number, "finished": i, "hypervolume": volume})
    return curve


def separate_networks(trial: optuna.trial.FrozenTrial) -> bool:
    """The trial trains the baselines' own networks: the ``single_task`` family, or a tree split
    into one branch per task at every block (the same candidate, :meth:`Candidate.key`)."""
    arch: Any = TrialRecord.from_attrs(trial.user_attrs).architecture or {}
    if arch.get("family") == "single_task":
        return True
    sharing = arch.get("sharing")
    return (
        arch.get("family") == "tree"
        and isinstance(sharing, list)
        and bool(sharing)
        and all(isinstance(b, list) and all(isinstance(g, list) and len(g) == 1 for g in b) for b in sharing)
    )


def baseline_warnings(study: optuna.Study, spreads: float = 2.0) -> list[str]:
    """A sanity check of the baselines: a candidate that trains the baselines' own networks
    (:func:`separate_networks`) and beats a task's baseline by more than ``spreads`` times the
    baselines' seed spread says the baselines are under-tuned (their Delta-MTL flatters every
    candidate). Needs a stored spread (baselines trained on 2 or more seeds)."""
    record = study_record(study).baselines or {}
    values, spread = record.get("values"), record.get("spread")
    if not isinstance(values, Mapping) or not isinstance(spread, Mapping):
        return []
    try:  # only the metrics that count in Delta-MTL can flatter it
        counted: Mapping[str, Mapping[str, str]] | None = stored_problem(study).delta_directions
    except MTLSearchError:  # no stored space (a study of mtlsearch.Objective): every built-in metric
        counted = None
    worst: dict[tuple[str, str], tuple[float, Pooled, float, float, float]] = {}
    count: dict[tuple[str, str], int] = {}
    for p in pool([t for t in complete_trials(study) if separate_networks(t)]):
        for task, metrics in p.val_metrics.items():
            for metric, value in metrics.items() if isinstance(metrics, Mapping) else ():
                base: Any = (values.get(task) or {}).get(metric)
                width: Any = (spread.get(task) or {}).get(metric)
                if counted is None:
                    direction = METRICS.get(metric).direction if metric in METRICS else None
                else:
                    direction = (counted.get(task) or {}).get(metric)
                if not (is_number(value) and is_number(base) and is_number(width)) or direction is None:
                    continue
                gain = value - base if direction == "max" else base - value
                if width > 0 and gain > spreads * width:
                    count[task, metric] = count.get((task, metric), 0) + 1
                    if gain > worst.get((task, metric), (-math.inf,))[0]:
                        worst[task, metric] = (gain, p, value, base, width)
    out = []
    for (task, metric), (_, p, value, base, width) in worst.items():
        out.append(
            f"{count[task, metric]} candidate(s) of separate single-task networks beat the `{task}` baseline "
            f"on {metric} by more than "
            f"{spreads:g} of its seed spreads (best: trial #{p.trial.number}, {value:.4g} over {len(p.runs)} seed(s) "
            f"vs {base:.4g} ± {width:.2g}): the baselines look under-tuned, so Delta-MTL flatters every candidate; "
            "raise baselines.tune_trials or seeds"
        )
    return out


def format_table(rows: list[list[str]], header: list[str]) -> str:
    """A plain-text table drawn by rich: the first column left-aligned, the others right-aligned,
    no colour and no wrapping (a wide table stays one line per row; cells are text, not markup)."""
    import io

    from rich import box
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, collapse_padding=True)
    for i, name in enumerate(header):
        table.add_column(Text(str(name)), justify="right" if i else "left", no_wrap=True)
    for row in rows:
        table.add_row(*(Text(str(x)) for x in row))
    console = Console(file=io.StringIO(), width=100_000, color_system=None, force_terminal=False, highlight=False)
    console.print(table)
    text = console.file.getvalue()  # type: ignore[attr-defined]
    return "\n".join(line.rstrip() for line in text.splitlines() if line.strip())


def format_report(data: Mapping[str, Any]) -> str:
    """The Pareto front as a text table: trial, family, weighting, Delta-MTL, metrics, cost."""
    front_ = data["front"]
    trials = dict(data["trials"])
    retried = trials.pop("retried", 0)
    counts = ", ".join(
        f"{v} {k}"
        + (f" ({retried} interrupted or left by a stopped worker, and retried)" if k == "fail" and retried else "")
        for k, v in trials.items()
        if v
    )
    head = f"study `{data['study']}`: {counts or 'no trials'}; objectives " + ", ".join(
        f"{o} ({d})" for o, d in zip(data["objectives"] or [], data["directions"])
    )
    if not front_:
        return head + "\nno complete trials yet"
    # every task's metrics that some candidate records (a candidate may leave auxiliary tasks out)
    metric_cols = list(dict.fromkeys((t, m) for r in front_ for t, ms in (r["val_metrics"] or {}).items() for m in ms))
    header = [
        "trial",
        "family",
        "weighting",
        "Delta-MTL %",
        *(f"{t}.{m}" for t, m in metric_cols),
        "params",
        "MACs",
        "latency ms",
        *(["HV contrib."] if data.get("hypervolume") else []),
    ]
    confirming = bool(data.get("confirm"))
    rows = []
    for r in front_:
        arch = r["architecture"] or {}
        latency = r.get("latency_ms")
        rows.append(
            [
                f"#{r['trial']}"
                + (f" +{len(r['trials']) - 1}" if len(r.get("trials", [])) > 1 else "")
                + ("" if r.get("confirmed") or not confirming else " *")
                + (" w" if r.get("warm_start") else ""),
                r["family"] or "?",
                method_label(arch),
                f"{r['delta_mtl']:+.2f}"
                + (f" ± {r['delta_mtl_std']:.2f} ({r['seeds']})" if r.get("seeds", 1) > 1 else ""),
                *(metric_cell(r["val_metrics"], t, m) for t, m in metric_cols),
                f"{r['params']:,}",
                f"{r['macs']:,}",
                "?" if latency is None else f"{latency:.3f}",
                *([f"{r.get('hv_contribution', 0.0):.4g}"] if data.get("hypervolume") else []),
            ]
        )
    baselines = data.get("baselines") or {}
    bl = describe_baselines(baselines)
    families = sorted({r["family"] for r in front_ if r["family"]})
    architectures = []
    for r in front_:
        lines = (r["architecture"] or {}).get("description") or []
        if lines:
            architectures.append(f"#{r['trial']} {r['family']}:\n" + "\n".join("  " + line for line in lines))
    return (
        f"{head}\nPareto front ({len(front_)} candidate{'' if len(front_) == 1 else 's'}; validation split; "
        "a candidate sampled again is pooled over its trials, shown as #first +more, Delta-MTL mean ± std (seeds); "
        f"families on it: {', '.join(families)}):\n"
        f"{format_table(rows, header)}\n{describe_hypervolume(data.get('hypervolume'))}{bl}"
        + (
            "\n* not confirmed: one trial's seed(s) only; export --pick chooses among confirmed candidates"
            if confirming and not all(r.get("confirmed") for r in front_)
            else ""
        )
        + "".join(
            ("\nconfirmed candidates (validation, mean ± std over seeds):" if i == 0 else "")
            + f"\n  #{r['trial']} {r['family']}/{method_label(r['architecture'] or {})}: "
            f"Delta-MTL {r['delta_mtl']:+.2f} ± {r['delta_mtl_std']:.2f} over {r['seeds']} seeds, "
            f"{r['params']:,} params"
            for i, r in enumerate(data.get("confirmed") or [])
        )
        + "".join(f"\nwarning: {w}" for w in data.get("warnings") or [])
        + ("\narchitectures on the front:\n" + "\n".join(architectures) if architectures else "")
        + ("\n" + describe_stored(data["affinity"]) if data.get("affinity") is not None else "")
        + ("\n" + describe_warm_start(data["warm_start"]) if data.get("warm_start") else "")
    )


def metric_cell(metrics: Any, task: str, metric: str) -> str:
    """A validation metric of a report row, or ``-`` where the candidate does not train the task."""
    value = (metrics or {}).get(task, {}).get(metric)
    return "-" if value is None else f"{value:.4f}"


def describe_hypervolume(volume: Mapping[str, Any] | None) -> str:
    """The hypervolume line of a report (empty without a reference point), ending in a newline."""
    if not volume:
        return ""
    ref = volume["reference"]
    point = ", ".join(f"{o} {p:.4g}" for o, p in zip(ref["objectives"], ref["point"]))
    return (
        f"hypervolume {volume['value']:.4g} (objectives divided by their scales; reference point {point}, "
        "stored with the study; HV contrib.: what the front loses without that candidate)\n"
    )


def describe_baselines(record: Mapping[str, Any]) -> str:
    """The baselines' line of a report: how they were obtained and their values (± seed spread)."""
    how = {
        "tuned": f"tuned over the training space ({record.get('tune_trials', '?')} trials per task)",
        "default": "default training settings",
        "trained": "default training settings",  # studies from before tuned baselines
        "given": "given in the space",
    }.get(str(record.get("source")), "?")
    seeds = record.get("seeds")
    if isinstance(seeds, list) and seeds:
        how += f", mean of seeds {seeds}"
    spread = record.get("spread")
    spread = spread if isinstance(spread, Mapping) else {}

    def number(v: Any) -> str:
        return f"{v:.4f}" if is_number(v) else show(v)

    def one(t: Any, m: Any, v: Any) -> str:
        width = spread.get(t)
        return f"{m} {number(v)}" + (f" ± {number(width[m])}" if isinstance(width, Mapping) and m in width else "")

    stored = record.get("values")
    values = "; ".join(
        f"{t}: " + (", ".join(one(t, m, v) for m, v in ms.items()) if isinstance(ms, Mapping) else show(ms))
        for t, ms in (stored.items() if isinstance(stored, Mapping) else ())
    )
    return f"single-task baselines ({how}; validation): {values}"


# -- picking and exporting ------------------------------------------------------------------------


def pick(
    study: optuna.Study,
    how: str = "delta",
    max_params: int | None = None,
    max_macs: int | None = None,
    min_delta: float = 0.0,
    trial: int | None = None,
    family: str | None = None,
) -> optuna.trial.FrozenTrial:
    """One trial of the front.

    ``delta``: the highest Delta-MTL. ``knee``: the front's knee point
    (:func:`~mtlsearch.scoring.knee_point` over the study's objectives). ``min-cost``: the fewest
    parameters among trials with Delta-MTL >= ``min_delta`` (ties: higher Delta-MTL).
    ``max_params`` / ``max_macs`` drop trials above those costs first. ``family`` picks from the
    front of that family's trials alone (its winner, even where other families dominate it).
    ``trial`` picks a number. After a confirmation stage (``run.confirm``) the pick is made
    on the front of the confirmed candidates alone, on their pooled values.
    """
    if trial is not None:
        match = [t for t in complete_trials(study) if t.number == trial]
        if not match:
            raise ConfigError("--trial", f"no complete trial #{trial} in study `{study.study_name}`")
        return match[0]
    if how not in PICKS:
        raise ConfigError("--pick", f"unknown pick `{how}`; choose one of: {', '.join(PICKS)}")
    if family is not None:
        searched = stored_space(study).search_space.families
        if family not in searched:
            raise ConfigError(
                "--family",
                f"study `{study.study_name}` did not search family `{family}`; it searched: {', '.join(searched)}",
            )
    pool = candidates(study, family)
    if not pool:
        which = f" of family `{family}`" if family else ""
        raise MTLSearchError(f"study `{study.study_name}` has no complete feasible trials{which} to export yet")
    confirmed = [p for p in pool_of(study, family) if p.confirmed]
    if confirmed:  # after a confirmation stage, only confirmed values are trusted: their own front
        directions = [d.name.lower() for d in study.directions]
        pool = [confirmed[i] for i in pareto_front([p.values for p in confirmed], directions)]
    if max_params is not None:
        pool = [p for p in pool if (TrialRecord.from_attrs(p.trial.user_attrs).params or 0) <= max_params]
    if max_macs is not None:
        pool = [p for p in pool if (TrialRecord.from_attrs(p.trial.user_attrs).macs or 0) <= max_macs]
    if how == "min-cost":
        pool = [p for p in pool if p.delta_mtl >= min_delta]
    if not pool:
        raise MTLSearchError(
            f"no trial of the front fits the bounds (max_params={max_params}, max_macs={max_macs}"
            + (f", min_delta={min_delta}" if how == "min-cost" else "")
            + ")"
        )
    if how == "delta":
        return max(pool, key=lambda p: p.delta_mtl).trial
    if how == "min-cost":
        return min(pool, key=lambda p: (TrialRecord.from_attrs(p.trial.user_attrs).params or 0, -p.delta_mtl)).trial
    return pool[knee_point([p.values for p in pool], [d.name.lower() for d in study.directions])].trial


def export_config(
    study: optuna.Study, trial: optuna.trial.FrozenTrial, storage_url: str = "", progress: Progress = QUIET
) -> dict[str, Any]:
    """A plain-data config that rebuilds and retrains the trial's candidate, with provenance.

    The data is not loaded when the study stores its signature; otherwise ``progress`` is told
    which data factory the stored space names before it is imported."""
    problem = stored_problem(study, progress)
    a = trial.user_attrs
    candidate = problem.replay(trial.params, a.get("learned"))
    learned = {"learned": a["learned"]} if "learned" in a else {}
    objectives = study_record(study).objectives or []
    pooled = next((p for p in pool(complete_trials(study)) if trial.number in p.trials), None)
    same = {}
    if pooled is not None and len(pooled.trials) > 1:  # the candidate was trained by several trials
        same = {
            "candidate": {
                "trials": list(pooled.trials),
                "seeds": len(pooled.runs),
                "delta_mtl": pooled.delta_mtl,
                "delta_mtl_std": pooled.delta_std,
                "values": dict(zip(objectives, pooled.values)),
            }
        }
    return {
        "format": EXPORT_FORMAT,
        "space": problem.space.to_raw(),
        "signature": problem.signature(),
        "params": dict(trial.params),
        **learned,
        "seed": a["seed"],
        "architecture": candidate.summary(),
        "provenance": {
            "study": study.study_name,
            "storage": redact(storage_url),
            "trial": trial.number,
            "values": dict(zip(objectives, trial.values)),
            **same,
            "delta_mtl": a.get("delta_mtl"),
            "val_metrics": a.get("val_metrics"),
            "params": a.get("params"),
            "macs": a.get("macs"),
            "latency_ms": a.get("latency_ms"),
            "baselines": study.user_attrs.get(StudyRecord.key("baselines")),
            "data": study.user_attrs.get(StudyRecord.key("data")),
            "sampler": study.user_attrs.get(StudyRecord.key("sampler")),
            "study_seed": study.user_attrs.get(StudyRecord.key("seed")),
            "weights_artifact": a.get("weights_artifact"),
            "exported_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "mtlsearch_version": __version__,
        },
    }


def weights_file(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> Path:
    """The file of the trial's trained weights (an Optuna artifact), checked: stored values are
    untrusted, and the artifacts folder may have moved or been cleaned."""
    artifact = trial.user_attrs.get("weights_artifact")
    if artifact is None:
        raise MTLSearchError(f"trial #{trial.number} has no saved weights (the study ran with save_weights: false)")
    if not isinstance(artifact, str) or not ARTIFACT_ID.fullmatch(artifact):  # stored values are untrusted
        raise MTLSearchError(
            f"trial #{trial.number}: stored weights_artifact {describe_value(artifact)} is not an artifact "
            "id (a UUID); refused"
        )
    folder = Path(study_record(study).artifacts or "")
    file = folder / artifact
    try:
        found = file.is_file()
    except OSError as err:  # a stored folder name the system cannot read (too long...)
        raise MTLSearchError(
            f"trial #{trial.number}: its weights artifact {cut(str(file))} cannot be read ({err.strerror}); "
            "export without --weights, or retrain the config with `mtlsearch train`"
        ) from None
    if not found:
        raise MTLSearchError(
            f"trial #{trial.number}: its weights artifact {artifact} is not in {folder} (moved or deleted); "
            "export without --weights, or retrain the config with `mtlsearch train`"
        )
    return file


def save_weights(study: optuna.Study, trial: optuna.trial.FrozenTrial, path: str | Path) -> None:
    """Copy the trial's trained weights (kept as an Optuna artifact) to ``path``, atomically."""
    write_atomic(path, weights_file(study, trial).read_bytes())


def check_output(path: str | Path, flag: str, force: bool = False) -> Path:
    """``path`` as a file that may be written: not a folder, not an existing file unless
    ``force``; its missing parent folders are created."""
    out = Path(path)
    if out.is_dir():
        raise ConfigError(flag, f"`{path}` is a folder; give a file name, e.g. {out / 'best.yaml'}")
    if out.exists() and not force:
        raise ConfigError(flag, f"`{path}` exists; pass --force to replace it")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ConfigError(flag, f"cannot create the folder of `{path}`: {err.strerror}") from None
    return out


def write_atomic(path: str | Path, content: bytes) -> None:
    """Write ``content`` to a temporary file beside ``path``, then rename it over ``path``: a
    reader never sees half a file, and a failed write leaves the old one."""
    import os
    import tempfile

    target = Path(path)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(content)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_yaml(data: Mapping[str, Any], path: str | Path) -> None:
    write_atomic(path, yaml.safe_dump(dict(data), sort_keys=False).encode())


# -- rebuilding ----------------------------------------------------------------------------------


def read_export(config: str | Path | Mapping[str, Any]) -> dict[str, Any]:
    raw = read_yaml(config) if isinstance(config, (str, Path)) else dict(config)
    if not isinstance(raw, Mapping) or raw.get("format") != EXPORT_FORMAT:
        found = raw.get("format") if isinstance(raw, Mapping) else type(raw).__name__
        raise ConfigError(
            "format", f"expected `{EXPORT_FORMAT}` (a file written by `mtlsearch export`), found `{found}`"
        )
    for key in ("space", "params", "seed"):
        if key not in raw:
            raise ConfigError(key, "required key of an exported config is missing")
    check_params(raw["params"])
    check_seed(raw["seed"], "seed")
    return dict(raw)


def check_params(params: Any) -> None:
    """Trial parameters as an export writes them: a mapping of names to scalars (Optuna's)."""
    if not isinstance(params, Mapping):
        raise ConfigError(
            "params", f"expected a mapping of names to values (as `mtlsearch export` writes it), found {show(params)}"
        )
    for key, value in params.items():
        if not isinstance(key, str):
            raise ConfigError("params", f"expected parameter names (strings) as keys, found {show(key)}")
        if value is not None and not isinstance(value, (str, int, float)):
            raise ConfigError(f"params.{key}", f"expected a string, a number, a boolean or null, found {show(value)}")


def check_seed(seed: Any, path: str) -> int:
    """``seed`` is an integer that torch and Optuna accept: in ``[0, MAX_SEED]``."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise ConfigError(path, f"expected an integer in [0, {MAX_SEED}], found {show(seed)}")
    return seed


def candidate_of(config: str | Path | Mapping[str, Any], progress: Progress = QUIET):
    """The raw export and its candidate; ``progress`` is told which data factory the export names
    before it is imported."""
    raw = read_export(config)
    announce = announce_factory(progress, "the exported config")
    folders = [Path(config).resolve().parent] if isinstance(config, (str, Path)) else []
    problem = Problem(SearchSpace.parse(raw["space"], "space"), raw.get("signature"), announce, folders)
    return raw, problem.replay(raw["params"], raw.get("learned"))


def build_model(config: str | Path | Mapping[str, Any], seed: int | None = None) -> torch.nn.Module:
    """The exact model of an exported config: same modules, parameter names and count.

    Initialised from the config's ``seed`` (or ``seed``); load the trial's weights with
    ``model.load_state_dict(torch.load(path, weights_only=True))``.
    """
    raw, candidate = candidate_of(config)
    model = candidate.build_model(raw["seed"] if seed is None else check_seed(seed, "seed"))
    expected = raw.get("provenance", {}).get("params")
    if expected is not None and count_params(model) != expected:
        raise MTLSearchError(
            f"rebuilt model has {count_params(model):,} parameters, the exported trial had {expected:,}"
        )
    return model


def retrain(
    config: str | Path | Mapping[str, Any],
    seeds: Sequence[int],
    device: str = "auto",
    baselines: bool = True,
    progress: Progress = QUIET,
    threads: int | str | None = None,
) -> dict[str, Any]:
    """Train the exported candidate from scratch for each seed (train split) and score it on the
    test split: per-task test metrics and, with ``baselines``, test Delta-MTL (and each task's
    delta) against single-task networks retrained with the same seeds and each task's baseline
    settings from the study (tuned ones where the study tuned them). Returns means, standard
    deviations, 95 % intervals and every run. ``threads``: torch threads (default ``auto``, see
    :func:`mtlsearch.training.auto_threads`)."""
    for i, seed in enumerate(seeds):
        check_seed(seed, f"seeds[{i}]")
    raw, candidate = candidate_of(config, progress)
    problem = candidate.problem
    use_threads(threads_for(problem, check_threads(threads or "auto", "threads")))
    dev = resolve_device(device)
    distils = candidate.strategy is not None and candidate.strategy.needs_teachers
    settings = baseline_settings(raw, problem) if baselines or distils else {}
    runs = []
    for i, seed in enumerate(seeds, 1):
        model = candidate.build_model(seed)
        strategy = candidate.new_strategy()
        teachers: dict[str, torch.nn.Module] = {}
        if strategy is not None and distils:  # distillation: this seed's single-task networks teach
            teachers = {
                t.name: train_single_task(problem, t, seed, dev, settings[t.name]) for t in problem.primary_tasks
            }
            strategy.set_teachers(teachers, {t.name: t.type for t in problem.tasks})

        def on_epoch(e, i=i, seed=seed):
            progress.event(
                "epoch",
                f"  seed {seed} ({i}/{len(seeds)}) epoch {e.epoch}/{e.epochs} loss {e.train_loss:.4f}",
                transient=True,
                seed=seed,
                epoch=e.epoch,
                loss=e.train_loss,
            )

        train(
            model,
            candidate.tasks,
            candidate.new_weighting(),
            problem.data.train,
            candidate.training,
            dev,
            seed,
            on_epoch,
            strategy=strategy,
            schedule=candidate.new_schedule(),
        )
        run: dict[str, Any] = {"seed": seed, "test_metrics": evaluate(model, candidate.tasks, problem.data.test, dev)}
        if baselines:
            single = {}
            for task in problem.primary_tasks:  # auxiliary tasks are not scored
                progress.event(
                    "single_task",
                    f"  seed {seed} ({i}/{len(seeds)}): single-task `{task.name}` ...",
                    transient=True,
                    seed=seed,
                    task=task.name,
                )
                st = teachers.get(task.name) or train_single_task(problem, task, seed, dev, settings[task.name])
                single[task.name] = evaluate(st, [task], problem.data.test, dev)[task.name]
            run["single_task_test_metrics"] = single
            run["delta_mtl"] = delta_mtl(run["test_metrics"], single, problem.delta_directions, problem.delta_average)
            run["task_delta"] = {
                t: delta_mtl(run["test_metrics"], single, {t: dirs}) for t, dirs in problem.delta_directions.items()
            }
        runs.append(run)
        shown = "; ".join(
            f"{t}: " + ", ".join(f"{m} {v:.4f}" for m, v in ms.items()) for t, ms in run["test_metrics"].items()
        )
        delta = f"  Delta-MTL {run['delta_mtl']:+.2f}%" if baselines else ""
        progress.event(
            "seed",
            f"seed {seed} ({i}/{len(seeds)}): {shown}{delta}",
            seed=seed,
            test_metrics=run["test_metrics"],
            delta_mtl=run.get("delta_mtl"),
        )
    summary = {
        t.name: {m: mean_std([r["test_metrics"][t.name][m] for r in runs]) for m in t.metrics} for t in candidate.tasks
    }
    result = {"config": raw.get("provenance", {}), "seeds": list(seeds), "test_metrics": summary, "runs": runs}
    if baselines:
        result["single_task_test_metrics"] = {
            t.name: {m: mean_std([r["single_task_test_metrics"][t.name][m] for r in runs]) for m in t.metrics}
            for t in problem.primary_tasks
        }
        result["baseline_training"] = settings
        result["delta_mtl"] = mean_interval([r["delta_mtl"] for r in runs])
        result["task_delta"] = {t: mean_interval([r["task_delta"][t] for r in runs]) for t in problem.primary_names}
    return result


def baseline_settings(raw: Mapping[str, Any], problem: Problem) -> dict[str, dict[str, Any]]:
    """Each task's single-task training settings for a fair retraining: those the study's
    baselines were trained with (``provenance.baselines.training``, checked: the file may be
    hand-edited), else every training parameter's default."""
    record = (raw.get("provenance") or {}).get("baselines") or {}
    stored = record.get("training") if isinstance(record, Mapping) else None
    out = {}
    for task in problem.primary_names:
        given = stored.get(task) if isinstance(stored, Mapping) else None
        if not isinstance(given, Mapping):
            out[task] = problem.baseline_training()
            continue
        path = f"provenance.baselines.training.{task}"
        check_keys(given, list(TRAINING), path, required=tuple(TRAINING))
        out[task] = {k: TRAINING[k].check(given[k], f"{path}.{k}") for k in TRAINING}
    return out


def mean_std(values: Sequence[float]) -> dict[str, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0}


def format_retrain(result: Mapping[str, Any]) -> str:
    """The test metrics of the candidate (and of its single-task networks, when retrained) as a table."""
    single = result.get("single_task_test_metrics")

    def cell(s: Mapping[str, float]) -> str:
        return f"{s['mean']:.4f} ± {s['std']:.4f}"

    rows = [
        [f"{t}.{m}", cell(s)] + ([cell(single[t][m]) if t in single else "-"] if single else [])  # auxiliary: none
        for t, ms in result["test_metrics"].items()
        for m, s in ms.items()
    ]
    blank = [""] if single else []
    verdict = ""
    if "delta_mtl" in result:
        for t, d in result.get("task_delta", {}).items():
            rows.append([f"delta {t} %", format_interval(d), *blank])
        d = result["delta_mtl"]
        rows.append(["Delta-MTL %", format_interval(d), *blank])
        if len(result["seeds"]) < 2:
            verdict = "\none seed gives no interval: retrain with --seeds 3 or more before comparing"
        elif d["std"] == 0:
            verdict = (
                f"\nthe {len(result['seeds'])} seeds gave the same Delta-MTL, so the interval has zero width and "
                "measures no noise: nothing is shown until the seeds change the training (initialisation, "
                "shuffling) and give a spread"
            )
        elif d["low"] is None or d["low"] <= 0 <= d["high"]:
            verdict = (
                f"\nthe 95 % interval of Delta-MTL includes 0: over {len(result['seeds'])} seeds this candidate is "
                "not shown to differ from its single-task networks"
            )
        else:
            side = "better" if d["low"] > 0 else "worse"
            verdict = (
                f"\nthe 95 % interval of Delta-MTL excludes 0: the candidate is {side} than its single-task networks"
            )
    table = format_table(rows, ["metric", "candidate", "single-task"] if single else ["metric", "value"])
    return (
        f"test split, {len(result['seeds'])} seed(s) {result['seeds']} (mean ± std, 95 % interval of the mean):\n"
        + "\n".join(line.rstrip() for line in table.splitlines())
        + verdict
    )


def format_interval(d: Mapping[str, Any]) -> str:
    if d["low"] is None:
        return f"{d['mean']:+.2f} ± {d['std']:.2f}"
    return f"{d['mean']:+.2f} ± {d['std']:.2f}  [{d['low']:+.2f}, {d['high']:+.2f}]"
