"""Per-epoch training checkpoints that survive a killed process.

A :class:`CheckpointStore` keeps one run's training state (model, optimizer, weighting and
aggregator state, random-number-generator states, epoch, history) in a folder, one file per epoch:

* written atomically: to a temporary file in the same folder, flushed and ``fsync``-ed, then
  renamed over the final name (``os.replace`` is atomic on POSIX), so a reader never sees half a
  file under a final name;
* read with ``torch.load(weights_only=True)``: plain tensors and containers only, no code runs;
* a file that cannot be read (truncated, corrupt, or not a checkpoint) is reported through
  ``warn`` and the next older one is tried; with none readable, training starts from scratch;
* the newest ``keep`` files are kept (two: a crash while writing the newest leaves the previous).
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

FORMAT = 1
_NAME = re.compile(r"^epoch-(\d{4,})\.pt$")


class CheckpointStore:
    """Checkpoints of one training run in ``directory`` (see the module docstring)."""

    def __init__(self, directory: str | Path, keep: int = 2, warn: Callable[[str], None] | None = None):
        if keep < 1:
            raise ValueError(f"keep must be >= 1, found {keep}")
        self.directory = Path(directory)
        self.keep = keep
        self.warn = warn or (lambda message: warnings.warn(message, RuntimeWarning, stacklevel=3))

    def __repr__(self) -> str:
        return f"CheckpointStore({str(self.directory)!r}, keep={self.keep})"

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
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        for old in self.files()[self.keep:]:
            old.unlink(missing_ok=True)
        return final

    def load(self) -> dict[str, Any] | None:
        """The newest readable checkpoint, or ``None``; unreadable ones are reported and skipped."""
        for path in self.files():
            try:
                state = torch.load(path, map_location="cpu", weights_only=True)
                if not isinstance(state, dict) or state.get("format") != FORMAT or not isinstance(state.get("epoch"), int):
                    raise ValueError("not an mtlsearch checkpoint")
            except Exception as err:  # truncated files raise several kinds (EOFError, RuntimeError...)
                older = "the previous one" if path != self.files()[-1] else "scratch"
                self.warn(f"checkpoint {path} is unreadable ({type(err).__name__}: {err}); continuing from {older}")
                continue
            state["path"] = str(path)
            return state
        return None

    def clear(self) -> None:
        """Remove the run's checkpoints (after the run finished)."""
        shutil.rmtree(self.directory, ignore_errors=True)
