"""Starts and poll ticks with no delay server beating, over a real Redis: refused
and logged at once, not accepted into a task that never moves."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis
from channels.testing import WebsocketCommunicator
from django.test import override_settings

from progrock.delay import DelayStore
from progrock.services.http import HttpTaskService
from progrock.state.live import TaskStore
from progrock.web.consumer import ProgressConsumer
from progrock.worker.context import Cadence, DelayWatch, Worker
from progrock.worker.schedule import schedule_ticks
from progrock.worker.ticks import Tick
from tests.conftest import Beating

pytestmark = pytest.mark.redis

NO_DELAY = "no delay server is running (start `manage.py rundelay`)"


@pytest.fixture
def only_a_worker(redis_url: str) -> AsyncIterator[Beating]:
    beating = Beating(redis_url, ("worker",))
    yield beating
    beating.stop()


async def test_a_fresh_web_process_refuses_its_first_start_without_a_delay_server(
    redis_url: str, only_a_worker: Beating, caplog: pytest.LogCaptureFixture
) -> None:
    """With a worker but no delay server beating, the first start of a fresh web process
    is answered `unavailable` naming `manage.py rundelay`, logged once for many starts."""
    with (
        override_settings(PROGROCK={"REDIS_URL": redis_url}),
        caplog.at_level(logging.WARNING, logger="progrock.web"),
    ):
        socket = WebsocketCommunicator(ProgressConsumer.as_asgi(), "/prog/")
        socket.scope["client"] = ["203.0.113.7", 40_000]
        assert (await socket.connect())[0]
        assert json.loads(await socket.receive_from()) == {"accept": True}
        answers = []
        for ref in ("r1", "r2", "r3"):
            await socket.send_to(text_data=json.dumps({"action": "start", "ref": ref}))
            answers.append(json.loads(await socket.receive_from(timeout=15)))
        await socket.disconnect()
    for ref, answer in zip(("r1", "r2", "r3"), answers, strict=True):
        assert answer == {
            "type": "error",
            "code": "unavailable",
            "detail": NO_DELAY,
            "action": "start",
            "ref": ref,
        }
    warnings = [r.getMessage() for r in caplog.records if r.name == "progrock.web"]
    assert warnings == [f"{NO_DELAY}; starts are refused with 'unavailable' until one runs"]


async def test_a_worker_scheduling_ticks_warns_once_while_no_delay_server_beats(
    redis_url: str, only_a_worker: Beating, caplog: pytest.LogCaptureFixture
) -> None:
    """A tick scheduled with no delay server beating (a start's first: none comes back)
    makes one warning naming `manage.py rundelay`, however many follow; one more when a
    delay server beats again. The scheduling itself does not wait for the check."""
    client = aioredis.Redis.from_url(redis_url)
    delay = DelayStore.from_url(redis_url)
    watch = DelayWatch.on(client, "progrock:")
    worker = Worker(
        HttpTaskService("http://127.0.0.1:9"),
        TaskStore(client),
        delay,
        Cadence.from_settings(),
        delay_watch=watch,
    )
    try:
        with caplog.at_level(logging.WARNING, logger="progrock.worker"):
            await schedule_ticks(worker, [Tick(str(uuid.uuid4()), 1e15)])
            await watch.wait()  # the confirmation window (3 s), beside the scheduling
            for _ in range(3):
                await schedule_ticks(worker, [Tick(str(uuid.uuid4()), 1e15)])
                await watch.wait()
            back = Beating(redis_url, ("delay",))
            try:
                watch.liveness.recheck_after = 0.0  # read again at once
                await schedule_ticks(worker, [Tick(str(uuid.uuid4()), 1e15)])
                await watch.wait()
            finally:
                back.stop()
    finally:
        await delay.aclose()
        await client.aclose()
    assert [r.getMessage() for r in caplog.records if r.name == "progrock.worker"] == [
        f"{NO_DELAY}; poll ticks wait in Redis and tasks show no progress until one runs",
        "a delay server is running again; poll ticks are delivered again",
    ]
