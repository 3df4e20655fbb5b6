"""Progress of long work, for people (lines on stderr) or scripts (JSON lines on stdout).

Modes: ``normal`` prints one line per event to stderr (epoch lines overwrite each other on a
terminal); ``quiet`` prints nothing; ``json`` prints one JSON object per event to stdout.

On a terminal, ``normal`` also shows a trial progress bar (rich: finished/target, elapsed time,
ETA) from the ``study`` event (which carries the budget) until the run ends; the lines are printed
above it and the current epoch line is the bar's caption. Elsewhere (a file, a pipe, a worker
started by ``run --workers``) the plain lines are printed, as before.
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
        self._bar: Any = None  # the rich progress bar while one is shown
        self._bar_task: Any = None

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
        tty = hasattr(out, "isatty") and out.isatty()
        if tty and self.worker is None and self._bar_event(kind, message, transient, data, out):
            return
        if not message:
            return
        if tty and transient:
            out.write("\r\033[K" + message)
            self._pending_newline = True
        else:
            if self._pending_newline:
                out.write("\r\033[K")
                self._pending_newline = False
            out.write(message + "\n")
        out.flush()

    def _bar_event(self, kind: str, message: str, transient: bool, data: dict[str, Any], out: TextIO) -> bool:
        """Show ``kind`` with the progress bar; False where the plain path prints it instead."""
        target, finished = data.get("target"), data.get("finished")
        counts = isinstance(target, int) and isinstance(finished, int) and target > 0
        if kind == "study" and counts and self._bar is None:
            self._start_bar(out, int(target or 0), int(finished or 0))
        bar = self._bar
        if bar is None:
            return False
        if transient:
            bar.update(self._bar_task, description=message.strip())
        elif message:
            bar.console.print(message, markup=False, highlight=False, soft_wrap=True)
        if kind == "trial" and counts:
            bar.update(self._bar_task, completed=finished, description="")
        bar.refresh()
        if kind in ("done", "timeout", "interrupted"):
            self.close()
        return True

    def _start_bar(self, out: TextIO, target: int, finished: int) -> None:
        import atexit

        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
        from rich.progress import Progress as Bar

        self._bar = Bar(
            TextColumn("trials"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            TextColumn("{task.description}", markup=False),  # an epoch line holds `[family]`: text, not markup
            console=Console(file=out),
            auto_refresh=False,  # no thread: redrawn on each event
            redirect_stdout=False,
            redirect_stderr=False,
        )
        self._bar_task = self._bar.add_task("", total=target, completed=finished)
        self._bar.start()
        atexit.register(self.close)  # the cursor comes back even if the run ends in an error

    def close(self) -> None:
        """End the progress bar, if one is shown (the lines printed stay)."""
        if self._bar is not None:
            bar, self._bar = self._bar, None
            bar.stop()


QUIET = Progress("quiet")
