"""The worker engine against a real Redis, a real database and the real backend process."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import urllib.request
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis.asyncio as aioredis
from django.conf import settings
from django.test import override_settings

from progrock.delay import DelayStore
from progrock.delay.store import now_ms
from progrock.exceptions import ServiceRejected
from progrock.local.backend.testing import BackendProcess, start_backend
from progrock.local.redis_server import free_port
from progrock.models import Task
from progrock.services.http import HttpTaskService
from progrock.state.live import TaskStore
from progrock.worker import engine as worker
from progrock.worker import start_watch
from progrock.worker.engine import Engine
from progrock.worker.phase import (
    INITIAL_LEAD_MS,
    MARGIN_MS,
    SCALE,
    SEED_EXTRA_MS,
    SEED_SCALE,
    Lead,
    ceil_to,
    is_multiple,
)
from progrock.worker.polls import Tick, parse_ticks

pytestmark = [pytest.mark.redis, pytest.mark.django_db(transaction=True)]


@pytest.fixture(scope="module")
def backend() -> Iterator[BackendProcess]:
    process = start_backend()
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture
async def engine(redis_url: str, backend: BackendProcess) -> AsyncIterator[Engine]:
    layers = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [redis_url]},
        }
    }
    client = aioredis.Redis.from_url(redis_url)
    service = HttpTaskService(backend.url)
    delay = DelayStore.from_url(redis_url)
    with override_settings(PROGROCK={"REDIS_URL": redis_url}, CHANNEL_LAYERS=layers):
        engine = Engine(service, TaskStore(client), delay)
        yield engine
        await engine.drain()  # no database write may outlive the test (its flush would fail)
    await service.aclose()
    await delay.aclose()
    await client.aclose()


def start_message(**params: object) -> dict[str, object]:
    return {
        "type": "progrock.start",
        "task_id": str(uuid.uuid4()),
        "kind": "rock",
        "params": params,
        "owner": "user:1",
        "reply_channel": None,
        "ref": None,
    }


async def pending_ticks(engine: Engine, task_id: str) -> list[float]:
    """Due times of the poll ticks for ``task_id`` waiting in the delay store."""
    payloads = await engine.delay.client.hvals("progrock:delay:payload")
    return [
        due
        for raw in payloads
        for tid, due in json.loads(raw)["content"].get("ticks", [])
        if tid == task_id
    ]


async def next_due(engine: Engine, task_id: str) -> float:
    """The task's next due tick (the one its poll chain will accept)."""
    return float(await engine.store.redis.hget(f"progrock:t:{task_id}", "nd"))


def backend_task_count(backend: BackendProcess) -> int:
    with urllib.request.urlopen(backend.url + "/health", timeout=5) as response:
        return int(json.loads(response.read())["tasks"])


async def test_a_start_delivered_twice_starts_the_task_once(
    engine: Engine, backend: BackendProcess
) -> None:
    """Two workers handling the same start message create one backend task and keep it running."""
    message = start_message(interval_ms=1000)
    # The row exists and is queued before any worker sees the message (as with
    # start_task()), so both deliveries find it and would both go ahead.
    await Task.objects.acreate(id=message["task_id"], owner="user:1", kind="rock", params={})
    before = backend_task_count(backend)
    await asyncio.gather(engine.start(message), engine.start(dict(message)))
    task_id = str(message["task_id"])
    view = await engine.store.view(task_id)
    assert view is not None and view.status.value == "running" and view.seq == 1
    assert backend_task_count(backend) == before + 1
    assert (await Task.objects.aget(pk=task_id)).status == "running"
    assert await pending_ticks(engine, task_id) == [await next_due(engine, task_id)]


async def test_polls_drive_a_task_to_completion(engine: Engine) -> None:
    """Polling publishes rising progress and ends with the result written to the database."""
    message = start_message(interval_ms=20)
    await engine.start(message)
    task_id = str(message["task_id"])
    deadline = time.monotonic() + 20
    seen = []
    while True:
        await engine.poll([Tick(task_id, await next_due(engine, task_id))])
        view = await engine.store.view(task_id)
        assert view is not None
        seen.append(view.progress)
        if view.status.terminal:
            break
        assert time.monotonic() < deadline, f"task never finished: {seen}"
        await asyncio.sleep(0.05)
    assert view.status.value == "succeeded" and view.result == {"riffs": 34}
    assert seen == sorted(seen)
    task = await Task.objects.aget(pk=task_id)
    assert task.status == "succeeded" and task.progress == 100 and task.finished_at


async def test_lost_live_state_is_rebuilt_from_the_database(engine: Engine) -> None:
    """A poll for a task whose Redis state vanished rebuilds it from its row and carries on."""
    message = start_message(interval_ms=1000)
    await engine.start(message)
    task_id = str(message["task_id"])
    due = await next_due(engine, task_id)
    await engine.store.redis.delete(f"progrock:t:{task_id}")
    await engine.poll([Tick(task_id, due)])
    view = await engine.store.view(task_id)
    assert view is not None and view.status.value == "running"
    following = await next_due(engine, task_id)
    assert following > due and following in await pending_ticks(engine, task_id)


async def test_a_tick_counts_once(engine: Engine) -> None:
    """A tick delivered twice, or one of an outdated chain, is dropped: chains never fork."""
    message = start_message(interval_ms=1000)
    await engine.start(message)
    task_id = str(message["task_id"])
    due = await next_due(engine, task_id)
    await asyncio.gather(engine.poll([Tick(task_id, due)]), engine.poll([Tick(task_id, due)]))
    following = await next_due(engine, task_id)
    assert following > due
    assert (await pending_ticks(engine, task_id)).count(following) == 1
    await engine.poll([Tick(task_id, due)])  # a late copy of the old tick
    await engine.poll([Tick(task_id, due - 5000)])  # a tick of some older chain
    assert await next_due(engine, task_id) == following
    assert (await pending_ticks(engine, task_id)).count(following) == 1


async def test_the_sweep_rearms_a_lost_poll_chain(engine: Engine) -> None:
    """A running task with no pending tick and no recent poll is re-armed by the sweep."""
    message = start_message(interval_ms=1000)
    await engine.start(message)
    task_id = str(message["task_id"])
    await engine.store.redis.delete(
        *[k async for k in engine.store.redis.scan_iter("progrock:delay:*")]
    )
    assert await engine.sweep() == 0  # its next tick is not overdue yet
    await engine.store.redis.hset(f"progrock:t:{task_id}", "nd", "1000")  # long overdue
    assert await engine.sweep() == 1
    due = await next_due(engine, task_id)
    assert await pending_ticks(engine, task_id) == [due]
    assert await engine.sweep() == 0  # a re-armed chain is left alone
    await engine.poll([Tick(task_id, 1000)])  # the lost tick turns up after all: dropped
    assert await next_due(engine, task_id) == due


async def test_the_sweep_rebuilds_a_damaged_state_and_rearms_its_chain(engine: Engine) -> None:
    """Live state without its owner (half lost) is rebuilt from the row and, its
    next tick long overdue, re-armed in the same sweep."""
    message = start_message(interval_ms=1000)
    await engine.start(message)
    task_id = str(message["task_id"])
    await engine.store.redis.delete(
        *[k async for k in engine.store.redis.scan_iter("progrock:delay:*")]
    )
    key = f"progrock:t:{task_id}"
    await engine.store.redis.hdel(key, "owner")
    await engine.store.redis.hset(key, "nd", "1000")  # long overdue
    assert await engine.sweep() == 1
    assert await engine.store.redis.hget(key, "owner") == b"user:1"
    due = await next_due(engine, task_id)
    assert due > 1000 and await pending_ticks(engine, task_id) == [due]


async def test_malformed_messages_are_dropped(engine: Engine) -> None:
    """Bad start/cancel messages and ticks are logged and ignored, not raised."""
    await engine.start({"type": "progrock.start", "task_id": "nope"})
    await engine.cancel({"type": "progrock.cancel"})
    assert parse_ticks("x") == []
    good = str(uuid.uuid4())
    assert parse_ticks([[good, 1.0], ["bad", 2], [good], 5]) == [Tick(good, 1.0)]


@contextlib.contextmanager
def sweeps_every(engine: Engine, seconds: float) -> Iterator[None]:
    """The test's settings with ``SWEEP_INTERVAL`` set to ``seconds``."""
    from progrock.conf import progrock_settings

    current = dict(getattr(settings, "PROGROCK", {}))
    with override_settings(PROGROCK={**current, "SWEEP_INTERVAL": seconds}):
        assert seconds == progrock_settings.SWEEP_INTERVAL
        yield


async def test_the_sweep_fails_tasks_whose_start_was_lost(engine: Engine) -> None:
    """A task queued for longer than the failure budget, with no start watchdog at two
    sweeps in a row (its start lost), ends failed."""
    task = await Task.objects.acreate(owner="user:1", kind="rock", params={})
    old = datetime.now(UTC) - timedelta(seconds=3600)
    await Task.objects.filter(pk=task.pk).aupdate(created_at=old)
    with sweeps_every(engine, 0.2):
        await engine.sweep()  # a watchdog that just fired may be on its way: not yet
        assert (await Task.objects.aget(pk=task.pk)).status == "queued"
        await engine.sweep()  # right after (a backed-up channel): still not
        assert (await Task.objects.aget(pk=task.pk)).status == "queued"
        await asyncio.sleep(0.2)  # at least one SWEEP_INTERVAL without a watchdog
        await engine.sweep()
    task = await Task.objects.aget(pk=task.pk)
    assert task.status == "failed" and task.error["code"] == "not_started"
    assert "did not start" in task.error["detail"]


async def test_the_sweep_spares_a_queued_task_whose_watchdog_came_back(engine: Engine) -> None:
    """Missing at one sweep, re-armed by the next (a fired watchdog taken by a worker):
    the task is not failed, and it takes two more sweeps without one to fail it."""
    message = start_message(interval_ms=1000)
    task_id = str(message["task_id"])
    await Task.objects.acreate(id=task_id, owner="user:1", kind="rock", params={})
    old = datetime.now(UTC) - timedelta(seconds=3600)
    await Task.objects.filter(pk=task_id).aupdate(created_at=old)
    with sweeps_every(engine, 0.2):
        await engine.sweep()
        await start_watch.arm(engine.delay, [message])
        await asyncio.sleep(0.2)
        await engine.sweep()
        assert (await Task.objects.aget(pk=task_id)).status == "queued"
        await start_watch.disarm(engine.delay, [task_id])
        await engine.sweep()  # missing again: the wait starts over
        await asyncio.sleep(0.2)
        await engine.sweep()
    assert (await Task.objects.aget(pk=task_id)).status == "failed"


async def test_the_sweep_announces_an_end_the_database_has_but_redis_lacks(
    engine: Engine,
) -> None:
    """A crash between the database write and the announcement is repaired by the sweep."""
    message = start_message(interval_ms=1000)
    await engine.start(message)
    task_id = str(message["task_id"])
    await Task.objects.filter(pk=task_id).aupdate(
        status="succeeded", progress=100, result={"ok": 1}, finished_at=datetime.now(UTC)
    )
    await engine.sweep()
    view = await engine.store.view(task_id)
    assert view is not None and view.status.value == "succeeded" and view.result == {"ok": 1}
    assert view.seq == 2  # started, then the end: announced once
    await engine.sweep()
    view = await engine.store.view(task_id)
    assert view is not None and view.seq == 2


async def test_the_sweep_announces_an_end_whose_live_state_is_gone(engine: Engine) -> None:
    """An end the database has, for a task whose live state vanished (Redis flushed),
    is rebuilt and announced by the sweep."""
    message = start_message(interval_ms=1000)
    await engine.start(message)
    task_id = str(message["task_id"])
    await Task.objects.filter(pk=task_id).aupdate(
        status="failed",
        progress=6,
        error={"code": "lost", "detail": "x"},
        finished_at=datetime.now(UTC),
    )
    await engine.store.redis.delete(f"progrock:t:{task_id}")
    await engine.sweep()
    view = await engine.store.view(task_id)
    assert view is not None and view.status.value == "failed" and view.progress == 6
    assert view.error == {"code": "lost", "detail": "x"}
    seq = view.seq
    await engine.sweep()
    view = await engine.store.view(task_id)
    assert view is not None and view.seq == seq  # announced once


async def test_concurrent_starts_respect_the_owner_limit(engine: Engine, redis_url: str) -> None:
    """Five simultaneous starts of one owner with a limit of 2 leave exactly 2 tasks."""
    layers = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [redis_url]},
        }
    }
    with override_settings(
        PROGROCK={"REDIS_URL": redis_url, "MAX_RUNNING_PER_OWNER": 2}, CHANNEL_LAYERS=layers
    ):
        messages = [start_message(interval_ms=1000) for _ in range(5)]
        await asyncio.gather(*(engine.start(m) for m in messages))
        assert await Task.objects.filter(owner="user:1").acount() == 2


# -- start watchdogs (progrock.worker.start_watch) ---------------------------------------------


def backend_task(backend: BackendProcess, ref: str) -> dict[str, object]:
    with urllib.request.urlopen(f"{backend.url}/tasks/{ref}", timeout=5) as response:
        return json.loads(response.read())  # type: ignore[no-any-return]


async def watchdog(engine: Engine, task_id: str) -> dict[str, object] | None:
    """The content of the task's pending start watchdog, if any."""
    message_id = await engine.delay.client.hget("progrock:delay:keys", f"start:{task_id}")
    if message_id is None:
        return None
    raw = await engine.delay.client.hget("progrock:delay:payload", message_id)
    return json.loads(raw)["content"]  # type: ignore[no-any-return]


async def test_a_forwarded_start_has_a_watchdog_that_the_worker_drops(engine: Engine) -> None:
    """Arming stores the next attempt under start:<id>; a worker that starts the task drops it."""
    message = start_message(interval_ms=1000)
    task_id = str(message["task_id"])
    before = time.time()
    await start_watch.arm(engine.delay, [message])
    armed = await watchdog(engine, task_id)
    assert armed is not None and armed["attempt"] == 1 and armed["task_id"] == task_id
    assert before + 10 <= float(armed["lost_since"]) <= time.time() + 10  # START_TIMEOUT
    await engine.start(message)
    assert (await Task.objects.aget(pk=task_id)).status == "running"
    assert await watchdog(engine, task_id) is None


async def test_a_start_left_queued_keeps_its_watchdog(
    engine: Engine, backend: BackendProcess
) -> None:
    """A start that meets a backend error keeps a watchdog-keyed retry: never stranded."""
    message = start_message(interval_ms=1000)
    task_id = str(message["task_id"])
    await start_watch.arm(engine.delay, [message])
    backend.set_faults(status=503, routes=["create"])
    try:
        await engine.start(message)
    finally:
        backend.clear_faults()
    assert (await Task.objects.aget(pk=task_id)).status == "queued"
    retry = await watchdog(engine, task_id)
    assert retry is not None and retry["attempt"] == 1


async def test_two_attempts_of_a_start_at_once_keep_one_running_backend_task(
    engine: Engine, backend: BackendProcess
) -> None:
    """A re-forwarded start racing the original: one backend task, running, not cancelled."""
    message = start_message(interval_ms=1000)
    task_id = str(message["task_id"])
    await Task.objects.acreate(id=task_id, owner="user:1", kind="rock", params={})
    before = backend_task_count(backend)
    again = {**message, "attempt": 1, "lost_since": time.time(), "nonce": "another"}
    await asyncio.gather(engine.start(message), engine.start(again))
    row = await Task.objects.aget(pk=task_id)
    assert row.status == "running" and row.backend_ref
    assert backend_task_count(backend) == before + 1
    assert backend_task(backend, row.backend_ref)["state"] == "running"
    assert await pending_ticks(engine, task_id) == [await next_due(engine, task_id)]


async def test_a_start_lost_for_longer_than_the_budget_fails_the_task(
    engine: Engine, backend: BackendProcess
) -> None:
    """An attempt whose first loss is older than FAILURE_BUDGET ends the task: not_started."""
    message = start_message(interval_ms=1000)
    task_id = str(message["task_id"])
    before = backend_task_count(backend)
    await engine.start({**message, "attempt": 3, "lost_since": time.time() - 3600})
    row = await Task.objects.aget(pk=task_id)
    assert row.status == "failed" and row.error["code"] == "not_started"
    assert "3 attempts" in row.error["detail"]
    assert backend_task_count(backend) == before
    view = await engine.store.view(task_id)
    assert view is not None and view.status.value == "failed"
    assert await watchdog(engine, task_id) is None


async def test_a_backend_retry_past_its_budget_still_tries_the_backend(engine: Engine) -> None:
    """A retry after backend errors (first_failure, no loss) calls the backend: it starts."""
    message = start_message(interval_ms=1000)
    task_id = str(message["task_id"])
    await engine.start({**message, "attempt": 5, "first_failure": time.time() - 3600})
    assert (await Task.objects.aget(pk=task_id)).status == "running"


async def test_a_refused_start_stays_refused_on_a_later_attempt(
    redis_url: str, engine: Engine
) -> None:
    """After too_many_tasks, a later attempt of that start (a watchdog) does not start it."""
    with override_settings(PROGROCK={"REDIS_URL": redis_url, "MAX_RUNNING_PER_OWNER": 1}):
        first, second = start_message(interval_ms=1000), start_message(interval_ms=1000)
        await engine.start(first)
        await engine.start(second)  # refused: the owner already runs one
        assert not await Task.objects.filter(pk=second["task_id"]).aexists()
        await Task.objects.filter(pk=first["task_id"]).adelete()  # room again
        await engine.start({**second, "attempt": 1, "nonce": "later"})
        assert not await Task.objects.filter(pk=second["task_id"]).aexists()


class FailsOnceTheRowRuns:
    """The real service, except that ``create`` fails, permanently, as soon as
    another attempt has started the task: the losing side of a start race."""

    def __init__(self, service: HttpTaskService) -> None:
        self.service = service
        self.entered = asyncio.Event()

    def __getattr__(self, name: str) -> object:
        if name == "create_many":  # a service without it: each start calls create()
            raise AttributeError(name)
        return getattr(self.service, name)

    async def create(self, kind: str, params: object, *, key: str) -> object:
        self.entered.set()
        for _ in range(500):
            if await Task.objects.filter(pk=key, status="running").aexists():
                raise ServiceRejected("kind rejected (injected)", 400)
            await asyncio.sleep(0.02)
        raise AssertionError("the other attempt never started the task")


async def test_a_failing_attempt_never_ends_a_task_another_attempt_started(
    engine: Engine,
) -> None:
    """Of two attempts of one start, the one whose backend call fails does not fail the task."""
    message = start_message(interval_ms=1000)
    task_id = str(message["task_id"])
    await Task.objects.acreate(id=task_id, owner="user:1", kind="rock", params={})
    loser_service = FailsOnceTheRowRuns(engine.service)  # type: ignore[arg-type]
    loser = Engine(loser_service, engine.store, engine.delay)  # type: ignore[arg-type]
    late = asyncio.create_task(loser.start({**message, "attempt": 1, "nonce": "loser"}))
    await asyncio.wait_for(loser_service.entered.wait(), 10)  # it found the row queued
    await engine.start(message)
    await late
    row = await Task.objects.aget(pk=task_id)
    assert (row.status, row.error) == ("running", None)
    view = await engine.store.view(task_id)
    assert view is not None and view.status.value == "running"


async def test_cancelling_a_queued_task_drops_its_start_watchdog(engine: Engine) -> None:
    """Cancelled before any worker started it: no watchdog is left to forward it again."""
    message = start_message(interval_ms=1000)
    task_id = str(message["task_id"])
    await Task.objects.acreate(id=task_id, owner="user:1", kind="rock", params={})
    await start_watch.arm(engine.delay, [message])
    assert await watchdog(engine, task_id) is not None
    await engine.cancel({"type": "progrock.cancel", "task_id": task_id, "reply_channel": None})
    assert (await Task.objects.aget(pk=task_id)).status == "cancelled"
    assert await watchdog(engine, task_id) is None


async def test_creates_go_out_just_before_a_point_of_the_start_grid(engine: Engine) -> None:
    """Under light load the create is sent the lead before a point of the coarse
    grid, and the first tick is one interval after that point: the backend's
    first step is polled right after it happens."""
    sent: list[float] = []
    create_many = engine.service.create_many  # type: ignore[attr-defined]

    async def timed_create_many(*args: Any, **kwargs: Any) -> Any:
        sent.append(now_ms())
        return await create_many(*args, **kwargs)

    engine.service.create_many = timed_create_many  # type: ignore[attr-defined]
    engine.create_lead = Lead(initial_ms=120.0, margin_ms=0.0)  # creates: 150 ms
    engine.prep_lead = Lead(initial_ms=80.0, margin_ms=0.0)  # preparation: 100 ms
    assert engine.create_lead.lead_ms(now_ms()) == 150.0
    grids = {"POLL_INTERVAL": 1.0, "TICK_GRID": 0.1, "TICK_GRID_LIGHT": 0.5, "TICK_ALIGN": 0}
    with override_settings(PROGROCK={**settings.PROGROCK, **grids}):
        message = start_message(interval_ms=1000)
        # As the worker's start runner does: gather, then start the batch.
        await asyncio.sleep(engine.gather_s(0.02))
        await engine.start(message)
        [at] = sent
        # Sent 150 ms before a point of the 500 ms grid (the event loop may wake late).
        assert (at + 150.0) % 500.0 < 100.0, at
        point = at + 150.0 - (at + 150.0) % 500.0
        assert await next_due(engine, str(message["task_id"])) == point + 1000.0


async def test_with_tick_align_the_first_tick_follows_the_answer_not_the_point(
    engine: Engine,
) -> None:
    """TICK_ALIGN (here 4 ms; 1 by default): the create is still aimed at the coarse grid, but
    the first tick is one interval after the answer, rounded up to the align step,
    not up to the point the create aimed at: no slack before the backend's step."""
    answered: list[float] = []
    create_many = engine.service.create_many  # type: ignore[attr-defined]

    async def timed_create_many(*args: Any, **kwargs: Any) -> Any:
        result = await create_many(*args, **kwargs)
        answered.append(now_ms())  # at or before the engine's own reading
        return result

    engine.service.create_many = timed_create_many  # type: ignore[attr-defined]
    engine.create_lead = Lead(initial_ms=120.0, margin_ms=0.0)  # 150 ms before the point
    engine.prep_lead = Lead(initial_ms=8.0, margin_ms=0.0)
    grids = {"POLL_INTERVAL": 1.0, "TICK_GRID": 0.1, "TICK_GRID_LIGHT": 0.5, "TICK_ALIGN": 0.004}
    with override_settings(PROGROCK={**settings.PROGROCK, **grids}):
        message = start_message(interval_ms=1000)
        await asyncio.sleep(engine.gather_s(0.02))
        await engine.start(message)
        after = now_ms()
    [at] = answered
    due = await next_due(engine, str(message["task_id"]))
    assert at + 1000.0 <= due <= after + 1000.0 + 4.0
    assert is_multiple(due, 4.0)
    # The answer came about 150 ms before the 500 ms point it aimed at (less
    # if the event loop woke late); the tick did not wait for that point.
    point = ceil_to(at, 500.0)
    assert point - at > 20.0, (at, point)
    assert due < point + 1000.0 - 15.0


def seeded_lead(took_ms: float) -> float:
    return took_ms * SEED_SCALE + SEED_EXTRA_MS + MARGIN_MS


async def test_warm_up_times_a_round_trip_on_an_open_connection(engine: Engine) -> None:
    """The first call opens the connection; the second one's time stands in for the create lead."""
    service: Any = engine.service
    real, took = service.warm_up, []

    async def timed() -> None:
        if not took:
            await asyncio.sleep(0.2)  # a slow first call (opening the connection)
        began = now_ms()
        await real()
        took.append(now_ms() - began)

    service.warm_up = timed
    guess = engine.create_lead.lead_ms(now_ms())
    assert guess == INITIAL_LEAD_MS * SCALE + MARGIN_MS
    await engine.warm_up()
    assert len(took) == 2
    lead = engine.create_lead.lead_ms(now_ms())
    assert lead >= seeded_lead(took[1])  # the engine's clock encloses the second call
    assert lead < seeded_lead(100.0)  # and not the first one's 200 ms


async def test_a_failed_warm_up_leaves_the_initial_guess(
    engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    dead = HttpTaskService(f"http://127.0.0.1:{free_port()}", timeout=2.0)
    cold = Engine(dead, engine.store, engine.delay)
    try:
        with caplog.at_level(logging.INFO, logger="progrock.worker"):
            await cold.warm_up()
    finally:
        await dead.aclose()
    assert cold.create_lead.lead_ms(now_ms()) == INITIAL_LEAD_MS * SCALE + MARGIN_MS
    assert "backend warm-up failed" in caplog.text
    assert "unreachable on GET /health" in caplog.text


async def test_a_service_without_warm_up_is_left_alone(engine: Engine) -> None:
    class Bare:  # an adapter of the TaskService protocol only
        async def create(self, *args: object, **kwargs: object) -> None:
            raise AssertionError("not called")

    cold = Engine(Bare(), engine.store, engine.delay)  # type: ignore[arg-type]
    await cold.warm_up()
    assert cold.create_lead.lead_ms(now_ms()) == INITIAL_LEAD_MS * SCALE + MARGIN_MS


async def test_a_new_worker_engine_warms_up_in_the_background(
    redis_url: str, backend: BackendProcess
) -> None:
    """get_engine(), on a worker's first message, starts the warm-up without waiting for it."""
    conf = {
        "REDIS_URL": redis_url,
        "SERVICE": {
            "BACKEND": "progrock.services.http.HttpTaskService",
            "OPTIONS": {"url": backend.url},
        },
    }
    loop = asyncio.get_running_loop()
    with override_settings(PROGROCK=conf):
        engine = worker.get_engine()
        try:
            warming = engine.warming
            assert warming is not None and not warming.done()  # get_engine() did not wait
            assert worker.get_engine() is engine
            await warming
            await asyncio.sleep(0)  # its done callback
            assert engine.warming is None  # nothing keeps the loop alive
            assert engine.create_lead.lead_ms(now_ms()) != INITIAL_LEAD_MS * SCALE + MARGIN_MS
        finally:
            del worker._engines[loop]
            await engine.service.aclose()
            await engine.store.redis.aclose()
            await engine.delay.aclose()


async def test_creates_that_created_nothing_teach_the_lead_nothing(
    engine: Engine, backend: BackendProcess
) -> None:
    """A batch whose create call failed says nothing of how long creates take."""
    guess = engine.create_lead.lead_ms(now_ms())
    backend.set_faults(status=503, routes=["create"])
    try:
        await engine.start(start_message(interval_ms=1000))
    finally:
        backend.clear_faults()
    assert engine.create_lead.lead_ms(now_ms()) == guess
    await engine.start(start_message(interval_ms=1000))  # created: timed
    assert engine.create_lead.lead_ms(now_ms()) != guess


async def pending_ticks_with_scores(engine: Engine, task_id: str) -> list[tuple[float, float]]:
    """(tick due time, when the delay server delivers it) of each pending tick of ``task_id``."""
    client = engine.delay.client
    out = []
    for member, score in await client.zrange("progrock:delay:pending", 0, -1, withscores=True):
        raw = await client.hget("progrock:delay:payload", member)
        for tid, due in json.loads(raw)["content"].get("ticks", []):
            if tid == task_id:
                out.append((due, score))
    return out


def record_status_calls(engine: Engine) -> list[tuple[float, list[str]]]:
    """Make the engine's service note when each status request goes out, and for which refs."""
    calls: list[tuple[float, list[str]]] = []
    status_many = engine.service.status_many

    async def noting(refs: list[str]) -> Any:
        calls.append((now_ms(), list(refs)))
        return await status_many(refs)

    engine.service.status_many = noting  # type: ignore[method-assign]
    return calls


async def test_ticks_are_delivered_tick_lead_before_they_are_due(
    engine: Engine, redis_url: str
) -> None:
    """The delay server hands a tick over TICK_LEAD early; it still carries its due time."""
    with override_settings(PROGROCK={"REDIS_URL": redis_url, "TICK_LEAD": 0.05}):
        message = start_message(interval_ms=1000)
        await engine.start(message)
        task_id = str(message["task_id"])
        [(due, delivered)] = await pending_ticks_with_scores(engine, task_id)
        assert due == await next_due(engine, task_id)
        assert due - 50 <= delivered < due - 40


async def test_a_tick_delivered_early_asks_the_backend_at_its_due_time(
    engine: Engine, redis_url: str
) -> None:
    """The worker claims an early tick at once but waits for its due time to ask the backend:
    the backend's step may not have come before it."""
    with override_settings(PROGROCK={"REDIS_URL": redis_url, "TICK_LEAD": 0.05}):
        message = start_message(interval_ms=200)  # a step as each poll is due
        await engine.start(message)
        task_id = str(message["task_id"])
        due = await next_due(engine, task_id)
        calls = record_status_calls(engine)
        await asyncio.sleep(max(0.0, (due - 45 - now_ms()) / 1000))
        await engine.poll([Tick(task_id, due)])
        [(asked, _)] = calls
        assert due <= asked < due + 150
        view = await engine.store.view(task_id)
        assert view is not None and view.progress > 0  # the step was there to be seen
        assert await next_due(engine, task_id) == due + 200  # POLL_INTERVAL


async def test_the_wait_for_a_due_time_is_capped_at_the_lead(
    engine: Engine, redis_url: str
) -> None:
    """A tick due far ahead of this machine's clock (another machine's clock runs ahead)
    waits for TICK_LEAD at most."""
    with override_settings(PROGROCK={"REDIS_URL": redis_url, "TICK_LEAD": 0.05}):
        message = start_message(interval_ms=1000)
        await engine.start(message)
        task_id = str(message["task_id"])
        ahead = now_ms() + 10_000
        await engine.store.redis.hset(f"progrock:t:{task_id}", "nd", repr(ahead))
        calls = record_status_calls(engine)
        began = now_ms()
        await asyncio.wait_for(engine.poll([Tick(task_id, ahead)]), timeout=5)
        [(asked, _)] = calls
        assert began + 45 <= asked < began + 1000


async def test_a_merged_message_polls_each_later_due_time_on_its_own(
    engine: Engine, redis_url: str
) -> None:
    """A message merging a tick already due with one due later (a delay server that
    fell behind) asks for the first at once, not after waiting for the second."""
    with override_settings(PROGROCK={"REDIS_URL": redis_url, "TICK_LEAD": 0.05}):
        first, second = start_message(interval_ms=1000), start_message(interval_ms=1000)
        await engine.start(first)
        await engine.start(second)
        a, b = str(first["task_id"]), str(second["task_id"])
        now = now_ms()
        due_a, due_b = now - 10, now + 40
        await engine.store.redis.hset(f"progrock:t:{a}", "nd", repr(due_a))
        await engine.store.redis.hset(f"progrock:t:{b}", "nd", repr(due_b))
        calls = record_status_calls(engine)
        await engine.poll([Tick(a, due_a), Tick(b, due_b)])
        assert len(calls) == 2
        asked = {refs[0]: at for at, refs in calls if len(refs) == 1}
        ref_a = (await Task.objects.aget(pk=a)).backend_ref
        ref_b = (await Task.objects.aget(pk=b)).backend_ref
        assert asked[ref_a] < due_b  # not held back by the later due time
        assert asked[ref_b] >= due_b  # the later one still waited for its own
