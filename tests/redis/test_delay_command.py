"""``manage.py rundelay`` as a real subprocess."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio
from channels_redis.core import RedisChannelLayer
from django.test import override_settings

from progrock.delay import DelayStore, Envelope, send_delayed_sync

pytestmark = pytest.mark.redis

READY_TIMEOUT = 30.0
TIMEOUT = 10.0


async def start_rundelay(redis_url: str, data_dir: Path) -> asyncio.subprocess.Process:
    """Start ``python -m django rundelay`` and wait for its ready line."""
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "progrock_demo.settings",
        "REDIS_URL": redis_url,
        "PROGROCK_DATA_DIR": str(data_dir),
        "PYTHONUNBUFFERED": "1",
    }
    stderr = open(data_dir / "rundelay.stderr", "ab")  # noqa: SIM115 - the child keeps it
    try:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "django", "rundelay",
            env=env, stdout=asyncio.subprocess.PIPE, stderr=stderr,
        )  # fmt: skip
    finally:
        stderr.close()
    assert process.stdout is not None
    try:
        async with asyncio.timeout(READY_TIMEOUT):
            while True:
                line = await process.stdout.readline()
                if not line:
                    log = (data_dir / "rundelay.stderr").read_text()
                    raise AssertionError(f"rundelay exited before ready:\n{log}")
                if b"rundelay ready" in line:
                    return process
    except BaseException:
        await reap(process)
        raise


async def reap(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        process.kill()
    await process.wait()


@pytest.fixture
async def processes() -> AsyncIterator[list[asyncio.subprocess.Process]]:
    started: list[asyncio.subprocess.Process] = []
    yield started
    for process in started:
        await reap(process)


@pytest.fixture
def schedule(redis_url: str) -> Iterator[Callable[..., Any]]:
    with override_settings(PROGROCK={"REDIS_URL": redis_url}):

        async def schedule(content: dict[str, Any], delay_ms: float) -> str:
            return await asyncio.to_thread(send_delayed_sync, "out", content, delay_ms)

        yield schedule


async def test_rundelay_subprocess_survives_kill(
    redis_url: str,
    tmp_path: Path,
    processes: list[asyncio.subprocess.Process],
    schedule: Callable[..., Any],
) -> None:
    """rundelay delivers, loses nothing across a SIGKILL and restart, and stops on SIGTERM."""
    layer = RedisChannelLayer(hosts=[redis_url])

    async def receive() -> dict[str, Any]:
        message: dict[str, Any] = await asyncio.wait_for(layer.receive("out"), TIMEOUT)
        return message

    try:
        processes.append(first := await start_rundelay(redis_url, tmp_path))
        await schedule({"type": "t", "n": 1}, 50)
        assert await receive() == {"type": "t", "n": 1}

        await schedule({"type": "t", "n": 2}, 1500)  # due after the kill
        first.kill()
        await first.wait()
        await schedule({"type": "t", "n": 3}, 0)  # scheduled while no server runs

        processes.append(second := await start_rundelay(redis_url, tmp_path))
        got = sorted([(await receive())["n"] for _ in range(2)])
        assert got == [2, 3]

        second.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(second.wait(), TIMEOUT) == 0
    finally:
        await layer.close_pools()


@pytest.mark.fault
async def test_rundelay_waits_for_redis_and_survives_an_outage(tmp_path: Path) -> None:
    """Started before Redis, rundelay waits (no exit) and gets ready once Redis is
    up; through a Redis outage it stays up and delivers afterwards; each change of
    state is one log line, not one per retry."""
    from progrock.local.redis_server import RedisServer, free_port

    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "progrock_demo.settings",
        "REDIS_URL": url,
        "PROGROCK_DATA_DIR": str(tmp_path),
        "PYTHONUNBUFFERED": "1",
    }
    log_path = tmp_path / "rundelay.log"
    with open(log_path, "wb") as log:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "django", "rundelay", env=env, stdout=log, stderr=log
        )
    redis_server = RedisServer(port, tmp_path / "redis")

    async def wait_for_log(text: str, count: int = 1) -> None:
        async with asyncio.timeout(READY_TIMEOUT):
            while log_path.read_text().count(text) < count:
                assert process.returncode is None, log_path.read_text()
                await asyncio.sleep(0.1)

    layer = RedisChannelLayer(hosts=[url])
    try:
        await wait_for_log("cannot reach Redis")
        await asyncio.sleep(3)  # several retries, all quiet
        await asyncio.to_thread(redis_server.start)
        await wait_for_log("rundelay ready")
        await asyncio.to_thread(redis_server.stop)  # the outage
        await wait_for_log("cannot reach Redis", 2)
        await asyncio.sleep(3)
        await asyncio.to_thread(redis_server.start)
        await wait_for_log("reaches Redis again", 2)
        with override_settings(PROGROCK={"REDIS_URL": url}):
            await asyncio.to_thread(send_delayed_sync, "out", {"type": "t", "n": 1}, 50)
        message = await asyncio.wait_for(layer.receive("out"), TIMEOUT)
        assert message == {"type": "t", "n": 1}
        text = log_path.read_text()
        assert process.returncode is None, text
        assert text.count("cannot reach Redis") == 2, text
        assert text.count("reaches Redis again") == 2, text
    finally:
        await layer.close_pools()
        await reap(process)
        await asyncio.to_thread(redis_server.cleanup)


def test_a_taken_metrics_port_stops_rundelay_in_one_line(redis_url: str, tmp_path: Path) -> None:
    """`rundelay --metrics-port` on a port in use exits at once, naming the address."""
    import socket
    import subprocess

    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "progrock_demo.settings",
        "REDIS_URL": redis_url,
        "PROGROCK_DATA_DIR": str(tmp_path),
    }
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "django", "rundelay", "--metrics-port", f"127.0.0.1:{port}"],
            env=env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    assert done.returncode == 1
    assert f"--metrics-port cannot listen on 127.0.0.1:{port}" in done.stderr
    assert "Traceback" not in done.stderr


async def test_rundelay_sigterm_mid_delivery_leaves_nothing_half_claimed(
    redis_url: str, tmp_path: Path, processes: list[asyncio.subprocess.Process]
) -> None:
    """SIGTERM while rundelay delivers thousands of due messages: it exits 0 after one
    line on the signal and one when done, nothing stays claimed (in flight), and every
    message is either delivered or still pending."""
    total = 5000
    layer = RedisChannelLayer(hosts=[redis_url])
    store = DelayStore.from_url(redis_url)
    client = redis.asyncio.Redis.from_url(redis_url)
    try:
        processes.append(server := await start_rundelay(redis_url, tmp_path))
        for first in range(0, total, 1000):
            await store.schedule_many(
                [Envelope("out", {"type": "t", "n": n}, 0) for n in range(first, first + 1000)]
            )
        async with asyncio.timeout(TIMEOUT):  # delivering has begun
            while not await client.zcard(layer.prefix + "out"):
                await asyncio.sleep(0.005)
        server.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(server.wait(), TIMEOUT) == 0
        counts = await store.counts()
        delivered = int(await client.zcard(layer.prefix + "out"))
    finally:
        await client.aclose()
        await store.aclose()
        await layer.close_pools()
    log = (tmp_path / "rundelay.stderr").read_text()
    assert log.count("rundelay got SIGTERM") == 1, log
    assert log.count("every claimed message delivered or put back") == 1, log
    assert counts["inflight"] == 0, counts
    assert delivered + counts["pending"] == total, (delivered, counts)
