"""Live task state, the atomic announce script and the fan-out hub, on a real Redis."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis
from django.test import override_settings

from progrock.protocol import Status, progress_message, started_message, terminal_message
from progrock.state.live import ALREADY_TERMINAL, STALE, UNKNOWN, Change, TaskStore, fanout_channel
from progrock.web.fanout import Hub

pytestmark = pytest.mark.redis


@pytest.fixture
async def store(redis_url: str) -> AsyncIterator[TaskStore]:
    client = aioredis.Redis.from_url(redis_url)
    with override_settings(PROGROCK={"REDIS_URL": redis_url}):
        yield TaskStore(client)
    await client.aclose()


class Recorder:
    def __init__(self) -> None:
        self.messages: list[tuple[str, int, str, dict[str, object]]] = []
        self.resyncs: list[str] = []
        self.arrived = asyncio.Event()

    async def hub_message(self, task_id: str, seq: int, flag: str, body: str) -> None:
        self.messages.append((task_id, seq, flag, json.loads(body)))
        self.arrived.set()

    async def hub_resync(self, task_id: str) -> None:
        self.resyncs.append(task_id)
        self.arrived.set()

    async def wait_for(self, count: int) -> None:
        async with asyncio.timeout(10):
            while len(self.messages) < count:
                self.arrived.clear()
                await self.arrived.wait()


async def new_task(store: TaskStore) -> str:
    task_id = str(uuid.uuid4())
    await store.init(task_id, {"status": "queued", "kind": "rock", "owner": "o", "seq": 0})
    return task_id


def progress(task_id: str, value: float) -> Change:
    return Change(task_id, progress_message(task_id, value), Status.RUNNING, value, {})


async def test_apply_numbers_messages_and_publishes_them(store: TaskStore, redis_url: str) -> None:
    """Each applied change gets the next seq and reaches a hub listener with it."""
    hub = Hub(redis_url, "progrock:")
    listener = Recorder()
    task_id = await new_task(store)
    await hub.subscribe(task_id, listener)
    started = Change(task_id, started_message(task_id, "rock"), Status.RUNNING, 0, {})
    assert await store.apply(started) == 1
    assert await store.apply_many([progress(task_id, 10), progress(task_id, 20)]) == [2, 3]
    await listener.wait_for(3)
    assert [(m[1], m[2]) for m in listener.messages] == [(1, "S"), (2, "P"), (3, "P")]
    assert listener.messages[2][3] == {**progress_message(task_id, 20), "seq": 3}
    view = await store.view(task_id)
    assert view is not None and view.seq == 3 and view.progress == 20
    await hub.unsubscribe(task_id, listener)
    await hub.aclose()


async def test_progress_never_goes_backwards(store: TaskStore) -> None:
    """A lower progress is refused as stale and changes nothing."""
    task_id = await new_task(store)
    assert await store.apply(progress(task_id, 50)) == 1
    assert await store.apply(progress(task_id, 40)) == STALE
    view = await store.view(task_id)
    assert view is not None and view.progress == 50 and view.seq == 1


async def test_nothing_follows_a_terminal_state(store: TaskStore) -> None:
    """After complete, progress and a second terminal message are both refused."""
    task_id = await new_task(store)
    done = Change(task_id, terminal_message(task_id, Status.SUCCEEDED), Status.SUCCEEDED, 100, {})
    assert await store.apply(done) == 1
    assert await store.apply(progress(task_id, 100)) == ALREADY_TERMINAL
    cancelled = Change(
        task_id,
        terminal_message(task_id, Status.CANCELLED, progress=100),
        Status.CANCELLED,
        100,
        {},
    )
    assert await store.apply(cancelled) == ALREADY_TERMINAL
    assert await store.redis.ttl(f"progrock:t:{task_id}") > 0  # finished state expires


async def test_a_terminal_message_is_not_refused_for_lower_progress(store: TaskStore) -> None:
    """failed with a lower progress than stored still ends the task, keeping the higher value."""
    task_id = await new_task(store)
    await store.apply(progress(task_id, 70))
    failed = Change(
        task_id, terminal_message(task_id, Status.FAILED, progress=60), Status.FAILED, 60, {}
    )
    assert await store.apply(failed) == 2
    view = await store.view(task_id)
    assert view is not None and view.status == Status.FAILED and view.progress == 70


async def test_unknown_tasks_are_reported(store: TaskStore) -> None:
    """Applying to a task with no live state says so instead of inventing one."""
    assert await store.apply(progress(str(uuid.uuid4()), 5)) == UNKNOWN


async def test_hub_only_delivers_subscribed_tasks(store: TaskStore, redis_url: str) -> None:
    """A listener gets its task's messages and none of another task's."""
    hub = Hub(redis_url, "progrock:")
    mine, other = await new_task(store), await new_task(store)
    listener = Recorder()
    await hub.subscribe(mine, listener)
    await store.apply(progress(other, 5))
    await store.apply(progress(mine, 7))
    await listener.wait_for(1)
    assert [m[0] for m in listener.messages] == [mine]
    await hub.unsubscribe(mine, listener)
    assert hub.watched() == 0
    await hub.aclose()


async def test_hub_resynchronises_after_losing_its_connection(
    store: TaskStore, redis_url: str
) -> None:
    """When Redis drops the pub/sub connection, the hub reconnects and asks for a resync."""
    hub = Hub(redis_url, "progrock:")
    task_id = await new_task(store)
    listener = Recorder()
    await hub.subscribe(task_id, listener)
    killed = await store.redis.client_kill_filter(_type="pubsub")
    assert killed >= 1
    async with asyncio.timeout(15):
        while not listener.resyncs:
            listener.arrived.clear()
            await listener.arrived.wait()
    assert listener.resyncs == [task_id]
    await store.apply(progress(task_id, 9))
    await listener.wait_for(1)
    assert listener.messages[-1][1] == 1
    await hub.unsubscribe(task_id, listener)
    await hub.aclose()


async def test_an_unchanged_progress_is_not_announced_twice(store: TaskStore) -> None:
    """The same progress and message again (a duplicated tick) is dropped, a new message is not."""
    task_id = await new_task(store)
    assert await store.apply(progress(task_id, 30)) == 1
    assert await store.apply(progress(task_id, 30)) == STALE
    renamed = Change(
        task_id,
        progress_message(task_id, 30, "step two"),
        Status.RUNNING,
        30,
        {"message": "step two"},
    )
    assert await store.apply(renamed) == 2
    assert await store.apply(renamed) == STALE


async def test_an_end_never_shows_less_progress_than_was_shown(
    store: TaskStore, redis_url: str
) -> None:
    """A failed message built with stale, lower progress is published with the higher one."""
    hub = Hub(redis_url, "progrock:")
    listener = Recorder()
    task_id = await new_task(store)
    await hub.subscribe(task_id, listener)
    await store.apply(progress(task_id, 70))
    failed = Change(
        task_id, terminal_message(task_id, Status.FAILED, progress=35), Status.FAILED, 35, {}
    )
    assert await store.apply(failed) == 2
    await listener.wait_for(2)
    assert listener.messages[1][3]["progress"] == 70
    assert listener.messages[1][3]["type"] == "failed"
    await hub.aclose()


async def test_announcing_survives_a_script_cache_flush(store: TaskStore) -> None:
    """After SCRIPT FLUSH (a Redis restart) the pipelined announce loads its script again."""
    task_id = await new_task(store)
    await store.redis.script_flush()
    assert await store.apply_many([progress(task_id, 10)]) == [1]


async def test_hub_survives_a_redis_outage(tmp_path: object) -> None:
    """Redis down for seconds, then back: the hub keeps retrying, resyncs and delivers again."""
    from progrock.local.redis_server import RedisServer

    server = RedisServer()
    server.start()
    port = server.port
    client = aioredis.Redis.from_url(server.url)
    store = TaskStore(client)
    hub = Hub(server.url, "progrock:")
    listener = Recorder()
    try:
        task_id = await new_task(store)
        await hub.subscribe(task_id, listener)
        await asyncio.to_thread(server.stop)
        await asyncio.sleep(1.5)  # longer than the first reconnect backoff
        server = RedisServer(port=port)
        await asyncio.to_thread(server.start)
        await client.aclose()
        client = aioredis.Redis.from_url(server.url)
        store = TaskStore(client)
        async with asyncio.timeout(20):
            while not listener.resyncs:
                listener.arrived.clear()
                await listener.arrived.wait()
        await store.init(task_id, {"status": "running", "owner": "o", "seq": 0})
        await store.apply(progress(task_id, 5))
        await listener.wait_for(1)
        assert listener.messages[0][:3] == (task_id, 1, "P")
    finally:
        await hub.aclose()
        await client.aclose()
        server.cleanup()


async def test_a_second_subscriber_waits_for_the_confirmation(
    store: TaskStore, redis_url: str
) -> None:
    """Two sockets subscribing at once both return only once Redis confirmed."""
    hub = Hub(redis_url, "progrock:")
    task_id = await new_task(store)
    first, second = Recorder(), Recorder()
    await asyncio.gather(hub.subscribe(task_id, first), hub.subscribe(task_id, second))
    numsub = await store.redis.pubsub_numsub(f"progrock:u:{task_id}")
    assert numsub[0][1] == 1
    await store.apply(progress(task_id, 1))
    await first.wait_for(1)
    await second.wait_for(1)
    await hub.aclose()


async def test_subscribing_while_the_hub_reconnects_gets_messages(
    store: TaskStore, redis_url: str
) -> None:
    """A subscribe racing a reconnect returns promptly and its task's messages arrive."""
    hub = Hub(redis_url, "progrock:")
    first, second = await new_task(store), await new_task(store)
    a, b = Recorder(), Recorder()
    await hub.subscribe(first, a)
    assert await store.redis.client_kill_filter(_type="pubsub") >= 1
    began = asyncio.get_running_loop().time()
    await hub.subscribe(second, b)
    assert asyncio.get_running_loop().time() - began < 8  # not the 10 s confirmation timeout
    async with asyncio.timeout(15):
        while not a.resyncs:  # the reconnect has happened and resynced the old listener
            a.arrived.clear()
            await a.arrived.wait()
    await store.apply(progress(first, 1))
    await store.apply(progress(second, 2))
    await a.wait_for(1)
    await b.wait_for(1)
    assert b.messages[0][:3] == (second, 1, "P")
    await hub.aclose()


async def test_non_ascii_messages_survive_the_batched_announce(
    store: TaskStore, redis_url: str
) -> None:
    """The batch travels to the script as JSON: accents, emoji and quotes arrive intact."""
    hub = Hub(redis_url, "progrock:")
    listener = Recorder()
    task_id = await new_task(store)
    await hub.subscribe(task_id, listener)
    text = 'étape "deux" 🚀 \\ fin'
    change = Change(
        task_id, progress_message(task_id, 40, text), Status.RUNNING, 40, {"message": text}
    )
    assert await store.apply_many([change], [(task_id, {"eta_s": 1.5})]) == [1]
    await listener.wait_for(1)
    assert listener.messages[0][3]["message"] == text
    view = await store.view(task_id)
    assert view is not None and view.message == text and view.eta_s == 1.5
    await hub.aclose()


async def test_load_fields_reads_only_what_is_asked_in_chunks(store: TaskStore) -> None:
    """The sweep's scan: chosen fields per task, None for a task without live state."""
    ids = [await new_task(store) for _ in range(5)]
    await store.init(ids[0], {"nd": "123.5"})
    missing = str(uuid.uuid4())
    got = await store.load_fields([*ids, missing], ("status", "nd"), chunk=2)
    assert got[ids[0]] == {"status": "queued", "nd": "123.5"}
    assert all(got[i] == {"status": "queued"} for i in ids[1:])
    assert got[missing] is None


async def test_init_queued_never_writes_over_a_state_that_moved_on(store: TaskStore) -> None:
    """A late attempt of a start may not reset a task another attempt started."""
    await store.init("t-running", {"status": "running", "progress": 30, "seq": 4})
    await store.init("t-queued", {"status": "queued", "seq": 0})
    fields = {"status": "queued", "progress": 0, "seq": 0, "kind": "rock"}
    written = await store.init_queued({t: fields for t in ("t-running", "t-queued", "t-absent")})
    assert written == [False, True, True]
    running = await store.view("t-running")
    assert running is not None and (running.status.value, running.seq) == ("running", 4)
    for task_id in ("t-queued", "t-absent"):
        raw = await store.redis.hgetall(f"progrock:t:{task_id}")
        assert raw[b"status"] == b"queued" and raw[b"kind"] == b"rock"
    assert await store.init_queued({}) == []


async def test_overdue_finds_lost_chains_and_missing_states_in_redis(store: TaskStore) -> None:
    """The sweep's check: only tasks whose next tick is long overdue, or that have no state."""
    base = {"status": "running", "owner": "user:1"}
    await store.init("t-alive", {**base, "nd": "10000.0"})  # due later than the deadline
    await store.init("t-lost", {**base, "nd": "4000.0"})  # due before it: the chain was lost
    await store.init("t-edge", {**base, "nd": "5000.0"})  # due exactly at it
    await store.init("t-rebuilt", {**base, "lp": "4.7"})  # no 'nd': due one interval after 'lp'
    await store.init("t-fresh", {**base, "lp": "4.9"})  # 4.9 s + 0.2 s: after the deadline
    await store.init("t-ownerless", {"status": "running", "nd": "4000.0"})
    await store.init("t-empty-owner", {"status": "running", "owner": ""})
    await store.init("t-odd-nd", {**base, "nd": "soon", "lp": "4.7"})  # not a number: 'lp' counts
    await store.init("t-owner-only", {"owner": "user:1"})  # no 'nd', no 'lp': long overdue
    ids = [
        "t-alive",
        "t-lost",
        "t-edge",
        "t-rebuilt",
        "t-fresh",
        "t-ownerless",
        "t-absent",
        "t-empty-owner",
        "t-odd-nd",
        "t-owner-only",
    ]
    for chunk in (1000, 2):
        missing, stalled = await store.overdue(ids, 5000.0, 200.0, chunk=chunk)
        # Each with the raw 'nd' a re-arm must find.
        assert missing == {"t-ownerless": "4000.0", "t-absent": "", "t-empty-owner": ""}
        assert stalled == {
            "t-lost": "4000.0",
            "t-edge": "5000.0",
            "t-rebuilt": "",
            "t-odd-nd": "soon",
            "t-owner-only": "",
        }
    assert await store.overdue([], 5000.0, 200.0) == ({}, {})


async def test_status_differs_names_tasks_whose_live_status_is_another(store: TaskStore) -> None:
    await store.init("t-same", {"status": "succeeded"})
    await store.init("t-other", {"status": "running"})
    pairs = [("t-same", "succeeded"), ("t-other", "succeeded"), ("t-absent", "failed")]
    for chunk in (1000, 1):
        assert await store.status_differs(pairs, chunk=chunk) == {
            "t-other": True,
            "t-absent": False,
        }
    assert await store.status_differs([]) == {}


async def test_after_a_reconnect_listeners_resync_only_once_subscribed_again(
    store: TaskStore, redis_url: str
) -> None:
    """A resync (snapshot) read before the new subscription took effect could miss a message."""
    hub = Hub(redis_url, "progrock:")
    task_id = await new_task(store)
    confirmed_at_resync: list[bool] = []

    class Checking(Recorder):
        async def hub_resync(self, task_id: str) -> None:
            # Redis had confirmed the new connection's subscription by then.
            confirmed_at_resync.append(hub._confirmed[fanout_channel(task_id, "progrock:")].done())
            await super().hub_resync(task_id)

    listener = Checking()
    await hub.subscribe(task_id, listener)
    assert await store.redis.client_kill_filter(_type="pubsub") >= 1
    async with asyncio.timeout(15):
        while not listener.resyncs:
            listener.arrived.clear()
            await listener.arrived.wait()
    assert confirmed_at_resync == [True]
    await hub.unsubscribe(task_id, listener)
    await hub.aclose()
