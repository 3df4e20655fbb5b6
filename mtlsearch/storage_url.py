"""Storage URLs as secrets: the password never reaches a terminal, a log, an export or argv.

A storage URL such as ``postgresql://user:PASSWORD@host/db`` is shown everywhere as
``postgresql://user:***@host/db`` (:func:`redact`); any text that may quote it (a driver's error
message) goes through :func:`scrub`. The URL can also come from the ``MTLSEARCH_STORAGE``
environment variable (:data:`ENV`), which is how ``run --workers N`` hands it to its worker
processes (never on their command line, which every local user can read with ``ps``).
"""

from __future__ import annotations

import importlib.util
import os
import re
from urllib.parse import quote, unquote

ENV = "MTLSEARCH_STORAGE"
MASK = "***"

# scheme://user:PASSWORD@host... and ...?password=PASSWORD&...
_USERINFO = re.compile(r"^(?P<head>[A-Za-z][A-Za-z0-9+.\-]*://[^:/@?#]*:)(?P<password>[^@]*)(?P<tail>@.*)$", re.DOTALL)
_QUERY = re.compile(r"(?P<head>[?&](?:password|passwd|pwd)=)(?P<password>[^&#]*)", re.IGNORECASE)


def password_of(url: str) -> list[str]:
    """The passwords written in ``url`` (in the user info, or a ``password=`` query parameter)."""
    found = []
    m = _USERINFO.match(url)
    if m and m.group("password"):
        found.append(m.group("password"))
    found += [q.group("password") for q in _QUERY.finditer(url) if q.group("password")]
    return found


def redact(url: str) -> str:
    """``url`` with its password replaced by ``***`` (any other URL unchanged)."""
    m = _USERINFO.match(url)
    if m and m.group("password"):
        url = m.group("head") + MASK + m.group("tail")
    return _QUERY.sub(lambda q: q.group("head") + (MASK if q.group("password") else ""), url)


def scrub(text: str, url: str | None) -> str:
    """``text`` with every form of ``url``'s password (as written, decoded, encoded) masked."""
    if not url:
        return text
    text = text.replace(url, redact(url))
    for secret in password_of(url):
        for form in {secret, unquote(secret), quote(unquote(secret), safe="")}:
            if len(form) >= 3:  # a one- or two-character password would mask ordinary words
                text = text.replace(form, MASK)
    return text


def resolve(flag: str | None, configured: str | None, default: str) -> str:
    """The storage URL to use: ``--storage``, else ``$MTLSEARCH_STORAGE``, else the space's
    ``run.storage``, else ``default``."""
    return flag or os.environ.get(ENV) or configured or default


# SQLAlchemy URL scheme -> (DB-API module it imports, what to install). A bare ``postgresql://``
# means psycopg 3 in SQLAlchemy 2.1, ``mysql://`` means mysqlclient.
DRIVERS = {
    "postgresql+psycopg2": ("psycopg2", "psycopg2-binary"),
    "postgresql+psycopg": ("psycopg", "psycopg[binary]"),
    "postgresql": ("psycopg", "psycopg[binary]"),
    "postgresql+pg8000": ("pg8000", "pg8000"),
    "mysql": ("MySQLdb", "mysqlclient"),
    "mysql+mysqldb": ("MySQLdb", "mysqlclient"),
    "mysql+pymysql": ("pymysql", "pymysql"),
}


def scheme(url: str) -> str:
    return url.split("://", 1)[0].lower() if "://" in url else ""


def with_installed_driver(url: str) -> str:
    """A bare ``postgresql://`` URL names psycopg 3, which SQLAlchemy 2.1 picks by default; when
    only psycopg2 is installed (mtlsearch's ``postgres`` extra), use it instead."""
    if scheme(url) == "postgresql" and not _importable("psycopg") and _importable("psycopg2"):
        return "postgresql+psycopg2" + url[len("postgresql") :]
    return url


def driver_hint(url: str) -> str:
    """What to install for ``url``'s database driver."""
    module, package = DRIVERS.get(scheme(url), (None, None))
    if package is None:
        return "install the database driver that its URL scheme names"
    alternative = " (or use postgresql+psycopg2:// with `pip install psycopg2-binary`)" if module == "psycopg" else ""
    return f"install its driver: `pip install '{package}'`{alternative}"


def _importable(module: str) -> bool:
    return importlib.util.find_spec(module) is not None
