"""Errors raised at the boundary where a bad value enters mtlsearch.

Every message names *where* the value came from (a dotted config path or a parameter name),
*what* was found and *what is allowed*, e.g.::

    search_space.tree.max_groups: expected an integer >= 1, found 0
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class MTLSearchError(Exception):
    """Base class of every error mtlsearch raises on purpose."""


class ConfigError(MTLSearchError, ValueError):
    """A configuration value is invalid.

    ``path`` is the dotted location of the value (``search_space.tree.max_groups``), empty for the
    document itself; ``message`` says what was found and what is allowed.
    """

    def __init__(self, path: str, message: str):
        self.path = path
        self.message = message
        super().__init__(f"{path}: {message}" if path else message)

    def prefixed(self, prefix: str) -> ConfigError:
        """The same error located under ``prefix`` (``max_groups`` -> ``search_space.tree.max_groups``)."""
        if not prefix:
            return self
        path = f"{prefix}.{self.path}" if self.path else prefix
        return ConfigError(path, self.message)


class StudyMismatchError(MTLSearchError):
    """A stored study does not match the space or objectives it is asked to continue with."""


class NonFiniteLossError(MTLSearchError, ArithmeticError):
    """A training loss became NaN or infinite; the trial that raised it is failed, not the study."""


def did_you_mean(word: str, options: Iterable[str]) -> str:
    """`` (did you mean `x`?)`` when ``word`` is close to one of ``options``, else an empty string."""
    close = difflib.get_close_matches(str(word), list(options), n=1, cutoff=0.6)
    return f" (did you mean `{close[0]}`?)" if close else ""


def show(value: object) -> str:
    """How a found value is written in an error message."""
    if isinstance(value, str):
        return f"`{value}`"
    return repr(value) if not isinstance(value, (list, dict)) else f"`{value!r}`"
