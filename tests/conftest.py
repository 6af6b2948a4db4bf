"""Fixtures shared by every test folder.

Redis-touching tests get a private ``redis-server`` (never the machine's own):
one per test session, flushed before each test. Set ``PROGROCK_TEST_REDIS_URL``
to use a server of your choosing instead (it is flushed too).

The database: SQLite, or with ``PROGROCK_TEST_DATABASE=postgres`` a private
PostgreSQL cluster the session starts itself (``initdb`` and ``postgres`` from
the system's packages, on a free port; skipped, saying why, where there are
none). Set ``PROGROCK_TEST_DATABASE_URL`` to use a server of your choosing
instead (the tests create databases on it). A PostgreSQL run runs only the
tests marked ``database`` (every ``django_db`` test, and the end-to-end tests
marked so): ``make test`` runs them a second time that way. ``DATABASE_URL``
plays no part in the tests: they pick their database themselves.
"""

from __future__ import annotations

import contextlib
import itertools
import os
from collections.abc import Callable, Iterator

import pytest
import redis

from progrock.database_url import parse_database_url
from progrock.exceptions import ProgRockError
from progrock.local.stack import _CHECKOUT_EXAMPLE

# No test may reach the machine's own Redis through the default REDIS_URL: a
# test that forgets the private server's URL fails (nothing listens on port 9)
# instead of quietly using, and maybe flushing, someone's Redis.
os.environ["REDIS_URL"] = "redis://127.0.0.1:9/0"

# Child processes the tests start (``python -m django ...``) import the demo
# project from the checkout's example/ folder, as pytest does (pythonpath).
os.environ["PYTHONPATH"] = os.pathsep.join(
    [str(_CHECKOUT_EXAMPLE), *filter(None, [os.environ.get("PYTHONPATH")])]
)

from progrock.local.postgres_server import PostgresServer
from progrock.local.redis_server import RedisServer

DATABASES = ("sqlite", "postgres")
TEST_DATABASE = os.environ.get("PROGROCK_TEST_DATABASE", "").strip() or "sqlite"
# The user's DATABASE_URL (for progrock up) never reaches a test's processes.
_USER_DATABASE_URL = os.environ.pop("DATABASE_URL", "")

NewDatabase = Callable[[], str | None]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "database: touches the database; run on SQLite, and again on PostgreSQL "
        "(PROGROCK_TEST_DATABASE=postgres)",
    )
    if TEST_DATABASE not in DATABASES:
        raise pytest.UsageError(
            f"PROGROCK_TEST_DATABASE must be one of {', '.join(DATABASES)}, got {TEST_DATABASE!r}"
        )
    if _USER_DATABASE_URL:
        raise pytest.UsageError(
            "DATABASE_URL is set: the tests pick their database themselves "
            "(PROGROCK_TEST_DATABASE=sqlite|postgres, PROGROCK_TEST_DATABASE_URL); unset it"
        )


def pytest_report_header() -> str:
    if TEST_DATABASE == "postgres":
        return "database: PostgreSQL (only the tests marked 'database' run)"
    return "database: SQLite"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every django_db test ``database``; on PostgreSQL, run only those."""
    for item in items:
        if item.get_closest_marker("django_db") is not None:
            item.add_marker(pytest.mark.database)
    if TEST_DATABASE == "postgres":
        kept = [item for item in items if item.get_closest_marker("database") is not None]
        dropped = [item for item in items if item.get_closest_marker("database") is None]
        if dropped:
            config.hook.pytest_deselected(items=dropped)
            items[:] = kept


@pytest.fixture(scope="session")
def redis_server() -> Iterator[str]:
    """URL of the session's private Redis server."""
    explicit = os.environ.get("PROGROCK_TEST_REDIS_URL")
    if explicit:
        yield explicit
        return
    server = RedisServer()
    server.start()
    try:
        yield server.url
    finally:
        server.cleanup()


@pytest.fixture
def redis_url(redis_server: str) -> Iterator[str]:
    """A flushed private Redis for one test."""
    client = redis.Redis.from_url(redis_server)
    client.flushdb()
    client.close()
    yield redis_server


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """URL of the session's private PostgreSQL cluster (its ``postgres`` database)."""
    explicit = os.environ.get("PROGROCK_TEST_DATABASE_URL", "").strip()
    if explicit:
        yield explicit
        return
    try:
        server = PostgresServer()
    except ProgRockError as exc:
        pytest.skip(f"PostgreSQL tests skipped: {exc}")
    try:
        server.start()
        yield server.url
    finally:
        server.cleanup()


@pytest.fixture(scope="session")
def new_database(request: pytest.FixtureRequest) -> Iterator[NewDatabase]:
    """Factory: the ``DATABASE_URL`` of a new, empty database for a stack of processes;
    None on SQLite (a stack's default: a file in its data dir)."""
    if TEST_DATABASE != "postgres":
        yield lambda: None
        return
    import psycopg

    server: str = request.getfixturevalue("postgres_server")
    base, _, _ = server.rpartition("/")
    made: list[str] = []
    numbers = itertools.count(1)

    def make() -> str:
        name = f"progrock_e2e_{os.getpid()}_{next(numbers)}"
        with psycopg.connect(server, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        made.append(name)
        return f"{base}/{name}"

    try:
        yield make
    finally:
        with psycopg.connect(server, autocommit=True) as conn:
            for name in made:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def django_db_modify_db_settings(
    django_db_modify_db_settings_parallel_suffix: None, request: pytest.FixtureRequest
) -> None:
    """On PostgreSQL, point Django's default database at the session's server
    (pytest-django then creates ``test_<name>`` there)."""
    if TEST_DATABASE != "postgres":
        return
    from django.conf import settings
    from django.db import connections

    entry = parse_database_url(request.getfixturevalue("postgres_server"))
    default = settings.DATABASES["default"]
    default.update(entry, OPTIONS=entry.get("OPTIONS", {}), CONN_MAX_AGE=0)
    default["TEST"]["NAME"] = None
    connections.close_all()
    # A connection object made before this (for SQLite) must not be reused.
    with contextlib.suppress(AttributeError):
        del connections["default"]


@pytest.fixture(autouse=True)
def _close_sync_thread_connections(request: pytest.FixtureRequest) -> Iterator[None]:
    """On PostgreSQL, close what a test left open in asgiref's sync thread (where
    ``sync_to_async`` queries run): an open session would keep the test database
    from being dropped at the end."""
    yield
    if TEST_DATABASE == "postgres" and request.node.get_closest_marker("django_db"):
        from asgiref.sync import SyncToAsync
        from django.db import connections

        SyncToAsync.single_thread_executor.submit(connections.close_all).result(timeout=30)


class Beating:
    """Real heartbeats of pretend processes, from a thread of their own, while a test runs."""

    def __init__(self, redis_url: str, kinds: tuple[str, ...], prefix: str = "progrock:") -> None:
        import asyncio
        import threading

        self.loop = asyncio.new_event_loop()
        self.redis_url, self.kinds, self.prefix = redis_url, kinds, prefix
        self.first = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True, name="test-heartbeats")
        self.thread.start()
        if not self.first.wait(10):
            raise AssertionError("the test heartbeats never beat")

    def _run(self) -> None:
        import asyncio

        import redis.asyncio as aioredis

        from progrock.heartbeat import Heartbeat, Identity

        async def main() -> None:
            client = aioredis.Redis.from_url(self.redis_url)
            beats = [Heartbeat(client, self.prefix, Identity(kind)) for kind in self.kinds]
            for beat in beats:
                await beat.beat()
            self.first.set()
            self.tasks = [asyncio.create_task(beat.run()) for beat in beats]
            try:
                await asyncio.gather(*self.tasks)
            except asyncio.CancelledError:
                pass
            finally:
                await client.aclose()

        self.loop.run_until_complete(main())

    def stop(self) -> None:
        def cancel() -> None:
            for task in self.tasks:
                task.cancel()

        self.loop.call_soon_threadsafe(cancel)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture
def live_processes(redis_url: str) -> Iterator[Beating]:
    """A worker and a delay server that beat (as far as heartbeats go) on the test's Redis:
    web processes accept starts (progrock.web.liveness)."""
    beating = Beating(redis_url, ("worker", "delay"))
    try:
        yield beating
    finally:
        beating.stop()
