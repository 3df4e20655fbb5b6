"""What a study stores, typed: every trial and study user attribute mtlsearch writes.

:class:`TrialRecord` and :class:`StudyRecord` are frozen dataclasses whose fields are the stored
attributes; :meth:`TrialRecord.to_attrs` / :meth:`TrialRecord.from_attrs` (and the same on
:class:`StudyRecord`) convert to and from Optuna's user attributes. Values read back are
untrusted (anyone who can write to a shared storage can write them): the code that turns one into
a path or a seed checks it (:func:`mtlsearch.checkpoints.run_id_from`).

The README's "What a study stores" lists exactly these fields (a test checks it).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, cast

STUDY_PREFIX = "mtlsearch."  # study attribute names are "mtlsearch.<field>"


def _doc(text: str) -> dict[str, str]:
    return {"doc": text}


class _Record:
    """Conversion of a frozen record dataclass to and from Optuna user attributes, each field
    stored under ``PREFIX + name`` (``None`` fields are not stored, unknown attributes ignored)."""

    PREFIX: ClassVar[str] = ""

    def to_attrs(self) -> dict[str, Any]:
        """The stored attributes: every field that is not ``None``."""
        values = ((f.name, getattr(self, f.name)) for f in fields(self))  # type: ignore[arg-type]
        return {self.PREFIX + name: value for name, value in values if value is not None}

    @classmethod
    def from_attrs(cls, attrs: Mapping[str, Any]) -> Any:
        """A record of stored attributes; attributes that are not fields are ignored, and a
        stored value of the wrong type (anyone who can write to the storage can write one) reads
        as absent."""
        values = {}
        for f in fields(cls):  # type: ignore[arg-type]
            key = cls.PREFIX + f.name
            if key in attrs and (value := typed(attrs[key], str(f.type))) is not None:
                values[f.name] = value
        return cls(**values)


_TYPES: dict[str, Any] = {
    "str": str,
    "int": int,
    "float": (int, float),
    "bool": bool,
    "dict": Mapping,
    "list": list,
}


def typed(value: Any, annotation: str) -> Any:
    """``value`` if it has the type of a record field annotated ``annotation`` (``"float | None"``),
    else ``None``: a bool is not a number, a float must be finite, an int fits 64 bits."""
    kind = annotation.split("|")[0].strip()
    if isinstance(value, bool) and kind != "bool":
        return None
    if not isinstance(value, _TYPES[kind]):
        return None
    value = cast(Any, value)
    if kind == "float" and not (abs(value) < 2**1023 and math.isfinite(float(value))):
        return None
    if kind == "int" and not -(2**63) <= value < 2**63:
        return None
    return float(value) if kind == "float" else value


@dataclass(frozen=True)
class TrialRecord(_Record):
    """The user attributes of one trial. ``None`` fields are not stored."""

    run_id: str | None = field(
        default=None,
        metadata=_doc(
            "16 hex digits: the trial's checkpoint folder, what a retry continues; a stored value in any other form is "
            "refused and the trial starts over"
        ),
    )
    seed: int | None = field(default=None, metadata=_doc("the seed the trial's model and training use"))
    worker: str | None = field(default=None, metadata=_doc("`host:pid` of the process that ran it (Optuna backend)"))
    architecture: dict | None = field(
        default=None,
        metadata=_doc(
            "family, per-task paths and sharing per block or the family's settings, a readable description, "
            "weighting, training hyperparameters"
        ),
    )
    learned: dict | None = field(
        default=None,
        metadata=_doc(
            "what a family that learns its architecture inside the trial learned (the policy of `adashare_learned`)"
        ),
    )
    candidate: str | None = field(
        default=None,
        metadata=_doc(
            "a hash of the canonical architecture, weighting and training settings: trials with the same one "
            "are one candidate on several seeds, pooled by `report` and `export`"
        ),
    )
    confirm_of: int | None = field(
        default=None,
        metadata=_doc(
            "a confirmation trial: one more seed of the candidate whose first trial has this number "
            "(it does not count toward `n_trials`)"
        ),
    )
    val_metrics: dict | None = field(default=None, metadata=_doc("`{task: {metric: value}}` on the validation split"))
    delta_mtl: float | None = field(
        default=None, metadata=_doc("validation Delta-MTL against the baselines, in % (the mean over `seeds`)")
    )
    seeds: list | None = field(
        default=None, metadata=_doc("with `run.seeds_per_trial` > 1: the seeds the candidate trained on")
    )
    seed_delta_mtl: list | None = field(
        default=None, metadata=_doc("with several seeds: the validation Delta-MTL of each")
    )
    delta_mtl_std: float | None = field(
        default=None, metadata=_doc("with several seeds: the standard deviation of those")
    )
    params: int | None = field(default=None, metadata=_doc("parameters of the model"))
    macs: int | None = field(default=None, metadata=_doc("multiply-accumulates of one forward for all tasks"))
    latency_ms: float | None = field(default=None, metadata=_doc("median forward latency on the trial's device"))
    train_seconds: float | None = field(default=None, metadata=_doc("wall-clock seconds of learning and training"))
    weights_artifact: str | None = field(default=None, metadata=_doc("the Optuna artifact id of the trained weights"))
    epoch_delta_mtl: list | None = field(
        default=None,
        metadata=_doc("validation Delta-MTL after each epoch (with early stopping, and on the Ray backend)"),
    )
    resumed_from_epoch: int | None = field(
        default=None, metadata=_doc("on a retry that continued from a checkpoint: that checkpoint's epoch")
    )
    fail_reason: str | None = field(default=None, metadata=_doc("why a FAIL trial failed"))
    pruned_reason: str | None = field(
        default=None, metadata=_doc("why a PRUNED trial was pruned (infeasible, stopped early)")
    )
    stopped_at_epoch: int | None = field(
        default=None, metadata=_doc("the epoch after which Ray's scheduler stopped it")
    )
    retry_of: int | None = field(
        default=None,
        metadata=_doc(
            "the number of the interrupted trial this one retries (that one then does not count toward the budget)"
        ),
    )
    surplus: bool | None = field(
        default=None,
        metadata=_doc("true for a trial started after other workers had met the budget; not run, not counted"),
    )
    ray_trial_id: str | None = field(default=None, metadata=_doc("the Ray Tune trial id (Ray backend)"))
    warm_start: str | None = field(
        default=None,
        metadata=_doc(
            "a trial enqueued by `run --warm-start affinity`: the label of the tree it proposed "
            "(`affinity lookahead k=2 split@2: {a,b} {c}`)"
        ),
    )

    KEYS: ClassVar[tuple[str, ...]]

    @classmethod
    def from_attrs(cls, attrs: Mapping[str, Any]) -> TrialRecord:
        return super().from_attrs(attrs)

    def replace(self, **changes: Any) -> TrialRecord:
        return dataclasses.replace(self, **changes)


TrialRecord.KEYS = tuple(f.name for f in fields(TrialRecord))


@dataclass(frozen=True)
class StudyRecord(_Record):
    """The study user attributes, each stored as ``mtlsearch.<field>``."""

    version: str | None = field(default=None, metadata=_doc("the mtlsearch version that created the study"))
    space: dict | None = field(default=None, metadata=_doc("the space, without its `run` section"))
    fingerprint: str | None = field(default=None, metadata=_doc("a hash of the space: a different space is refused"))
    objectives: list | None = field(default=None, metadata=_doc("the objectives, in the order of the trial values"))
    seed: int | None = field(default=None, metadata=_doc("the run seed"))
    sampler: str | None = field(default=None, metadata=_doc("the sampler's name"))
    artifacts: str | None = field(default=None, metadata=_doc("the folder of trial weights and checkpoints"))
    n_trials: int | None = field(default=None, metadata=_doc("the study-wide budget of the latest run"))
    run: dict | None = field(
        default=None,
        metadata=_doc(
            "the run settings that joining workers use (budget, seed, sampler, heartbeats, early stopping, deadline) "
            "and a resume keeps (workers, threads)"
        ),
    )
    data: dict | None = field(default=None, metadata=_doc("split seed and sizes, facts of the benchmark"))
    signature: dict | None = field(
        default=None,
        metadata=_doc("the input shape and the resolved tasks: export and rebuild need no data"),
    )
    metric_directions: dict | None = field(
        default=None,
        metadata=_doc("each task's metrics: `max` where higher is better, `min` where lower is (the report's charts)"),
    )
    baselines: dict | None = field(
        default=None,
        metadata=_doc(
            "the single-task baselines' validation values and how they were obtained; with `keep_weights`, "
            "`weights` (each task's network as an artifact id) and `weights_seed`"
        ),
    )
    ray: dict | None = field(
        default=None, metadata=_doc("the Ray cluster address and per-trial resources (Ray backend)")
    )
    confirm: dict | None = field(
        default=None,
        metadata=_doc("the confirmation stage: `top`, `seeds` and the first trial of each `chosen` candidate"),
    )
    hypervolume: dict | None = field(
        default=None,
        metadata=_doc(
            "the hypervolume's reference `point` and `scale` per objective, derived once from the baselines and the "
            "single-task networks' cost (the `rule`) so that studies of one space compare"
        ),
    )
    affinity: dict | None = field(
        default=None,
        metadata=_doc(
            "task affinity of `mtlsearch affinity`: the `tasks`, one T x T matrix per method (`methods`; row i, "
            "column j: the effect of task i on task j), the run's `seed`, `epochs`, `steps`, `seconds`, and its "
            "`cost_ratio` to one candidate's training (`candidate_seconds`)"
        ),
    )
    warm_start: dict | None = field(
        default=None,
        metadata=_doc(
            "what `run --warm-start affinity` enqueued, once per study: the affinity `method`, its `seconds` and "
            "`cost_ratio`, and the `proposals` (each `label`, `score`, `groups`, `search` (the grouping search "
            "that ran), `split_block`, `params` (as enqueued))"
        ),
    )

    PREFIX: ClassVar[str] = STUDY_PREFIX
    KEYS: ClassVar[tuple[str, ...]]

    @staticmethod
    def key(name: str) -> str:
        """The stored attribute name of field ``name``."""
        if name not in StudyRecord.KEYS:
            raise KeyError(f"unknown study record field `{name}`; choose one of: {', '.join(StudyRecord.KEYS)}")
        return STUDY_PREFIX + name

    @classmethod
    def from_attrs(cls, attrs: Mapping[str, Any]) -> StudyRecord:
        return super().from_attrs(attrs)


StudyRecord.KEYS = tuple(f.name for f in fields(StudyRecord))


def write_trial(trial: Any, **values: Any) -> None:
    """Store trial record fields on an Optuna trial (names checked against :class:`TrialRecord`;
    ``None`` values are skipped)."""
    for key, value in TrialRecord(**values).to_attrs().items():
        trial.set_user_attr(key, value)


def write_study(study: Any, **values: Any) -> None:
    """Store study record fields on an Optuna study (names checked against :class:`StudyRecord`)."""
    for key, value in StudyRecord(**values).to_attrs().items():
        study.set_user_attr(key, value)


def study_record(study: Any) -> StudyRecord:
    return StudyRecord.from_attrs(study.user_attrs)


def trial_record(trial: Any) -> TrialRecord:
    return TrialRecord.from_attrs(trial.user_attrs)


def documented_fields() -> dict[str, dict[str, str]]:
    """Each record's fields and their one-line meaning (what the README lists)."""
    return {
        "study": {STUDY_PREFIX + f.name: f.metadata["doc"] for f in fields(StudyRecord)},
        "trial": {f.name: f.metadata["doc"] for f in fields(TrialRecord)},
    }


def markdown() -> str:
    """The README's tables of stored attributes."""
    lines = []
    for kind, docs in documented_fields().items():
        lines += [f"| {kind} user attribute | what it holds |", "|---|---|"]
        lines += [f"| `{name}` | {doc} |" for name, doc in docs.items()]
        lines.append("")
    return "\n".join(lines).rstrip("\n") + "\n"
