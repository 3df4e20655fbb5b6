"""Per-epoch training checkpoints that survive a killed process.

A :class:`CheckpointStore` keeps one run's training state (model, optimizer, weighting and
aggregator state, random-number-generator states, epoch, history) in a folder, one file per epoch:

* written atomically: to a temporary file in the same folder, flushed and ``fsync``-ed, then
  renamed over the final name (``os.replace`` is atomic on POSIX), so a reader never sees half a
  file under a final name;
* read with ``torch.load(weights_only=True)``: plain tensors and containers only, no code runs;
* a file that cannot be read (truncated, corrupt, or not a checkpoint) is reported through
  ``warn`` and the next older one is tried; with none readable, training starts from scratch;
* the newest ``keep`` files are kept (two: a crash while writing the newest leaves the previous);
* :meth:`CheckpointStore.clear` removes only the store's own files, never a folder's other content.

A run's folder is named by its run id, which a study stores as a trial attribute. Anyone who can
write to a shared storage can write that attribute, so an id read back is untrusted input: only
:func:`new_run_id`'s format is accepted (:func:`check_run_id`), and a store under a ``root``
refuses a folder that resolves outside it.
"""

from __future__ import annotations

import os
import re
import tempfile
import uuid
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

FORMAT = 1
_NAME = re.compile(r"^epoch-(\d{4,})\.pt$")
_TMP = re.compile(r"^\.tmp-.*\.pt$")
RUN_ID = re.compile(r"^[0-9a-f]{16}$")
_SUB = re.compile(r"seed-\d+")


def new_run_id() -> str:
    """A fresh run id: 16 lower-case hex digits."""
    return uuid.uuid4().hex[:16]


def check_run_id(value: object) -> str | None:
    """``value`` when it is a run id in :func:`new_run_id`'s format, else ``None``."""
    return value if isinstance(value, str) and RUN_ID.fullmatch(value) else None


def run_id_from(attrs: Mapping[str, Any], warn: Callable[[str], None]) -> str:
    """The run id a trial continues (``attrs["run_id"]``, copied into a retry), or a new one.
    A stored value in another format is refused, reported through ``warn`` and never used as a
    path: the trial then starts from scratch."""
    stored = attrs.get("run_id")
    if stored is None or check_run_id(stored):
        return stored or new_run_id()
    fresh = new_run_id()
    warn(
        f"stored run_id {describe_value(stored)} is not a run id (16 hex digits); refused: the trial starts "
        f"from scratch as run {fresh}"
    )
    return fresh


def describe_value(value: object, limit: int = 60) -> str:
    """A stored value shown in a message: its repr, cut to ``limit`` characters."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class CheckpointStore:
    """Checkpoints of one training run in ``directory`` (see the module docstring)."""

    def __init__(
        self,
        directory: str | Path,
        keep: int = 2,
        warn: Callable[[str], None] | None = None,
        root: str | Path | None = None,
    ):
        if keep < 1:
            raise ValueError(f"keep must be >= 1, found {keep}")
        self.directory = Path(directory)
        if root is not None and not self.directory.resolve().is_relative_to(Path(root).resolve()):
            raise ValueError(f"checkpoint folder {str(directory)!r} resolves outside {str(root)!r}; refused")
        self.keep = keep
        self.warn = warn or (lambda message: warnings.warn(message, RuntimeWarning, stacklevel=3))

    def __repr__(self) -> str:
        return f"CheckpointStore({str(self.directory)!r}, keep={self.keep})"

    def sub(self, name: str) -> CheckpointStore:
        """A store in the subfolder ``name`` (e.g. one per seed of a trial), under the same root."""
        if not _SUB.fullmatch(name):
            raise ValueError(f"checkpoint subfolder {name!r} is not of the form seed-N")
        return CheckpointStore(self.directory / name, self.keep, self.warn, root=self.directory)

    def files(self) -> list[Path]:
        """Checkpoint files, newest epoch first."""
        if not self.directory.is_dir():
            return []
        found = [(int(m.group(1)), p) for p in self.directory.iterdir() if (m := _NAME.match(p.name))]
        return [p for _, p in sorted(found, reverse=True)]

    def save(self, state: dict[str, Any]) -> Path:
        """Write ``state`` (it must hold ``epoch``) as this epoch's checkpoint; drop older ones."""
        self.directory.mkdir(parents=True, exist_ok=True)
        final = self.directory / f"epoch-{int(state['epoch']):04d}.pt"
        fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".tmp-", suffix=".pt")
        try:
            with os.fdopen(fd, "wb") as f:
                torch.save({"format": FORMAT, **state}, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, final)
        except BaseException as err:
            Path(tmp).unlink(missing_ok=True)
            if isinstance(err.__context__, KeyboardInterrupt):
                # Ctrl-C mid-write: torch's zip writer then fails in its __exit__ ("unexpected pos"),
                # which would hide the interrupt from the code that queues the trial again
                raise err.__context__ from None
            raise
        for old in self.files()[self.keep :]:
            old.unlink(missing_ok=True)
        return final

    def load(self) -> dict[str, Any] | None:
        """The newest readable checkpoint, or ``None``; unreadable ones are reported and skipped."""
        for path in self.files():
            try:
                state = torch.load(path, map_location="cpu", weights_only=True)
                if (
                    not isinstance(state, dict)
                    or state.get("format") != FORMAT
                    or not isinstance(state.get("epoch"), int)
                ):
                    raise ValueError("not an mtlsearch checkpoint")
            except Exception as err:  # truncated files raise several kinds (EOFError, RuntimeError...)
                older = "the previous one" if path != self.files()[-1] else "scratch"
                self.warn(f"checkpoint {path} is unreadable ({type(err).__name__}: {err}); continuing from {older}")
                continue
            state["path"] = str(path)
            return state
        return None

    def clear(self) -> None:
        """Remove the run's checkpoint files (after the run finished), then the folder if that
        left it empty. Anything else in the folder is left alone."""
        if not self.directory.is_dir() or self.directory.is_symlink():
            return
        for path in self.directory.iterdir():
            if _SUB.fullmatch(path.name) and path.is_dir() and not path.is_symlink():
                CheckpointStore(path, self.keep, self.warn).clear()
            if (_NAME.match(path.name) or _TMP.match(path.name)) and path.is_file() and not path.is_symlink():
                path.unlink(missing_ok=True)
        try:
            self.directory.rmdir()
        except OSError:  # not empty: files that are not ours stay
            pass
