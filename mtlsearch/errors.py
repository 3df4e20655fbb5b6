"""Errors raised at the boundary where a bad value enters mtlsearch.

Every message names *where* the value came from (a dotted config path or a parameter name),
*what* was found and *what is allowed*, e.g.::

    search_space.tree.max_groups: expected an integer >= 1, found 0
"""

from __future__ import annotations

import difflib
import re
import reprlib
from collections.abc import Iterable

SHOW_CHARS = 80  # a found value is cut to this many characters in a message
MESSAGE_CHARS = 1_000  # and a whole message (or its path) to this many


class MTLSearchError(Exception):
    """Base class of every error mtlsearch raises on purpose."""


class ConfigError(MTLSearchError, ValueError):
    """A configuration value is invalid.

    ``path`` is the dotted location of the value (``search_space.tree.max_groups``), empty for the
    document itself; ``message`` says what was found and what is allowed.
    """

    def __init__(self, path: str, message: str):
        # One line, bounded: a message never breaks or forges a terminal or log line.
        self.path = cut(one_line(path), MESSAGE_CHARS)
        self.message = cut(one_line(message), MESSAGE_CHARS)
        super().__init__(f"{self.path}: {self.message}" if self.path else self.message)

    def prefixed(self, prefix: str) -> ConfigError:
        """The same error located under ``prefix`` (``max_groups`` -> ``search_space.tree.max_groups``)."""
        if not prefix:
            return self
        path = f"{prefix}.{self.path}" if self.path else prefix
        return ConfigError(path, self.message)


class StudyMismatchError(MTLSearchError):
    """A stored study does not match the space or objectives it is asked to continue with."""


class DamagedStorageError(ConfigError):
    """A storage file is damaged (a SQLite file, a journal line): the message names the file and
    how to recover it; mtlsearch changed nothing."""


class NonFiniteLossError(MTLSearchError, ArithmeticError):
    """A training loss became NaN or infinite; the trial that raised it is failed, not the study."""


class UserCodeError(ConfigError):
    """A user's data factory (or its dataset) raised; its own exception is ``__cause__``.

    The message says what raised and names the exception in one line; the CLI shows the
    traceback of ``__cause__`` under ``--debug``.
    """


def did_you_mean(word: str, options: Iterable[str]) -> str:
    """`` (did you mean `x`?)`` when ``word`` is close to one of ``options``, else an empty string."""
    word = str(word)[: SHOW_CHARS + 1]  # a longer word is close to no option; difflib need not read it all
    close = difflib.get_close_matches(word, list(options), n=1, cutoff=0.6)
    return f" (did you mean `{close[0]}`?)" if close else ""


def one_line(text: str) -> str:
    """``text`` with unprintable characters (newlines, ANSI escapes...) written as escapes (``\\n``)."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def cut(text: str, length: int = SHOW_CHARS) -> str:
    """``text`` cut to ``length`` characters, ending in ``...`` when cut."""
    return text if len(text) <= length else text[: length - 3] + "..."


class _Repr(reprlib.Repr):
    """``repr`` that reads only the first entries and levels of a value (an alias bomb stays
    cheap), keeping a dict's order."""

    def __init__(self) -> None:
        super().__init__()
        self.maxlevel = 4
        self.maxlist = self.maxtuple = self.maxset = self.maxdict = 12
        self.maxstring = self.maxlong = self.maxother = SHOW_CHARS

    def repr_dict(self, x: dict, level: int) -> str:
        if not x:
            return "{}"
        if level <= 0:
            return "{...}"
        items = [f"{self.repr1(k, level - 1)}: {self.repr1(v, level - 1)}" for k, v in list(x.items())[: self.maxdict]]
        return "{" + ", ".join(items + ["..."] * (len(x) > self.maxdict)) + "}"

    def repr_int(self, x: int, level: int) -> str:
        try:
            return super().repr_int(x, level)
        except ValueError:  # more digits than Python converts to text
            return f"<an integer of {x.bit_length():,} bits>"


_NUMBER = re.compile(r"[-+]?(?:\d[\d_]*(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?")


def show(value: object) -> str:
    """How a found value is written in an error message: on one line, cut to about 80 characters
    (then its full length is noted); a quoted number is called a string."""
    if isinstance(value, str):
        text = cut(one_line(value[: SHOW_CHARS + 1]))
        if _NUMBER.fullmatch(value.strip()):
            return f'the string "{text}"'
        return f"`{text}`" + (f" ({len(value):,} characters)" if len(value) > SHOW_CHARS else "")
    text = _Repr().repr(value)
    if not isinstance(value, (list, dict)):
        return cut(text)
    cut_short = len(text) > SHOW_CHARS or len(value) > _Repr().maxlist
    return f"`{cut(text)}`" + (f" ({len(value):,} entries)" if cut_short else "")
