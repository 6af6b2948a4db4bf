"""Heartbeats on a real Redis: written, read back by kind and with figures, left, expired."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import pytest
import redis
import redis.asyncio as aioredis

from progrock import heartbeat
from progrock.heartbeat import Heartbeat, Identity
from progrock.local.redis_server import free_port

pytestmark = pytest.mark.redis

PREFIX = "progrock:"


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    opened = aioredis.Redis.from_url(redis_url)
    yield opened
    await opened.aclose()


async def test_a_beat_makes_its_kind_live_with_its_figures(client: aioredis.Redis) -> None:
    """One beat: its kind is live, and the process is listed with host, pid, start and figures."""
    assert await heartbeat.live_kinds(client, PREFIX) == frozenset()
    identity = Identity("delay", host="h1", pid=42, started_at=1000.0)

    async def figures() -> dict[str, float | int]:
        return {"pending": 7}

    await Heartbeat(client, PREFIX, identity, figures=figures).beat()
    assert await heartbeat.live_kinds(client, PREFIX) == frozenset({"delay"})
    now_ms, [beat] = await heartbeat.live_processes(client, PREFIX)
    assert (beat.kind, beat.host, beat.pid, beat.started_at) == ("delay", "h1", 42, 1000.0)
    assert beat.figures == {"pending": 7}
    listed = beat.as_dict(now_ms)
    assert listed["pending"] == 7 and 0 <= listed["last_beat_s"] < 5
    assert listed["age_s"] == pytest.approx(now_ms / 1000 - 1000.0, abs=1)


async def test_a_process_is_live_only_while_its_last_beat_is_younger_than_the_ttl(
    client: aioredis.Redis,
) -> None:
    """A beat 0.3 s old counts for a 10 s TTL and not for a 0.1 s one."""
    await Heartbeat(client, PREFIX, Identity("worker")).beat()
    await asyncio.sleep(0.3)
    assert await heartbeat.live_kinds(client, PREFIX, ttl=10) == frozenset({"worker"})
    assert await heartbeat.live_kinds(client, PREFIX, ttl=0.1) == frozenset()


async def test_leaving_removes_the_process_at_once(client: aioredis.Redis) -> None:
    """A process stopped cleanly leaves: it is not listed, its record is gone."""
    beats = Heartbeat(client, PREFIX, Identity("worker"))
    await beats.beat()
    await beats.leave()
    _, found = await heartbeat.live_processes(client, PREFIX)
    assert found == []
    assert await client.keys(f"{PREFIX}hb:*") == []


async def test_run_beats_repeatedly_with_lag_and_cpu_then_leaves_when_cancelled(
    client: aioredis.Redis,
) -> None:
    """The loop beats every interval, later beats carry loop lag and CPU share, and a
    cancelled loop takes its record with it."""
    beats = Heartbeat(client, PREFIX, Identity("web"), interval=0.05)
    running = asyncio.create_task(beats.run())
    async with asyncio.timeout(10):
        while True:
            _, found = await heartbeat.live_processes(client, PREFIX)
            if found and "lag_ms" in found[0].figures:
                break
            await asyncio.sleep(0.02)
    assert found[0].figures["lag_ms"] >= 0 and found[0].figures["cpu"] >= 0
    running.cancel()
    await asyncio.gather(running, return_exceptions=True)
    assert await heartbeat.live_kinds(client, PREFIX) == frozenset()


async def test_a_failing_redis_is_logged_once_not_per_beat(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Beats against a Redis that refuses connections: one warning, however many beats fail."""
    dead = aioredis.Redis.from_url(f"redis://127.0.0.1:{free_port()}/0")
    beats = Heartbeat(dead, PREFIX, Identity("worker"), interval=0.02)
    with caplog.at_level(logging.WARNING, logger="progrock.heartbeat"):
        running = asyncio.create_task(beats.run())
        await asyncio.sleep(0.3)  # a dozen failed beats
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
    failing = [r for r in caplog.records if "heartbeat failing" in r.getMessage()]
    assert len(failing) == 1, caplog.text
    await dead.aclose()


async def test_ensure_beating_starts_one_loop_per_kind(client: aioredis.Redis) -> None:
    """Called again, ensure_beating returns the running task instead of starting another."""
    first = heartbeat.ensure_beating(client, PREFIX, "web")
    assert heartbeat.ensure_beating(client, PREFIX, "web") is first
    await asyncio.sleep(0.05)
    _, found = await heartbeat.live_processes(client, PREFIX)
    assert [b.kind for b in found] == ["web"]
    first.cancel()
    await asyncio.gather(first, return_exceptions=True)


def test_a_sync_beat_is_read_like_an_async_one(redis_url: str) -> None:
    """beat_sync (a command's first beat, before its loop runs) makes its kind live."""
    sync = redis.Redis.from_url(redis_url)
    heartbeat.beat_sync(sync, PREFIX, Identity("worker", host="w", pid=9))
    sync.close()

    async def read() -> frozenset[str]:
        reader = aioredis.Redis.from_url(redis_url)
        try:
            return await heartbeat.live_kinds(reader, PREFIX)
        finally:
            await reader.aclose()

    assert asyncio.run(read()) == frozenset({"worker"})


def test_an_unknown_kind_is_refused() -> None:
    """Identity names the kinds it accepts and quotes the wrong one."""
    with pytest.raises(ValueError, match="kind must be one of worker, delay, web, got 'db'"):
        Identity("db")
