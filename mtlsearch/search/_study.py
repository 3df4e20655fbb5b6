"""Creating and continuing a study: check that a stored study was made for this space and these
objectives, store what the study is (:class:`~mtlsearch.search._records.StudyRecord`), and set a
run up the same way for every backend (:func:`start_run`).

What a study stores is typed in :mod:`mtlsearch.search._records`; it is readable with plain
``optuna.load_study`` and ``optuna-dashboard``.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import optuna

from ..config import RunConfig, SearchSpace
from ..errors import ConfigError, StudyMismatchError
from ..problem import Direction, Problem
from ..storage_url import redact
from ..training import resolve_device
from ..version import __version__
from ._budget import finished_trials
from ._progress import Progress
from ._records import study_record, write_study
from ._sampler import make_sampler
from ._storage import open_storage
from ._warm_start import check_warm_start, enqueue_warm_start


def artifacts_dir(run: RunConfig) -> Path:
    """Where trial weights are kept: ``run.artifacts``, else beside a file storage, else ``./``."""
    if run.artifacts:
        return Path(run.artifacts).resolve()
    for prefix in ("sqlite:///", "journal:///"):
        if run.storage.startswith(prefix):
            file = Path(run.storage[len(prefix) :])
            return (file.parent / f"{file.stem}_artifacts").resolve()
    return Path("mtlsearch_artifacts").resolve()


def check_writable(folder: Path) -> Path:
    """``folder`` exists (created when missing) and takes a file: checked before the baselines
    train, so an unusable artifacts folder costs no trial."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-check-"):
            pass
    except OSError as err:
        raise ConfigError("run.artifacts", f"cannot write to `{folder}`: {err.strerror or err}") from None
    return folder


def open_study(
    space: SearchSpace, run: RunConfig, directions: Sequence[Direction], storage: Any = None
) -> optuna.Study:
    """Create the study, or continue it after checking it was made for this space and objectives.

    Race-free: of two processes creating one study at the same moment, the storage lets one
    create it; the other waits for its record (:func:`wait_for_record`) and continues it."""
    name = run.study or space.name
    storage = storage if storage is not None else open_storage(run.storage)
    if name not in {s.study_name for s in optuna.get_all_study_summaries(storage, include_best_trial=False)}:
        try:
            study = optuna.create_study(
                study_name=name,
                storage=storage,
                directions=list(directions),
                sampler=make_sampler(run.sampler, run.seed),
            )
        except optuna.exceptions.DuplicatedStudyError:  # another process created it a moment ago
            pass
        else:
            return _write_record(study, space, run)
    study = optuna.load_study(study_name=name, storage=storage)
    wait_for_record(study, run)
    check_compatible(study, space, directions, run)
    study.sampler = make_sampler(study_record(study).sampler or run.sampler, run.seed)
    return study


def _write_record(study: optuna.Study, space: SearchSpace, run: RunConfig) -> optuna.Study:
    return write_record(study, space, run.seed, run.sampler, str(artifacts_dir(run)))


def write_record(
    study: optuna.Study, space: SearchSpace, seed: int, sampler: str, artifacts: str | None
) -> optuna.Study:
    """Store what the study is (its space, objectives, seed, sampler, artifacts folder)."""
    write_study(
        study,
        version=__version__,
        space=space.to_raw(),
        objectives=list(space.objectives),
        seed=seed,
        sampler=sampler,
        artifacts=artifacts,
    )
    set_metric_names(study, space.objectives)
    write_study(study, fingerprint=space.fingerprint())  # last: it marks the record complete (wait_for_record)
    return study


def set_metric_names(study: optuna.Study, objectives: Sequence[str]) -> None:
    """Name the study's values after its objectives (``study.metric_names``), so that Optuna's
    plots and optuna-dashboard label them (experimental in Optuna 5: its warning is silenced)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names(list(objectives))


RECORD_WAIT = 10.0  # seconds a process that found a new, empty study waits for its creator's record


def wait_for_record(study: optuna.Study, run: RunConfig) -> None:
    """A study that another process created a moment ago may not hold its record yet (its
    ``fingerprint`` is written last): wait up to :data:`RECORD_WAIT` seconds for it while the
    study has no trials; a study with trials but no record is judged at once."""
    deadline = time.monotonic() + RECORD_WAIT
    while study_record(study).fingerprint is None and not study.get_trials(deepcopy=False):
        if time.monotonic() >= deadline:
            raise StudyMismatchError(
                f"study `{study.study_name}` in {redact(run.storage)} holds no mtlsearch record after "
                f"{RECORD_WAIT:g} s: it was not created by mtlsearch, or the process creating it stopped before "
                "storing its space; choose another --study name"
            )
        time.sleep(0.05)


def check_compatible(study: optuna.Study, space: SearchSpace, directions: Sequence[Direction], run: RunConfig) -> None:
    record = study_record(study)
    where = f"study `{study.study_name}` in {redact(run.storage)}"
    if record.fingerprint is None:
        raise StudyMismatchError(f"{where} was not created by mtlsearch; choose another --study name")
    stored = [d.name.lower() for d in study.directions]
    if stored != list(directions) or record.objectives != list(space.objectives):
        raise StudyMismatchError(
            f"{where} optimises {record.objectives} ({', '.join(stored)}), but this space asks for "
            f"{list(space.objectives)} ({', '.join(directions)}); use a new --study name or the original objectives"
        )
    if record.fingerprint != space.fingerprint():
        diff = first_difference(record.space or {}, space.to_raw())
        raise StudyMismatchError(
            f"{where} was created with a different search space (first difference at `{diff}`); "
            "use a new --study name, or `mtlsearch resume` to continue with the stored space"
        )


def first_difference(a: Any, b: Any, path: str = "") -> str:
    """The dotted path of the first place where two plain-data trees differ."""
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        for key in list(dict.fromkeys([*a, *b])):
            if key not in a or key not in b or a[key] != b[key]:
                sub = f"{path}.{key}" if path else str(key)
                return first_difference(a.get(key), b.get(key), sub) if key in a and key in b else sub
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b)):
            if x != y:
                return first_difference(x, y, f"{path}[{i}]")
    return path or "(top)"


def stored_space(study: optuna.Study) -> SearchSpace:
    raw = study_record(study).space
    if raw is None:
        raise StudyMismatchError(f"study `{study.study_name}` was not created by mtlsearch (it has no stored space)")
    return SearchSpace.parse(raw)


def stored_problem(study: optuna.Study, progress: Progress | None = None) -> Problem:
    """The problem of a stored study; its data is loaded only when used (training, scoring).

    ``progress`` is told which data factory the stored space names before it is imported
    (:func:`announce_factory`)."""
    announce = announce_factory(progress, "the stored space") if progress is not None else None
    return Problem(stored_space(study), study_record(study).signature, announce)


def announce_factory(progress: Progress, source: str) -> Callable[..., None]:
    """A notice, as a ``user_code`` progress event, that the data factory named by ``source`` (a
    stored space, an exported config: files someone else may have written) is about to be
    imported: its code runs with the user's permissions."""

    def announce(path: str, what: str = "data factory") -> None:  # what: also a task's metric or loss
        progress.event(
            "user_code",
            f"importing {what} `{path}` named by {source} (user code runs with your permissions)",
            factory=path,
        )

    return announce


def resumed_run(study: optuna.Study, storage: str, **overrides: Any) -> RunConfig:
    """The run settings that continue a stored study: its seed, sampler, artifacts folder and
    stored run settings, its last budget unless ``n_trials`` is given, and ``overrides``
    (``None`` values are ignored)."""
    record = study_record(study)
    stored = {k: v for k, v in (record.run or {}).items() if k in RunConfig.KEYS and k not in ("n_trials", "deadline")}
    base = {
        **stored,
        "study": study.study_name,
        "storage": storage,
        "sampler": record.sampler or "tpe",
        "seed": record.seed or 0,
        "n_trials": record.n_trials or 20,
        "timeout": None,
        "device": "auto",
        "artifacts": record.artifacts,
    }
    return RunConfig(**base).replace(**overrides)


def run_settings(run: RunConfig, deadline: float | None) -> dict[str, Any]:
    """The run settings a study stores for workers that join it (study record ``run``)."""
    return {
        "n_trials": run.n_trials,
        "seed": run.seed,
        "sampler": run.sampler,
        "save_weights": run.save_weights,
        "heartbeat_interval": run.heartbeat_interval,
        "grace_period": run.grace_period,
        "early_stopping": run.early_stopping,
        "min_trials": run.min_trials,
        "min_epochs": run.min_epochs,
        "seeds_per_trial": run.seeds_per_trial,
        "confirm": run.confirm,
        "workers": run.workers,  # a resume keeps them
        "threads": run.threads,
        "warm_start": run.warm_start,  # a resume keeps it; the study record `warm_start` says it ran once
        "deadline": deadline,
    }


def start_run(
    space: SearchSpace, run: RunConfig, problem: Problem, storage: Any, progress: Progress, where: str, **event: Any
) -> tuple[optuna.Study, dict[str, Any]]:
    """Open (or create) the study of a run, store the run's budget and settings, and say where it
    stands; the same for every backend. ``where`` completes the first progress line (device,
    cluster); ``event`` adds to its data. With ``run.warm_start: affinity``, the trees that task
    affinity proposes are enqueued here, before any trial (:mod:`._warm_start`)."""
    check_warm_start(problem, run)
    study = open_study(space, run, problem.directions, storage)
    deadline = time.time() + run.timeout if run.timeout else None
    settings = run_settings(run, deadline)
    write_study(
        study,
        n_trials=run.n_trials,
        run=settings,
        signature=problem.signature(),
        metric_directions=problem.metric_directions,
    )
    info = problem.data.info
    extra = f", measured label correlation {info['label_correlation']}" if "label_correlation" in info else ""
    if isinstance(info.get("positive_rate"), dict):  # the real tabular benchmarks: how rare each label is
        extra += ", train positive rate " + ", ".join(f"{k} {v}" for k, v in info["positive_rate"].items())
    done = len(finished_trials(study))
    progress.event(
        "study",
        f"study `{study.study_name}` ({redact(run.storage)}): {done} finished trials, target {run.n_trials}; "
        f"{where}; data {problem.data.sizes()}{extra}",
        study=study.study_name,
        finished=done,
        target=run.n_trials,
        data=problem.data.sizes(),
        **event,
    )
    if run.warm_start == "affinity" and done < run.n_trials:
        enqueue_warm_start(study, problem, run, progress, resolve_device(run.device))
    return study, settings
