"""``DATABASE_URL`` to a Django ``DATABASES`` entry, for settings read from the environment.

Two kinds of URL::

    postgres://USER:PASSWORD@HOST:PORT/NAME?sslmode=require   (or postgresql://)
    sqlite:///relative/path.sqlite3   sqlite:////absolute/path.sqlite3   sqlite:///:memory:

Percent-encode reserved characters in the user, password and name
(``p%40ss`` for ``p@ss``); a HOST that is a percent-encoded absolute path
(``%2Fvar%2Frun%2Fpostgresql``) is a Unix socket folder. Query parameters
become the entry's ``OPTIONS`` (for PostgreSQL: libpq's connection
parameters, such as ``sslmode``, ``connect_timeout`` or ``application_name``).

Anything else raises :class:`~progrock.exceptions.ImproperlyConfigured`
with one line naming the variable, what it must be and what it was (the
password masked). The ``ENGINE`` for PostgreSQL needs ``psycopg``
(``pip install 'django-progrock[postgres]'``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import SplitResult, parse_qsl, unquote, urlsplit

from progrock.exceptions import ImproperlyConfigured

__all__ = ["mask_password", "parse_database_url"]

POSTGRES_ENGINE = "django.db.backends.postgresql"
SQLITE_ENGINE = "django.db.backends.sqlite3"
_POSTGRES_SCHEMES = ("postgres", "postgresql")
_SHAPES = "postgres://USER:PASSWORD@HOST:PORT/NAME or sqlite:///PATH"
_Bad = Callable[[str], ImproperlyConfigured]


def mask_password(url: str) -> str:
    """``url`` with the password (if any) replaced by ``***``, fit for a log line."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable URL>"
    if parts.password is None:
        return url
    userinfo, _, hostinfo = parts.netloc.rpartition("@")
    user = userinfo.partition(":")[0]
    return parts._replace(netloc=f"{user}:***@{hostinfo}").geturl()


def parse_database_url(url: str, *, variable: str = "DATABASE_URL") -> dict[str, Any]:
    """The ``DATABASES`` entry (``ENGINE``, ``NAME``, ...) that ``url`` describes.

    ``variable`` names the setting or environment variable in error messages.
    """

    def bad(reason: str) -> ImproperlyConfigured:
        return ImproperlyConfigured(
            f"{variable} must be {_SHAPES}, got {mask_password(url)!r}: {reason}"
        )

    if not isinstance(url, str) or not url.strip():
        raise ImproperlyConfigured(f"{variable} must be {_SHAPES}, got {url!r}")
    url = url.strip()
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise bad(str(exc)) from None
    scheme = parts.scheme.lower()
    if scheme not in (*_POSTGRES_SCHEMES, "sqlite"):
        raise bad(f"unknown scheme {parts.scheme + ':' if parts.scheme else '(none)'}")
    if not url[len(scheme) + 1 :].startswith("//"):
        raise bad(f"'//' must follow {parts.scheme}:")
    if scheme == "sqlite":
        return _sqlite(parts.netloc, parts.path, parts.query, bad)
    return _postgres(parts, bad)


def _options(query: str, bad: _Bad) -> dict[str, str]:
    options: dict[str, str] = {}
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query))
    except ValueError:
        raise bad(f"the query {query!r} is not key=value pairs") from None
    for key, value in pairs:
        if key in options:
            raise bad(f"the query names {key!r} twice")
        options[key] = value
    return options


def _sqlite(netloc: str, path: str, query: str, bad: _Bad) -> dict[str, Any]:
    if netloc:
        raise bad(f"a sqlite URL has no host (three slashes: sqlite:///PATH), got {netloc!r}")
    name = unquote(path[1:]) if path.startswith("/") else ""
    if not name:
        raise bad("no path after sqlite:///")
    entry: dict[str, Any] = {"ENGINE": SQLITE_ENGINE, "NAME": name}
    options = _options(query, bad)
    if options:
        entry["OPTIONS"] = options
    return entry


def _postgres(parts: SplitResult, bad: _Bad) -> dict[str, Any]:
    name = unquote(parts.path[1:]) if parts.path.startswith("/") else ""
    if not name or "/" in name:
        raise bad("no database name after the host (…/NAME)" if not name else "a '/' in the name")
    try:
        port = parts.port
    except ValueError:
        raise bad("the port must be an integer in 0..65535") from None
    host = unquote(parts.hostname or "")
    if "%2f" in parts.netloc.lower():  # a socket folder: hostname is lower-cased by urlsplit
        host = unquote(parts.netloc.rpartition("@")[2].rsplit(":", 1)[0])
    entry: dict[str, Any] = {
        "ENGINE": POSTGRES_ENGINE,
        "NAME": name,
        "USER": unquote(parts.username or ""),
        "PASSWORD": unquote(parts.password or ""),
        "HOST": host,
        "PORT": str(port) if port is not None else "",
    }
    options = _options(parts.query, bad)
    if options:
        entry["OPTIONS"] = options
    return entry
