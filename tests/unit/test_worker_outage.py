"""A worker's work failing for an outage: one log line per change of state, no traceback."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import pytest
from django.db import OperationalError
from redis.exceptions import ConnectionError as RedisConnectionError

from progrock.worker import outage
from progrock.worker.consumer import WorkerConsumer


async def until(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(5):
        while not condition():
            await asyncio.sleep(0.001)


async def test_failing_work_logs_the_outage_once_and_its_end_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Ten messages failing on Redis or the database: one warning, no traceback; the next
    message that works: one line saying so; a bug still logs its traceback."""
    caplog.set_level(logging.DEBUG, logger="progrock.worker")
    consumer = WorkerConsumer()
    done: list[str] = []

    async def work(exc: Exception | None, name: str) -> None:
        done.append(name)
        if exc is not None:
            raise exc

    for i in range(10):
        exc = RedisConnectionError("Connection refused") if i % 2 else OSError("reset")
        consumer._spawn("poll", work(exc, f"down-{i}"), {"type": "progrock.poll"})
    await until(lambda: len(done) == 10 and not consumer._running)
    consumer._spawn("control", work(None, "up"), {"type": "progrock.sweep"})
    await until(lambda: len(done) == 11 and not consumer._running)
    consumer._spawn("control", work(KeyError("bug"), "bug"), {"type": "progrock.cancel"})
    await until(lambda: len(done) == 12 and not consumer._running)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    what = "the worker's work (Redis or the database)"
    messages = [r.getMessage() for r in warnings]
    assert len(messages) == 2, messages
    assert messages[0] == f"{what} failing (OSError: reset); retrying quietly"
    assert messages[1].startswith(f"{what} works again after "), messages
    assert all(r.exc_info is None for r in warnings)
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and errors[0].exc_info is not None, errors


async def test_a_database_error_drops_the_broken_connection(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """After a database error the worker closes unusable connections, so the next
    message reconnects; a Redis error leaves the database alone."""
    closed: list[bool] = []

    async def close() -> None:
        closed.append(True)

    monkeypatch.setattr(outage, "aclose_old_connections", close)
    await outage.unavailable(RedisConnectionError("down"))
    assert closed == []
    await outage.unavailable(OperationalError("server closed the connection unexpectedly"))
    assert closed == [True]
    outage.recovered()
