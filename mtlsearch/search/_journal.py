"""Torn records in an Optuna journal file, found and ended safely.

Optuna's journal file storage appends one JSON record per line. A writer killed mid-write leaves
a torn last line (no newline). Optuna skips that line when it reads, but its next append lands on
the same line: the file then holds a corrupt line in the middle, and every later read (mtlsearch's
and plain ``optuna.load_study``'s) fails with ``JSONDecodeError``.

* :func:`end_torn_tail` runs whenever mtlsearch opens a journal: under the journal's own lock, a
  torn last line is dropped (its bytes kept in ``FILE.torn-OFFSET.bak``), or, when it is a whole
  record that lacks only its newline, ended with one; a warning names the file, the byte offset
  and the dropped bytes.
* :func:`scan` finds every torn line, including corrupt lines in the middle that an earlier
  append left (a torn part followed by a whole record, which is kept); :func:`repair` ends them
  all (``mtlsearch check --repair``).

A torn part was never applied by any reader (each skipped it or failed on it), so dropping it
loses nothing the study showed. A damaged middle line with no whole record in it is not a torn
write (disk damage?): it is reported and left alone, since dropping a record that readers did
apply would renumber the trials after it.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ..checkpoints import describe_value

RECORD_START = b'{"op_code":'  # how Optuna writes every journal record (json.dumps, no spaces)


@dataclass(frozen=True)
class TornLine:
    """One journal line that is not a whole record.

    ``offset`` is the byte offset of the line in the file and ``number`` its 1-based line number;
    ``dropped`` is the torn part a repair drops and ``kept`` the whole record after it on the
    same line (empty when there is none); ``last`` marks the file's last line, without a newline.
    """

    offset: int
    number: int
    dropped: bytes
    kept: bytes
    last: bool

    @property
    def repairable(self) -> bool:
        """A repair ends it without dropping a record any reader applied."""
        return self.last or bool(self.kept) or not self.dropped.strip()

    def backup(self, path: str | Path) -> Path:
        """Where a repair keeps the dropped bytes: ``FILE.torn-OFFSET.bak``, or, when a file of
        that name holds other bytes (torn there before), ``FILE.torn-OFFSET.N.bak``."""
        for n in itertools.count():
            file = Path(f"{path}.torn-{self.offset}{f'.{n}' if n else ''}.bak")
            if not file.exists() or file.read_bytes() == self.dropped:
                return file
        raise AssertionError("unreachable")

    def describe(self) -> str:
        """What is wrong with the line, in words."""
        where = f"line {self.number} (byte offset {self.offset})"
        if not self.kept and not self.dropped.strip():
            return f"{where}: an empty line"
        if not self.dropped:
            return f"{where}: a whole record that lacks its newline (a writer stopped before it)"
        torn = f"{len(self.dropped)} bytes of a torn record {describe_value(self.dropped)}"
        if self.last:
            return f"{where}, the last line: {torn}" + (", then a whole record without newline" if self.kept else "")
        if self.kept:
            return f"{where}: {torn}, then a whole record appended onto it (Optuna cannot read the line)"
        return f"{where}: not a record, {describe_value(self.dropped)} (Optuna cannot read the line)"


def whole_record(text: bytes) -> bool:
    """``text`` is one JSON object (a journal record)."""
    try:
        return isinstance(json.loads(text), dict)
    except ValueError:  # JSONDecodeError, UnicodeDecodeError
        return False


def split_torn(line: bytes) -> tuple[bytes, bytes]:
    """``(torn part, whole record after it)`` of a line without its newline; the record is empty
    when none follows. A torn part never holds a whole record, so the earliest record start after
    which the rest parses is where the later append began."""
    start = 0
    while (start := line.find(RECORD_START, start)) != -1:
        if whole_record(line[start:]):
            return line[:start], line[start:]
        start += 1
    return line, b""


def scan(data: bytes) -> list[TornLine]:
    """Every line of journal bytes ``data`` that is not a whole record, first to last."""
    found = []
    offset = 0
    *lines, tail = data.split(b"\n")  # lines as Optuna reads them: split on b"\n" only
    for number, body in enumerate([*lines, tail] if tail else lines, start=1):
        last = number > len(lines)
        if last or not whole_record(body):  # a last line lacks its newline, whole record or not
            found.append(TornLine(offset, number, *split_torn(body), last))
        offset += len(body) + 1
    return found


def repaired(data: bytes, torn: list[TornLine]) -> bytes:
    """``data`` with each repairable torn line replaced by the whole record it holds (if any)."""
    out, at = [], 0
    for line in torn:
        if not line.repairable:
            continue
        end = line.offset + len(line.dropped) + len(line.kept) + (0 if line.last else 1)
        out += [data[at : line.offset], line.kept + b"\n" if line.kept else b""]
        at = end
    out.append(data[at:])
    return b"".join(out)


@contextmanager
def journal_lock(path: str | Path) -> Iterator[None]:
    """The lock Optuna's ``JournalFileBackend`` takes to append (its default symlink lock)."""
    from optuna.storages.journal import JournalFileSymlinkLock

    lock = JournalFileSymlinkLock(str(path))
    lock.acquire()
    try:
        yield
    finally:
        lock.release()


def repair(path: str | Path) -> list[TornLine]:
    """End every repairable torn line of the journal ``path`` (under its lock; the file is
    replaced atomically, each dropped part kept beside it); returns every torn line found."""
    with journal_lock(path):
        data = Path(path).read_bytes()
        torn = scan(data)
        fixed = [t for t in torn if t.repairable]
        if fixed:
            for t in fixed:
                if t.dropped:
                    _write(t.backup(path), t.dropped)
            _replace(Path(path), repaired(data, torn))
    return torn


def end_torn_tail(path: str | Path) -> TornLine | None:
    """End a torn last line of the journal ``path`` before anything appends to it, with a
    warning; returns what was ended (``None`` when the file ends with a whole line)."""
    if not _torn_tail(path):  # the usual case, without taking the lock
        return None
    with journal_lock(path):  # a live writer may be appending: look again once it is done
        if not _torn_tail(path):
            return None
        data = Path(path).read_bytes()
        start = data.rfind(b"\n") + 1
        line = TornLine(start, data.count(b"\n") + 1, *split_torn(data[start:]), True)
        if line.dropped:
            _write(line.backup(path), line.dropped)
        with open(path, "r+b") as f:
            f.truncate(line.offset)
            f.seek(line.offset)
            f.write(line.kept + b"\n" if line.kept else b"")
            f.flush()
            os.fsync(f.fileno())
    warnings.warn(tail_message(path, line), RuntimeWarning, stacklevel=3)
    return line


def tail_message(path: str | Path, line: TornLine) -> str:
    """The warning :func:`end_torn_tail` gives."""
    if not line.dropped:
        return (
            f"journal {path}: its last record (byte offset {line.offset}) lacked its newline (a writer stopped "
            "mid-write); ended it with one, nothing dropped"
        )
    kept = "; the whole record after them is kept" if line.kept else ""
    return (
        f"journal {path}: its last line was torn (a writer stopped mid-write); dropped {len(line.dropped)} bytes at "
        f"byte offset {line.offset}: {describe_value(line.dropped)} (kept in {line.backup(path)}){kept}; the "
        "records before it are intact"
    )


def _torn_tail(path: str | Path) -> bool:
    try:
        with open(path, "rb") as f:
            if f.seek(0, os.SEEK_END) == 0:
                return False
            f.seek(-1, os.SEEK_END)
            return f.read(1) != b"\n"
    except FileNotFoundError:
        return False


def _write(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _replace(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        shutil.copymode(path, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
