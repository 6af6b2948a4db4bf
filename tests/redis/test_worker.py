"""The worker (start, poll, cancel, sweep) against a real Redis, database and backend process."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
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
from progrock.models import Task
from progrock.services.http import HttpTaskService
from progrock.services.metered import MeteredService
from progrock.state.live import TaskStore
from progrock.worker import consumer, start_watch
from progrock.worker.cancel import cancel
from progrock.worker.context import Cadence, Worker
from progrock.worker.polls import parse_ticks, poll
from progrock.worker.starts import start_many
from progrock.worker.sweep import sweep
from progrock.worker.ticks import Tick, is_multiple

pytestmark = [pytest.mark.redis, pytest.mark.django_db(transaction=True)]


@pytest.fixture(scope="module")
def backend() -> Iterator[BackendProcess]:
    process = start_backend()
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture
async def worker(redis_url: str, backend: BackendProcess) -> AsyncIterator[Worker]:
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
        worker = Worker(service, TaskStore(client), delay, Cadence.from_settings())
        yield worker
        await worker.drain()  # no database write may outlive the test (its flush would fail)
    await service.aclose()
    await delay.aclose()
    await client.aclose()


async def start(worker: Worker, message: dict[str, object]) -> None:
    """Start one task, as a batch of one."""
    await start_many(worker, [message])


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


async def pending_ticks(worker: Worker, task_id: str) -> list[float]:
    """Due times of the poll ticks for ``task_id`` waiting in the delay store."""
    payloads = await worker.delay.client.hvals("progrock:delay:payload")
    return [
        due
        for raw in payloads
        for tid, due in json.loads(raw)["content"].get("ticks", [])
        if tid == task_id
    ]


async def next_due(worker: Worker, task_id: str) -> float:
    """The task's next due tick (the one its poll chain will accept)."""
    return float(await worker.store.redis.hget(f"progrock:t:{task_id}", "nd"))


def backend_task_count(backend: BackendProcess) -> int:
    with urllib.request.urlopen(backend.url + "/health", timeout=5) as response:
        return int(json.loads(response.read())["tasks"])


async def test_a_start_delivered_twice_starts_the_task_once(
    worker: Worker, backend: BackendProcess
) -> None:
    """Two workers handling the same start message create one backend task and keep it running."""
    message = start_message(interval_ms=1000)
    # The row exists and is queued before any worker sees the message (as with
    # start_task()), so both deliveries find it and would both go ahead.
    await Task.objects.acreate(id=message["task_id"], owner="user:1", kind="rock", params={})
    before = backend_task_count(backend)
    await asyncio.gather(start(worker, message), start(worker, dict(message)))
    task_id = str(message["task_id"])
    view = await worker.store.view(task_id)
    assert view is not None and view.status.value == "running" and view.seq == 1
    assert backend_task_count(backend) == before + 1
    assert (await Task.objects.aget(pk=task_id)).status == "running"
    assert await pending_ticks(worker, task_id) == [await next_due(worker, task_id)]


async def test_polls_drive_a_task_to_completion(worker: Worker) -> None:
    """Polling publishes rising progress and ends with the result written to the database."""
    message = start_message(interval_ms=20)
    await start(worker, message)
    task_id = str(message["task_id"])
    deadline = time.monotonic() + 20
    seen = []
    while True:
        await poll(worker, [Tick(task_id, await next_due(worker, task_id))])
        view = await worker.store.view(task_id)
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


async def test_lost_live_state_is_rebuilt_from_the_database(worker: Worker) -> None:
    """A poll for a task whose Redis state vanished rebuilds it from its row and carries on."""
    message = start_message(interval_ms=1000)
    await start(worker, message)
    task_id = str(message["task_id"])
    due = await next_due(worker, task_id)
    await worker.store.redis.delete(f"progrock:t:{task_id}")
    await poll(worker, [Tick(task_id, due)])
    view = await worker.store.view(task_id)
    assert view is not None and view.status.value == "running"
    following = await next_due(worker, task_id)
    assert following > due and following in await pending_ticks(worker, task_id)


async def test_a_tick_counts_once(worker: Worker) -> None:
    """A tick delivered twice, or one of an outdated chain, is dropped: chains never fork."""
    message = start_message(interval_ms=1000)
    await start(worker, message)
    task_id = str(message["task_id"])
    due = await next_due(worker, task_id)
    await asyncio.gather(poll(worker, [Tick(task_id, due)]), poll(worker, [Tick(task_id, due)]))
    following = await next_due(worker, task_id)
    assert following > due
    assert (await pending_ticks(worker, task_id)).count(following) == 1
    await poll(worker, [Tick(task_id, due)])  # a late copy of the old tick
    await poll(worker, [Tick(task_id, due - 5000)])  # a tick of some older chain
    assert await next_due(worker, task_id) == following
    assert (await pending_ticks(worker, task_id)).count(following) == 1


async def test_the_sweep_rearms_a_lost_poll_chain(worker: Worker) -> None:
    """A running task with no pending tick and no recent poll is re-armed by the sweep."""
    message = start_message(interval_ms=1000)
    await start(worker, message)
    task_id = str(message["task_id"])
    await worker.store.redis.delete(
        *[k async for k in worker.store.redis.scan_iter("progrock:delay:*")]
    )
    assert await sweep(worker) == 0  # its next tick is not overdue yet
    await worker.store.redis.hset(f"progrock:t:{task_id}", "nd", "1000")  # long overdue
    assert await sweep(worker) == 1
    due = await next_due(worker, task_id)
    assert await pending_ticks(worker, task_id) == [due]
    assert await sweep(worker) == 0  # a re-armed chain is left alone
    await poll(worker, [Tick(task_id, 1000)])  # the lost tick turns up after all: dropped
    assert await next_due(worker, task_id) == due


async def test_the_sweep_rebuilds_a_damaged_state_and_rearms_its_chain(worker: Worker) -> None:
    """Live state without its owner (half lost) is rebuilt from the row and, its
    next tick long overdue, re-armed in the same sweep."""
    message = start_message(interval_ms=1000)
    await start(worker, message)
    task_id = str(message["task_id"])
    await worker.store.redis.delete(
        *[k async for k in worker.store.redis.scan_iter("progrock:delay:*")]
    )
    key = f"progrock:t:{task_id}"
    await worker.store.redis.hdel(key, "owner")
    await worker.store.redis.hset(key, "nd", "1000")  # long overdue
    assert await sweep(worker) == 1
    assert await worker.store.redis.hget(key, "owner") == b"user:1"
    due = await next_due(worker, task_id)
    assert due > 1000 and await pending_ticks(worker, task_id) == [due]


async def test_malformed_messages_are_dropped(worker: Worker) -> None:
    """Bad start/cancel messages and ticks are logged and ignored, not raised."""
    await start(worker, {"type": "progrock.start", "task_id": "nope"})
    await cancel(worker, {"type": "progrock.cancel"})
    assert parse_ticks("x") == []
    good = str(uuid.uuid4())
    assert parse_ticks([[good, 1.0], ["bad", 2], [good], 5]) == [Tick(good, 1.0)]


@contextlib.contextmanager
def sweeps_every(worker: Worker, seconds: float) -> Iterator[None]:
    """The test's settings with ``SWEEP_INTERVAL`` set to ``seconds``."""
    from progrock.conf import progrock_settings

    current = dict(getattr(settings, "PROGROCK", {}))
    with override_settings(PROGROCK={**current, "SWEEP_INTERVAL": seconds}):
        assert seconds == progrock_settings.SWEEP_INTERVAL
        yield


async def test_the_sweep_fails_tasks_whose_start_was_lost(worker: Worker) -> None:
    """A task queued for longer than the failure budget, with no start watchdog at two
    sweeps in a row (its start lost), ends failed."""
    task = await Task.objects.acreate(owner="user:1", kind="rock", params={})
    old = datetime.now(UTC) - timedelta(seconds=3600)
    await Task.objects.filter(pk=task.pk).aupdate(created_at=old)
    with sweeps_every(worker, 0.2):
        await sweep(worker)  # a watchdog that just fired may be on its way: not yet
        assert (await Task.objects.aget(pk=task.pk)).status == "queued"
        await sweep(worker)  # right after (a backed-up channel): still not
        assert (await Task.objects.aget(pk=task.pk)).status == "queued"
        await asyncio.sleep(0.2)  # at least one SWEEP_INTERVAL without a watchdog
        await sweep(worker)
    task = await Task.objects.aget(pk=task.pk)
    assert task.status == "failed" and task.error["code"] == "not_started"
    assert "did not start" in task.error["detail"]


async def test_the_sweep_spares_a_queued_task_whose_watchdog_came_back(worker: Worker) -> None:
    """Missing at one sweep, re-armed by the next (a fired watchdog taken by a worker):
    the task is not failed, and it takes two more sweeps without one to fail it."""
    message = start_message(interval_ms=1000)
    task_id = str(message["task_id"])
    await Task.objects.acreate(id=task_id, owner="user:1", kind="rock", params={})
    old = datetime.now(UTC) - timedelta(seconds=3600)
    await Task.objects.filter(pk=task_id).aupdate(created_at=old)
    with sweeps_every(worker, 0.2):
        await sweep(worker)
        await start_watch.arm(worker.delay, [message])
        await asyncio.sleep(0.2)
        await sweep(worker)
        assert (await Task.objects.aget(pk=task_id)).status == "queued"
        await start_watch.disarm(worker.delay, [task_id])
        await sweep(worker)  # missing again: the wait starts over
        await asyncio.sleep(0.2)
        await sweep(worker)
    assert (await Task.objects.aget(pk=task_id)).status == "failed"


async def test_the_sweep_announces_an_end_the_database_has_but_redis_lacks(
    worker: Worker,
) -> None:
    """A crash between the database write and the announcement is repaired by the sweep."""
    message = start_message(interval_ms=1000)
    await start(worker, message)
    task_id = str(message["task_id"])
    await Task.objects.filter(pk=task_id).aupdate(
        status="succeeded", progress=100, result={"ok": 1}, finished_at=datetime.now(UTC)
    )
    await sweep(worker)
    view = await worker.store.view(task_id)
    assert view is not None and view.status.value == "succeeded" and view.result == {"ok": 1}
    assert view.seq == 2  # started, then the end: announced once
    await sweep(worker)
    view = await worker.store.view(task_id)
    assert view is not None and view.seq == 2


async def test_the_sweep_announces_an_end_whose_live_state_is_gone(worker: Worker) -> None:
    """An end the database has, for a task whose live state vanished (Redis flushed),
    is rebuilt and announced by the sweep."""
    message = start_message(interval_ms=1000)
    await start(worker, message)
    task_id = str(message["task_id"])
    await Task.objects.filter(pk=task_id).aupdate(
        status="failed",
        progress=6,
        error={"code": "lost", "detail": "x"},
        finished_at=datetime.now(UTC),
    )
    await worker.store.redis.delete(f"progrock:t:{task_id}")
    await sweep(worker)
    view = await worker.store.view(task_id)
    assert view is not None and view.status.value == "failed" and view.progress == 6
    assert view.error == {"code": "lost", "detail": "x"}
    seq = view.seq
    await sweep(worker)
    view = await worker.store.view(task_id)
    assert view is not None and view.seq == seq  # announced once


async def test_concurrent_starts_respect_the_owner_limit(worker: Worker, redis_url: str) -> None:
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
        await asyncio.gather(*(start(worker, m) for m in messages))
        assert await Task.objects.filter(owner="user:1").acount() == 2


# -- start watchdogs (progrock.worker.start_watch) ---------------------------------------------


def backend_task(backend: BackendProcess, ref: str) -> dict[str, object]:
    with urllib.request.urlopen(f"{backend.url}/tasks/{ref}", timeout=5) as response:
        return json.loads(response.read())  # type: ignore[no-any-return]


async def watchdog(worker: Worker, task_id: str) -> dict[str, object] | None:
    """The content of the task's pending start watchdog, if any."""
    message_id = await worker.delay.client.hget("progrock:delay:keys", f"start:{task_id}")
    if message_id is None:
        return None
    raw = await worker.delay.client.hget("progrock:delay:payload", message_id)
    return json.loads(raw)["content"]  # type: ignore[no-any-return]


async def test_a_forwarded_start_has_a_watchdog_that_the_worker_drops(worker: Worker) -> None:
    """Arming stores the next attempt under start:<id>; a worker that starts the task drops it."""
    message = start_message(interval_ms=1000)
    task_id = str(message["task_id"])
    before = time.time()
    await start_watch.arm(worker.delay, [message])
    armed = await watchdog(worker, task_id)
    assert armed is not None and armed["attempt"] == 1 and armed["task_id"] == task_id
    assert before + 10 <= float(armed["lost_since"]) <= time.time() + 10  # START_TIMEOUT
    await start(worker, message)
    assert (await Task.objects.aget(pk=task_id)).status == "running"
    assert await watchdog(worker, task_id) is None


async def test_a_start_left_queued_keeps_its_watchdog(
    worker: Worker, backend: BackendProcess
) -> None:
    """A start that meets a backend error keeps a watchdog-keyed retry: never stranded."""
    message = start_message(interval_ms=1000)
    task_id = str(message["task_id"])
    await start_watch.arm(worker.delay, [message])
    backend.set_faults(status=503, routes=["create"])
    try:
        await start(worker, message)
    finally:
        backend.clear_faults()
    assert (await Task.objects.aget(pk=task_id)).status == "queued"
    retry = await watchdog(worker, task_id)
    assert retry is not None and retry["attempt"] == 1


async def test_two_attempts_of_a_start_at_once_keep_one_running_backend_task(
    worker: Worker, backend: BackendProcess
) -> None:
    """A re-forwarded start racing the original: one backend task, running, not cancelled."""
    message = start_message(interval_ms=1000)
    task_id = str(message["task_id"])
    await Task.objects.acreate(id=task_id, owner="user:1", kind="rock", params={})
    before = backend_task_count(backend)
    again = {**message, "attempt": 1, "lost_since": time.time(), "nonce": "another"}
    await asyncio.gather(start(worker, message), start(worker, again))
    row = await Task.objects.aget(pk=task_id)
    assert row.status == "running" and row.backend_ref
    assert backend_task_count(backend) == before + 1
    assert backend_task(backend, row.backend_ref)["state"] == "running"
    assert await pending_ticks(worker, task_id) == [await next_due(worker, task_id)]


async def test_a_start_lost_for_longer_than_the_budget_fails_the_task(
    worker: Worker, backend: BackendProcess
) -> None:
    """An attempt whose first loss is older than FAILURE_BUDGET ends the task: not_started."""
    message = start_message(interval_ms=1000)
    task_id = str(message["task_id"])
    before = backend_task_count(backend)
    await start(worker, {**message, "attempt": 3, "lost_since": time.time() - 3600})
    row = await Task.objects.aget(pk=task_id)
    assert row.status == "failed" and row.error["code"] == "not_started"
    assert "3 attempts" in row.error["detail"]
    assert backend_task_count(backend) == before
    view = await worker.store.view(task_id)
    assert view is not None and view.status.value == "failed"
    assert await watchdog(worker, task_id) is None


async def test_a_backend_retry_past_its_budget_still_tries_the_backend(worker: Worker) -> None:
    """A retry after backend errors (first_failure, no loss) calls the backend: it starts."""
    message = start_message(interval_ms=1000)
    task_id = str(message["task_id"])
    await start(worker, {**message, "attempt": 5, "first_failure": time.time() - 3600})
    assert (await Task.objects.aget(pk=task_id)).status == "running"


async def test_a_refused_start_stays_refused_on_a_later_attempt(
    redis_url: str, worker: Worker
) -> None:
    """After too_many_tasks, a later attempt of that start (a watchdog) does not start it."""
    with override_settings(PROGROCK={"REDIS_URL": redis_url, "MAX_RUNNING_PER_OWNER": 1}):
        first, second = start_message(interval_ms=1000), start_message(interval_ms=1000)
        await start(worker, first)
        await start(worker, second)  # refused: the owner already runs one
        assert not await Task.objects.filter(pk=second["task_id"]).aexists()
        await Task.objects.filter(pk=first["task_id"]).adelete()  # room again
        await start(worker, {**second, "attempt": 1, "nonce": "later"})
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
    worker: Worker,
) -> None:
    """Of two attempts of one start, the one whose backend call fails does not fail the task."""
    message = start_message(interval_ms=1000)
    task_id = str(message["task_id"])
    await Task.objects.acreate(id=task_id, owner="user:1", kind="rock", params={})
    loser_service = FailsOnceTheRowRuns(worker.service)  # type: ignore[arg-type]
    loser = dataclasses.replace(worker, service=loser_service)
    late = asyncio.create_task(start(loser, {**message, "attempt": 1, "nonce": "loser"}))
    await asyncio.wait_for(loser_service.entered.wait(), 10)  # it found the row queued
    await start(worker, message)
    await late
    row = await Task.objects.aget(pk=task_id)
    assert (row.status, row.error) == ("running", None)
    view = await worker.store.view(task_id)
    assert view is not None and view.status.value == "running"


async def test_cancelling_a_queued_task_drops_its_start_watchdog(worker: Worker) -> None:
    """Cancelled before any worker started it: no watchdog is left to forward it again."""
    message = start_message(interval_ms=1000)
    task_id = str(message["task_id"])
    await Task.objects.acreate(id=task_id, owner="user:1", kind="rock", params={})
    await start_watch.arm(worker.delay, [message])
    assert await watchdog(worker, task_id) is not None
    await cancel(worker, {"type": "progrock.cancel", "task_id": task_id, "reply_channel": None})
    assert (await Task.objects.aget(pk=task_id)).status == "cancelled"
    assert await watchdog(worker, task_id) is None


async def pending_ticks_with_scores(worker: Worker, task_id: str) -> list[tuple[float, float]]:
    """(tick due time, when the delay server delivers it) of each pending tick of ``task_id``."""
    client = worker.delay.client
    out = []
    for member, score in await client.zrange("progrock:delay:pending", 0, -1, withscores=True):
        raw = await client.hget("progrock:delay:payload", member)
        for tid, due in json.loads(raw)["content"].get("ticks", []):
            if tid == task_id:
                out.append((due, score))
    return out


def record_status_calls(worker: Worker) -> list[tuple[float, list[str]]]:
    """Make the worker's service note when each status request goes out, and for which refs."""
    calls: list[tuple[float, list[str]]] = []
    status_many = worker.service.status_many

    async def noting(refs: list[str]) -> Any:
        calls.append((now_ms(), list(refs)))
        return await status_many(refs)

    worker.service.status_many = noting  # type: ignore[method-assign]
    return calls


async def test_a_new_task_s_first_tick_is_one_interval_after_the_answer_on_the_grid(
    worker: Worker,
) -> None:
    """The first poll is due one POLL_INTERVAL after the backend answered the create,
    rounded up to the tick grid: never before the backend's first step."""
    answered: list[float] = []
    create_many = worker.service.create_many  # type: ignore[attr-defined]

    async def timed_create_many(*args: Any, **kwargs: Any) -> Any:
        result = await create_many(*args, **kwargs)
        answered.append(now_ms())  # at or before the worker's own reading
        return result

    worker.service.create_many = timed_create_many  # type: ignore[attr-defined]
    cadence = Cadence(interval_ms=1000.0, grid_ms=100.0, batch=200, channel="prog-rocker")
    timed = dataclasses.replace(worker, cadence=cadence)
    message = start_message(interval_ms=1000)
    await start(timed, message)
    after = now_ms()
    [at] = answered
    due = await next_due(worker, str(message["task_id"]))
    assert at + 1000.0 <= due <= after + 1000.0 + 100.0
    assert is_multiple(due, 100.0)
    assert await pending_ticks(worker, str(message["task_id"])) == [due]


async def test_ticks_are_delivered_when_due(worker: Worker) -> None:
    """A scheduled tick's delivery time in the delay store is its due time: never early."""
    message = start_message(interval_ms=1000)
    await start(worker, message)
    task_id = str(message["task_id"])
    [(due, delivered)] = await pending_ticks_with_scores(worker, task_id)
    assert due == await next_due(worker, task_id)
    assert due <= delivered < due + 50  # (two clock readings apart, no await between)


async def test_a_merged_message_polls_all_its_due_times_in_one_request(worker: Worker) -> None:
    """A message merging ticks of several due times (a delay server that fell behind)
    asks the backend for all of them at once and keeps each task's own cadence."""
    first, second = start_message(interval_ms=1000), start_message(interval_ms=1000)
    await start(worker, first)
    await start(worker, second)
    a, b = str(first["task_id"]), str(second["task_id"])
    now = now_ms()
    due_a, due_b = now - 210, now - 10
    await worker.store.redis.hset(f"progrock:t:{a}", "nd", repr(due_a))
    await worker.store.redis.hset(f"progrock:t:{b}", "nd", repr(due_b))
    calls = record_status_calls(worker)
    await poll(worker, [Tick(a, due_a), Tick(b, due_b)])
    [(_, refs)] = calls
    ref_a = (await Task.objects.aget(pk=a)).backend_ref
    ref_b = (await Task.objects.aget(pk=b)).backend_ref
    assert sorted(refs) == sorted([ref_a, ref_b])
    interval = worker.cadence.interval_ms
    for task_id, due in ((a, due_a), (b, due_b)):  # each keeps its own phase
        following = await next_due(worker, task_id)
        assert following > due and is_multiple(following - due, interval)


async def test_each_event_loop_has_one_worker_built_from_the_settings(
    redis_url: str, backend: BackendProcess
) -> None:
    """get_worker(), on a worker's first message, builds the loop's worker once."""
    conf = {
        "REDIS_URL": redis_url,
        "POLL_INTERVAL": 0.5,
        "SERVICE": {
            "BACKEND": "progrock.services.http.HttpTaskService",
            "OPTIONS": {"url": backend.url},
        },
    }
    loop = asyncio.get_running_loop()
    with override_settings(PROGROCK=conf):
        built = consumer.get_worker()
        try:
            assert consumer.get_worker() is built
            assert (built.cadence.interval_ms, built.cadence.grid_ms) == (500.0, 20.0)
            assert isinstance(built.service, MeteredService)  # timed (progrock.metrics)
            assert isinstance(built.service.service, HttpTaskService)
        finally:
            del consumer._workers[loop]
            await built.service.aclose()
            await built.store.redis.aclose()
            await built.delay.aclose()


async def test_the_sweep_deletes_old_ended_rows_in_bounded_batches(worker: Worker) -> None:
    """With RETENTION set, each sweep deletes at most its batch (500) of rows of tasks that
    ended longer ago than that; running and recent tasks stay. Without it (the default),
    nothing is deleted."""
    long_ago = datetime.now(UTC) - timedelta(days=40)
    statuses = ["succeeded", "failed", "cancelled"]
    await Task.objects.abulk_create(
        Task(owner="o", kind="rock", status=statuses[i % 3], finished_at=long_ago)
        for i in range(1200)
    )
    recent = await Task.objects.acreate(
        owner="o", kind="rock", status="succeeded", finished_at=datetime.now(UTC)
    )
    running = await Task.objects.acreate(owner="o", kind="rock", status="running")
    await sweep(worker)
    assert await Task.objects.acount() == 1202  # RETENTION None: every row is kept
    current = dict(getattr(settings, "PROGROCK", {}))
    counts = []
    with override_settings(PROGROCK={**current, "RETENTION": "30d"}):
        for _ in range(3):
            await sweep(worker)
            counts.append(await Task.objects.acount())
    assert counts == [702, 202, 2]
    assert {t.pk async for t in Task.objects.all()} == {recent.pk, running.pk}


async def test_the_sweep_rebuilds_an_ended_task_without_live_state_quietly(
    worker: Worker, caplog: pytest.LogCaptureFixture
) -> None:
    """A task ended in the database with no live state (expired, or a new Redis: routine
    at start-up) gets its live state back, logged at INFO in plain words, no warning."""
    task = await Task.objects.acreate(
        owner="user:1",
        kind="rock",
        params={},
        status="succeeded",
        progress=100,
        finished_at=datetime.now(UTC),
    )
    with caplog.at_level(logging.INFO, logger="progrock"):
        await sweep(worker)
    assert await worker.store.redis.hget(f"progrock:t:{task.pk}", "status") == b"succeeded"
    lines = [
        (r.levelname, r.getMessage())
        for r in caplog.records
        if getattr(r, "event", None) == "sweep_unannounced"
    ]
    assert lines == [
        (
            "INFO",
            f"task {task.pk} ended (succeeded) but Redis had no live state for it (expired, "
            "or Redis restarted empty): rebuilt from its row; nothing was lost",
        )
    ]


async def test_the_sweep_sends_an_end_live_state_missed_with_a_plain_warning(
    worker: Worker, caplog: pytest.LogCaptureFixture
) -> None:
    """A task ended in the database while its live state still says running (a process
    stopped between the two writes): its end is sent, with a warning saying so."""
    message = start_message(interval_ms=1000)
    await start(worker, message)
    task_id = str(message["task_id"])
    await Task.objects.filter(pk=task_id).aupdate(
        status="failed", finished_at=datetime.now(UTC), error={"code": "x", "detail": "y"}
    )
    with caplog.at_level(logging.INFO, logger="progrock"):
        await sweep(worker)
    assert await worker.store.redis.hget(f"progrock:t:{task_id}", "status") == b"failed"
    lines = [
        (r.levelname, r.getMessage())
        for r in caplog.records
        if getattr(r, "event", None) == "sweep_unannounced"
    ]
    assert lines == [
        (
            "WARNING",
            f"task {task_id} ended (failed) in the database but Redis still showed it active "
            "(a process stopped between the two writes): its end is now sent to the pages "
            "watching it; nothing was lost",
        )
    ]
