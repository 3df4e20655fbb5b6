"""``mtlsearch compare``: several studies side by side (the same space under two samplers, or over
seeds): best Delta-MTL, hypervolume, trials and training time, and mean ± std over studies that
are seeds of one setting (the same space and sampler).

Every hypervolume is measured against the first study's reference point, so the numbers compare
even where each study's baselines (and so its own reference) differ a little.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from typing import Any

import optuna
from optuna.trial import TrialState

from ..config import check_name
from ..errors import ConfigError
from ._hypervolume import study_reference
from ._records import study_record, trial_record
from .results import anytime_curve, candidates, complete_trials, format_table, pool_of


def compare(studies: Sequence[optuna.Study]) -> dict[str, Any]:
    """Everything ``mtlsearch compare`` shows, as plain data; studies of different objectives or
    directions are refused, with the difference named."""
    if len(studies) < 2:
        raise ConfigError("STUDY", f"compare needs two studies or more, found {len(studies)}")
    first = studies[0]
    objectives = study_record(first).objectives
    directions = [d.name.lower() for d in first.directions]
    for study in studies[1:]:
        theirs = study_record(study).objectives
        their_directions = [d.name.lower() for d in study.directions]
        if theirs != objectives or their_directions != directions:
            raise ConfigError(
                "STUDY",
                f"study `{study.study_name}` has objectives {theirs} ({', '.join(their_directions)}); "
                f"study `{first.study_name}` has {objectives} ({', '.join(directions)}): compare studies of the same "
                "objectives",
            )
    reference = study_reference(first)
    rows = [summary(study, reference) for study in studies]
    return {
        "objectives": objectives,
        "directions": directions,
        "reference": reference,
        "studies": rows,
        "groups": groups(rows),
    }


def summary(study: optuna.Study, reference: dict[str, Any] | None) -> dict[str, Any]:
    record = study_record(study)
    pooled = pool_of(study)
    confirmed = [p for p in pooled if p.confirmed]
    best_of = confirmed or pooled
    best = max((p.delta_mtl for p in best_of if p.runs), default=None)
    curve = anytime_curve(study, reference) if reference is not None else []
    finished = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL))
    seconds = math.fsum(
        s for t in complete_trials(study) if (s := trial_record(t).train_seconds) is not None and s >= 0
    )
    return {
        "study": study.study_name,
        "sampler": record.sampler,
        "seed": record.seed,
        "fingerprint": record.fingerprint,
        "trials": len(finished),
        "complete": len(complete_trials(study)),
        "front": len(candidates(study)),
        "best_delta_mtl": best,
        "best_confirmed": bool(confirmed),
        "hypervolume": curve[-1]["hypervolume"] if curve else None,
        "curve": curve,
        "train_seconds": seconds,
    }


def groups(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Studies of one setting (same space fingerprint and sampler), two or more: mean ± std of
    their best Delta-MTL, hypervolume and training time."""
    by: dict[tuple[Any, Any], list[dict[str, Any]]] = {}
    for row in rows:
        by.setdefault((row["fingerprint"], row["sampler"]), []).append(row)
    out = []
    for (_, sampler), members in by.items():
        if len(members) < 2:
            continue
        entry: dict[str, Any] = {"sampler": sampler, "studies": [m["study"] for m in members]}
        for key in ("best_delta_mtl", "hypervolume", "train_seconds"):
            values = [m[key] for m in members if m[key] is not None]
            entry[key] = (
                {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0}
                if values
                else None
            )
        out.append(entry)
    return out


def format_compare(data: Mapping[str, Any]) -> str:
    """The comparison as a table, one row per study, then one per group of seeds."""

    def num(value: Any, fmt: str) -> str:
        return "?" if value is None else format(value, fmt)

    def spread(entry: Any, fmt: str) -> str:
        return "?" if entry is None else f"{format(entry['mean'], fmt)} ± {format(entry['std'], fmt.lstrip('+'))}"

    rows = [
        [
            r["study"],
            str(r["sampler"] or "?"),
            str(r["seed"] if r["seed"] is not None else "?"),
            str(r["trials"]),
            num(r["best_delta_mtl"], "+.2f") + ("" if r["best_confirmed"] else " *"),
            num(r["hypervolume"], ".4g"),
            num(r["train_seconds"], ".0f"),
        ]
        for r in data["studies"]
    ]
    for g in data["groups"]:
        rows.append(
            [
                f"mean of {len(g['studies'])}",
                str(g["sampler"] or "?"),
                "",
                "",
                spread(g["best_delta_mtl"], "+.2f"),
                spread(g["hypervolume"], ".4g"),
                spread(g["train_seconds"], ".0f"),
            ]
        )
    header = ["study", "sampler", "seed", "trials", "best Delta-MTL %", "hypervolume", "train s"]
    note = (
        "hypervolume against the first study's reference point; * best Delta-MTL of unconfirmed candidates "
        "(one trial's seeds); train s: seconds of training summed over complete trials"
    )
    if data["reference"] is None:
        note = "no hypervolume: the first study has no reference point yet (no stored baselines)"
    objectives = ", ".join(f"{o} ({d})" for o, d in zip(data["objectives"] or [], data["directions"]))
    return f"objectives {objectives}\n{format_table(rows, header)}\n{note}"


def check_names(names: Sequence[str]) -> None:
    """Each study named once, each name passing the check of ``STUDY`` (no control characters)."""
    seen = set()
    for name in names:
        check_name(name, "STUDY")
        if name in seen:
            raise ConfigError("STUDY", f"study `{name}` is named twice")
        seen.add(name)
