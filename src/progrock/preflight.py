"""Start-up checks: can this process reach its database and its Redis?

A worker or delay server started with a malformed ``DATABASE_URL`` or
``REDIS_URL`` says so once and exits, rather than crash on its first message,
be restarted and crash again. Each check raises
:class:`~progrock.exceptions.ProgRockError` with one line naming the variable
(or setting) and the reason, passwords masked; the management commands turn
it into a ``CommandError`` and ``progrock up`` into its own one-line exit.

A well-formed URL whose server does not answer raises :class:`Unreachable`.
``progrock up`` exits on it too (someone is watching its terminal); a worker
waits for the server instead (:func:`wait_until_reachable`), logging one line
when it starts waiting and one when it gets through: under systemd or compose
the database and Redis may simply start later, and an outage after start is
survived the same way (docs/reliability.md).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis

from progrock.database_url import POSTGRES_ENGINE, mask_password, parse_database_url
from progrock.exceptions import ImproperlyConfigured, ProgRockError

__all__ = [
    "Unreachable",
    "check_database",
    "check_database_url",
    "check_redis",
    "check_worker_start",
    "database_variable",
    "redis_variable",
    "wait_until_reachable",
]

TIMEOUT = 5.0
# Between two tries of a server that does not answer yet, doubling up to this.
RETRY_FIRST, RETRY_MAX = 0.5, 5.0


class Unreachable(ProgRockError):
    """A well-formed URL whose server does not answer (a wait may help; a fix of the URL won't)."""


_REDIS_SHAPES = "redis://HOST:PORT/DB, rediss://HOST:PORT/DB or unix:///PATH"
_NEEDS_PSYCOPG = "a postgres:// URL needs psycopg: pip install 'django-progrock[postgres]'"


def one_line(exc: BaseException) -> str:
    """An exception's message on one line (drivers' messages span several)."""
    text = " ".join(part.strip() for part in str(exc).splitlines() if part.strip())
    return text or type(exc).__name__


def check_redis(url: str, variable: str = "REDIS_URL") -> None:
    """Raise unless ``url`` is a Redis URL whose server answers PING."""
    shown = mask_password(url)
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=TIMEOUT, socket_timeout=TIMEOUT)
    except ValueError as exc:
        raise ProgRockError(
            f"{variable} must be {_REDIS_SHAPES}, got {shown!r}: {one_line(exc)}"
        ) from None
    try:
        client.ping()
    except (redis.RedisError, OSError) as exc:
        raise Unreachable(f"{variable}: cannot reach Redis at {shown}: {one_line(exc)}") from None
    finally:
        client.close()


def check_database_url(url: str, variable: str = "DATABASE_URL") -> None:
    """Raise unless ``url`` parses and its database accepts a connection (without Django).

    PostgreSQL: a connection with psycopg (authentication and the database's
    existence included). SQLite: the file's folder exists (SQLite makes the file).
    """
    try:
        entry = parse_database_url(url, variable=variable)
    except ImproperlyConfigured as exc:
        raise ProgRockError(str(exc)) from None
    shown = mask_password(url)
    if entry["ENGINE"] != POSTGRES_ENGINE:
        folder = Path(entry["NAME"]).expanduser().resolve().parent
        if entry["NAME"] != ":memory:" and not folder.is_dir():
            raise ProgRockError(f"{variable}: the folder of {shown} ({folder}) does not exist")
        return
    try:
        import psycopg
    except ImportError:
        raise ProgRockError(f"{variable}: {_NEEDS_PSYCOPG}") from None
    params: dict[str, Any] = {
        "dbname": entry["NAME"],
        "user": entry["USER"] or None,
        "password": entry["PASSWORD"] or None,
        "host": entry["HOST"] or None,
        "port": entry["PORT"] or None,
        "connect_timeout": int(TIMEOUT),
        **entry.get("OPTIONS", {}),
    }
    try:
        psycopg.connect(**{k: v for k, v in params.items() if v is not None}).close()
    except psycopg.Error as exc:
        raise Unreachable(f"{variable}: cannot connect to {shown}: {one_line(exc)}") from None


def database_variable(alias: str = "default") -> str:
    """What configured the database, for messages: ``DATABASE_URL`` when it is set."""
    if alias == "default" and os.environ.get("DATABASE_URL", "").strip():
        return "DATABASE_URL"
    return f"DATABASES[{alias!r}]"


def redis_variable(url: str) -> str:
    """What configured ProgRock's Redis, for messages: ``REDIS_URL`` when it says ``url``."""
    return "REDIS_URL" if os.environ.get("REDIS_URL") == url else "PROGROCK['REDIS_URL']"


def check_database(alias: str = "default") -> None:
    """Raise unless Django's database ``alias`` accepts a connection (closed again)."""
    from django.core.exceptions import ImproperlyConfigured as DjangoImproperlyConfigured
    from django.db import connections

    variable = database_variable(alias)
    try:
        connection = connections[alias]
    except DjangoImproperlyConfigured as exc:  # no such alias, or no driver for the ENGINE
        message = one_line(exc)
        raise ProgRockError(
            f"{variable}: {_NEEDS_PSYCOPG if 'psycopg' in message else message}"
        ) from None
    settings = connection.settings_dict
    where = (
        f"{settings.get('HOST') or 'localhost'}:{settings.get('PORT') or 'default port'}"
        f"/{settings.get('NAME')}"
        if connection.vendor != "sqlite"
        else str(settings.get("NAME"))
    )
    try:
        connection.ensure_connection()
    except Exception as exc:  # the driver's OperationalError, whichever driver
        raise Unreachable(
            f"{variable}: cannot connect to {connection.vendor} at {where}: {one_line(exc)}"
        ) from None
    finally:
        connection.close()


def check_worker_start() -> None:
    """What a worker needs at start: its database and ProgRock's Redis."""
    from progrock.conf import progrock_settings

    check_database()
    url = progrock_settings.REDIS_URL
    check_redis(url, redis_variable(url))


def wait_until_reachable(check: Callable[[], None], logger: logging.Logger) -> None:
    """Run ``check`` until it passes, waiting out :class:`Unreachable` with backoff.

    Logs one warning when the wait begins and one line when it ends; any other
    :class:`~progrock.exceptions.ProgRockError` (a malformed URL) is raised at once.
    """
    delay, waiting = RETRY_FIRST, False
    while True:
        try:
            check()
        except Unreachable as exc:
            if not waiting:
                logger.warning("%s; waiting for it", exc)
                waiting = True
            time.sleep(delay)
            delay = min(delay * 2, RETRY_MAX)
            continue
        if waiting:
            logger.warning("reached the database and Redis; starting")
        return
