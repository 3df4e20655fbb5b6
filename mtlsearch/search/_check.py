"""``mtlsearch check``: read every trial, checkpoint and weights artifact of a study, say what is
damaged, and with ``repair`` fix what can be fixed without losing a finished trial.

What is checked, and what ``repair`` does:

* torn journal lines (:mod:`~mtlsearch.search._journal`): ended; the dropped bytes are kept in
  ``FILE.torn-OFFSET.bak``. A damaged line that is no torn write is only reported;
* a damaged SQLite file: reported with its recovery steps; never written;
* trials stuck RUNNING whose heartbeat is stale (their worker is gone): failed, and a retry
  queued with the same parameters and run id, as the next worker would; RUNNING trials with a
  fresh heartbeat are left alone;
* checkpoints, read as a retry reads them (newest first, down to the first readable one): an
  unreadable one is renamed ``NAME.unreadable`` (kept, never tried again);
* weights artifacts of the trials that stored one: a missing or unreadable one is reported.

Without ``repair`` nothing is written: a journal with torn lines is read through a repaired copy
in a temporary folder, so the report shows what a repair would leave.
"""

from __future__ import annotations

import dataclasses
import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from ..checkpoints import CheckpointStore, check_run_id
from ..config import RunConfig
from ..errors import ConfigError, DamagedStorageError, MTLSearchError, cut
from ..storage_url import redact
from . import _journal
from ._compat import stale_trial_ids, storage_trial_id
from ._records import study_record
from ._storage import HEARTBEAT_ATTR, journal_path, load_study, open_storage, recover

SEED = re.compile(r"seed-\d+")  # a seed's subfolder of a run's checkpoints
KINDS = (
    "torn_record",
    "damaged_storage",
    "stale_trial",
    "unreadable_checkpoint",
    "unsafe_checkpoint",
    "missing_artifact",
    "unreadable_artifact",
)


@dataclass(frozen=True)
class Finding:
    """One problem: what (``kind``) and where (``subject``: a file, a trial), what is wrong, and
    what a repair does or did (``fix``); ``repairable`` says whether ``check --repair`` fixes it,
    ``repaired`` whether it did."""

    kind: str  # one of KINDS
    subject: str
    problem: str
    fix: str
    repairable: bool
    repaired: bool = False

    def line(self) -> str:
        status = "repaired" if self.repaired else "problem"
        return " ".join(f"{status}: {self.subject}: {self.problem}; {self.fix}".split())  # one line


@dataclass(frozen=True)
class CheckReport:
    """What ``mtlsearch check`` found in one study (after the repair, with ``repair``)."""

    study: str
    storage: str  # the URL, password redacted
    repair: bool
    trials: dict[str, int]  # trials per state
    checkpoints: int  # checkpoint files read
    artifacts: int  # weights artifacts read
    findings: tuple[Finding, ...]

    @property
    def healthy(self) -> bool:
        """No problem is left (none found, or every one repaired)."""
        return all(f.repaired for f in self.findings)

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "healthy": self.healthy}


def check_study(study_name: str, url: str, repair: bool = False) -> CheckReport:
    """Check (and with ``repair``, repair) study ``study_name`` in storage ``url``; see the module
    docstring. Raises :class:`~mtlsearch.errors.ConfigError` for a missing file or study."""
    shown = redact(url)
    findings: list[Finding] = []
    with tempfile.TemporaryDirectory(prefix="mtlsearch-check-") as tmp:
        try:
            read_url = _journal_first(url, repair, Path(tmp), findings)
            study = load_study(study_name, read_url)
            run = study_record(study).run or {}
            grace = _seconds(run.get("grace_period"), RunConfig.grace_period)
            storage = open_storage(read_url, heartbeat=(_seconds(run.get("heartbeat_interval"), 1), grace))
        except DamagedStorageError as err:
            if not any(f.kind == "torn_record" and not f.repairable for f in findings):  # else said already
                findings.append(Finding("damaged_storage", shown, err.message, "not repairable by mtlsearch", False))
            return CheckReport(study_name, shown, repair, {}, 0, 0, tuple(findings))
        study = optuna.load_study(study_name=study_name, storage=storage)
        findings += _stale_trials(study, storage, grace, repair)
        artifacts = study_record(study).artifacts
        found, checkpoints = _checkpoints(study, Path(artifacts) / "checkpoints" if artifacts else None, repair)
        findings += found
        found, read = _artifacts(study)
        findings += found
        counts: dict[str, int] = {}
        for t in study.get_trials(deepcopy=False):
            counts[t.state.name.lower()] = counts.get(t.state.name.lower(), 0) + 1
    return CheckReport(study_name, shown, repair, counts, checkpoints, read, tuple(findings))


def _seconds(stored: Any, default: int) -> int:
    """A stored heartbeat setting (untrusted: anyone who can write the storage can write it)."""
    return stored if isinstance(stored, int) and not isinstance(stored, bool) and stored >= 1 else default


def _journal_first(url: str, repair: bool, tmp: Path, findings: list[Finding]) -> str:
    """The URL to read the study from, after the storage file's own check: a journal's torn
    lines are repaired in place (``repair``) or in a copy under ``tmp``."""
    file = _storage_file(url)
    if not url.startswith("journal://"):
        return url
    if repair:
        torn = _journal.repair(file)
    else:
        data = file.read_bytes()
        torn = _journal.scan(data)
    findings += [_torn_finding(file, t, repair) for t in torn]
    if repair or not torn:
        return url
    copy = tmp / file.name
    copy.write_bytes(_journal.repaired(data, torn))
    return "journal:///" + str(copy.resolve())


def _storage_file(url: str) -> Path:
    """The file of a file storage (a missing one is refused: opening would create it)."""
    if url.startswith("journal://"):
        file = Path(journal_path(url))
    elif url.startswith("sqlite:///") and url[len("sqlite:///") :] not in ("", ":memory:"):
        file = Path(url[len("sqlite:///") :])
    else:
        return Path()
    if not file.is_file():
        raise ConfigError("--storage", f"no file `{file}` (for {redact(url)})")
    return file


def _torn_finding(file: Path, t: _journal.TornLine, repair: bool) -> Finding:
    if not t.repairable:
        fix = (
            "not repairable by mtlsearch (no torn write: disk damage?); restore the file from a backup, or remove "
            "the line by hand (the trials after it may be renumbered)"
        )
    else:
        parts = []
        if t.dropped.strip():
            parts.append(f"drop{'ped' if repair else 's'} the torn part (kept in {t.backup(file)})")
        elif not t.kept:
            parts.append(f"drop{'ped' if repair else 's'} the empty line")
        if t.kept:
            parts.append(
                f"{'kept' if repair else 'keeps'} the whole record" + (", ended with a newline" if t.last else "")
            )
        fix = ("" if repair else "--repair ") + " and ".join(parts)
    return Finding("torn_record", f"journal {file}", t.describe(), fix, t.repairable, repair and t.repairable)


def _stale_trials(study: optuna.Study, storage: Any, grace: int, repair: bool) -> list[Finding]:
    """RUNNING trials whose heartbeat is stale; failed and queued again with ``repair``."""
    stale_ids = set(stale_trial_ids(storage, storage.get_study_id_from_name(study.study_name)))
    stale = [
        t for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)) if storage_trial_id(t) in stale_ids
    ]
    if not stale:
        return []
    failed = set(recover(study)) if repair else set()
    retries = {t.system_attrs.get("failed_trial"): t.number for t in study.get_trials(deepcopy=False)}
    now = time.time()
    findings = []
    for t in stale:
        beat = t.system_attrs.get(HEARTBEAT_ATTR)
        age = f"last heartbeat {now - beat:.0f} s ago" if isinstance(beat, (int, float)) else "no recent heartbeat"
        problem = f"RUNNING, {age} (grace period {grace} s): its worker is gone"
        if t.number in failed:
            retry = retries.get(t.number)
            fix = "failed it; " + (
                f"its retry is trial #{retry}" if retry is not None else "retried too often to queue again"
            )
        else:
            fix = "--repair fails it and queues a retry with its parameters (it continues from its last checkpoint)"
        findings.append(Finding("stale_trial", f"trial #{t.number}", problem, fix, True, t.number in failed))
    return findings


def _checkpoints(study: optuna.Study, root: Path | None, repair: bool) -> tuple[list[Finding], int]:
    """Each run folder's checkpoints, read as a retry reads them; unreadable ones set aside with
    ``repair``. Returns the findings and the number of files read."""
    if root is None:
        return [], 0
    try:  # the folder is a stored attribute: a name too long for the system, a folder not readable...
        if not root.is_dir():
            return [], 0
        folders = sorted(root.iterdir())
    except OSError as err:
        problem = f"cannot be read ({err.strerror or type(err).__name__})"
        fix = "not repairable by mtlsearch: check the study's stored artifacts folder"
        return [Finding("unreadable_checkpoint", f"checkpoint folder {cut(str(root))}", problem, fix, False)], 0
    owners: dict[str, list[int]] = {}
    for t in study.get_trials(deepcopy=False):
        owners.setdefault(str(t.user_attrs.get("run_id")), []).append(t.number)
    findings, read = [], 0
    for folder in folders:
        if not check_run_id(folder.name) or not folder.is_dir():
            continue  # not a run folder of mtlsearch's
        of = ", ".join(f"#{n}" for n in owners.get(folder.name, [])) or "no trial"
        messages: list[str] = []
        try:  # a run's own folder, and one per seed with several seeds per trial
            store = CheckpointStore(folder, warn=messages.append, root=root)
            stores = [store, *(store.sub(p.name) for p in sorted(folder.iterdir()) if SEED.fullmatch(p.name))]
        except ValueError as err:  # a link out of the checkpoint root
            fix = "not repairable by mtlsearch: remove the link; the trial's retry runs without checkpoints meanwhile"
            findings.append(Finding("unsafe_checkpoint", f"checkpoints of {of}", str(err), fix, False))
            continue
        for s in stores:
            files = s.files()
            state = s.load()
            bad = files if state is None else files[: files.index(Path(state["path"]))]
            read += len(bad) + (state is not None)
            for path, message in zip(bad, messages[-len(bad) :] if bad else []):
                if repair:
                    path.rename(path.with_name(path.name + ".unreadable"))
                fix = (
                    f"{'renamed' if repair else '--repair renames'} it {path.name}.unreadable (kept, never read again)"
                )
                problem = message.removeprefix(f"checkpoint {path} is ")
                findings.append(
                    Finding("unreadable_checkpoint", f"checkpoint {path} (trial {of})", problem, fix, True, repair)
                )
    return findings, read


def _artifacts(study: optuna.Study) -> tuple[list[Finding], int]:
    """The weights artifact of every trial that stored one: present and readable."""
    import torch

    from .results import weights_file

    findings, read = [], 0
    for t in study.get_trials(deepcopy=False):
        if t.user_attrs.get("weights_artifact") is None:
            continue
        subject = f"trial #{t.number} ({t.state.name})"
        try:
            file = weights_file(study, t)
        except MTLSearchError as err:
            problem = str(err).removeprefix(f"trial #{t.number}: ")
            findings.append(Finding("missing_artifact", subject, problem, "not repairable by mtlsearch", False))
            continue
        except OSError as err:  # the stored artifacts folder: a name too long for the system...
            problem = f"its weights artifact {cut(str(err.filename))} cannot be read ({err.strerror or err})"
            findings.append(Finding("missing_artifact", subject, problem, "not repairable by mtlsearch", False))
            continue
        try:
            torch.load(file, map_location="cpu", weights_only=True)
        except Exception as err:  # truncated files raise several kinds
            problem = f"its weights artifact {file} is unreadable ({type(err).__name__}: {err})"
            fix = "not repairable by mtlsearch: retrain the trial's config with `mtlsearch train`"
            findings.append(Finding("unreadable_artifact", subject, problem, fix, False))
            continue
        read += 1
    return findings, read


def format_check(report: CheckReport) -> str:
    """The report as text: a summary line, one line per problem, and what is left."""
    counts = ", ".join(f"{n} {state}" for state, n in report.trials.items()) or "no trials read"
    lines = [
        f"study `{report.study}` in {report.storage}: {counts}; read {report.checkpoints} checkpoint file(s) and "
        f"{report.artifacts} weights artifact(s)",
        *(f.line() for f in report.findings),
    ]
    left = [f for f in report.findings if not f.repaired]
    if not report.findings:
        lines.append("healthy: nothing to repair")
    elif not left:
        lines.append(f"healthy now: {len(report.findings)} problem(s) repaired")
    elif report.repair:
        lines.append(f"{len(report.findings) - len(left)} problem(s) repaired, {len(left)} left: see each line")
    else:
        fixable = sum(f.repairable for f in left)
        others = "" if fixable == len(left) else ", the others need you (see each line)"
        lines.append(f"{len(left)} problem(s); `--repair` fixes {fixable} of them{others}")
    return "\n".join(lines)
