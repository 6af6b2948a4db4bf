"""``manage.py runprogrock`` as a real subprocess: it outlives Redis and database outages."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from channels_redis.core import RedisChannelLayer

from progrock.exceptions import ProgRockError
from progrock.local.redis_server import RedisServer, free_port

pytestmark = [pytest.mark.redis, pytest.mark.fault]

READY_TIMEOUT = 60.0
CHANNEL = "prog-rocker"
RECEIVE_FAILING = "receiving from the channel layer failing"
RECEIVE_BACK = "receiving from the channel layer works again"
WORK_FAILING = "the worker's work (Redis or the database) failing"
WORK_BACK = "the worker's work (Redis or the database) works again"
DROPPED = "dropping message of unknown type 'progrock.probe'"


class WorkerProcess:
    """A ``runprogrock`` child writing its log to a file."""

    def __init__(self, tmp_path: Path, **env: str) -> None:
        self.log_path = tmp_path / "worker.log"
        base = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
        base.update(
            DJANGO_SETTINGS_MODULE="progrock_demo.settings",
            PROGROCK_DATA_DIR=str(tmp_path),
            PYTHONUNBUFFERED="1",
            **env,
        )
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "django", "runprogrock"],
                env=base,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def text(self) -> str:
        return self.log_path.read_text(errors="replace")

    async def wait_for(self, text: str, count: int = 1) -> None:
        """Wait until the log holds ``text`` ``count`` times; fail if the worker exits."""
        async with asyncio.timeout(READY_TIMEOUT):
            while self.text().count(text) < count:
                assert self.process.poll() is None, f"the worker exited:\n{self.text()}"
                await asyncio.sleep(0.1)

    def stop(self) -> None:
        self.process.kill()
        self.process.wait()


@pytest.fixture
async def workers() -> AsyncIterator[list[WorkerProcess]]:
    started: list[WorkerProcess] = []
    yield started
    for worker in started:
        worker.stop()


async def send(url: str, message: dict[str, Any]) -> None:
    layer = RedisChannelLayer(hosts=[url])
    try:
        await layer.send(CHANNEL, message)
    finally:
        await layer.close_pools()


async def test_a_worker_outlives_a_redis_outage(
    tmp_path: Path, workers: list[WorkerProcess]
) -> None:
    """Redis killed under a running worker: it stays up (Channels' worker would exit),
    logs one line when receiving fails and one when it works again, and handles the
    next message once Redis is back."""
    server = RedisServer(free_port(), tmp_path / "redis")
    await asyncio.to_thread(server.start)
    try:
        workers.append(worker := WorkerProcess(tmp_path, REDIS_URL=server.url))
        await send(server.url, {"type": "progrock.probe"})
        await worker.wait_for(DROPPED)
        assert server.process is not None
        server.process.kill()  # a crash, not a shutdown
        await asyncio.to_thread(server.process.wait)
        await worker.wait_for(RECEIVE_FAILING)
        await asyncio.sleep(4)  # retries meanwhile, each quiet
        await asyncio.to_thread(server.start)
        await send(server.url, {"type": "progrock.probe"})
        await worker.wait_for(DROPPED, 2)
        await worker.wait_for(RECEIVE_BACK)
        text = worker.text()
        assert worker.process.poll() is None, text
        assert text.count(RECEIVE_FAILING) == 1 and text.count(RECEIVE_BACK) == 1, text
        assert "Traceback" not in text, text
    finally:
        await asyncio.to_thread(server.cleanup)


async def test_a_worker_outlives_a_database_outage(
    tmp_path: Path, redis_url: str, workers: list[WorkerProcess]
) -> None:
    """PostgreSQL stopped under a running worker: its sweeps fail with one log line, not
    a traceback each; the worker stays up and, once the database is back, reconnects
    and says so in one line."""
    pytest.importorskip("psycopg")
    from progrock.local.postgres_server import PostgresServer

    try:
        database = PostgresServer()
    except ProgRockError as exc:
        pytest.skip(f"no PostgreSQL server binaries: {exc}")
    try:
        await asyncio.to_thread(database.start)
        env = {"DATABASE_URL": database.url, "REDIS_URL": redis_url}
        migrate = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "django", "migrate", "--noinput"],
            env={**os.environ, "DJANGO_SETTINGS_MODULE": "progrock_demo.settings", **env},
            capture_output=True,
            check=False,
        )
        assert migrate.returncode == 0, migrate.stderr.decode()
        workers.append(worker := WorkerProcess(tmp_path, **env))
        await send(redis_url, {"type": "progrock.probe"})
        await worker.wait_for(DROPPED)
        await asyncio.to_thread(database.stop)
        for _ in range(4):
            await send(redis_url, {"type": "progrock.sweep"})
        await worker.wait_for(WORK_FAILING)
        await asyncio.sleep(2)  # the other sweeps fail quietly
        await asyncio.to_thread(database.start)
        await send(redis_url, {"type": "progrock.sweep"})
        await worker.wait_for(WORK_BACK)
        text = worker.text()
        assert worker.process.poll() is None, text
        assert text.count(WORK_FAILING) == 1 and text.count(WORK_BACK) == 1, text
        assert "Traceback" not in text, text
    finally:
        await asyncio.to_thread(database.cleanup)
