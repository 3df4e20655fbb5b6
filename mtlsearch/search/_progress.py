"""Progress of long work, for people (lines on stderr) or scripts (JSON lines on stdout).

Modes: ``normal`` prints one line per event to stderr (epoch lines overwrite each other on a
terminal); ``quiet`` prints nothing; ``json`` prints one JSON object per event to stdout.
"""

from __future__ import annotations

import json
import sys
from typing import Any, TextIO


class Progress:
    MODES = ("normal", "quiet", "json")

    def __init__(self, mode: str = "normal", stream: TextIO | None = None, worker: int | None = None):
        if mode not in self.MODES:
            raise ValueError(f"progress mode must be one of {', '.join(self.MODES)}, found `{mode}`")
        self.mode = mode
        self.stream = stream
        self.worker = worker  # several workers write to one terminal: their lines say whose they are
        self._pending_newline = False

    def _out(self) -> TextIO:
        return self.stream or (sys.stdout if self.mode == "json" else sys.stderr)

    def event(self, kind: str, message: str = "", transient: bool = False, **data: Any) -> None:
        """Report ``kind`` with a human ``message`` and machine-readable ``data``.

        ``transient`` lines (epochs) are overwritten by the next line on a terminal.
        """
        if self.mode == "quiet":
            return
        out = self._out()
        if self.worker is not None:
            data = {"worker": self.worker, **data}
            message = f"[worker {self.worker}] {message}" if message else message
        if self.mode == "json":
            out.write(json.dumps({"event": kind, **data}, default=str) + "\n")
            out.flush()
            return
        if not message:
            return
        tty = hasattr(out, "isatty") and out.isatty()
        if tty and transient:
            out.write("\r\033[K" + message)
            self._pending_newline = True
        else:
            if self._pending_newline:
                out.write("\r\033[K")
                self._pending_newline = False
            out.write(message + "\n")
        out.flush()


QUIET = Progress("quiet")
