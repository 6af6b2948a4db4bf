"""The delay server against a real private Redis and a real channels_redis layer."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import redis.asyncio
from channels_redis.core import RedisChannelLayer
from django.test import override_settings

from progrock.contrib.layer import RedisChannelLayer as LeanLayer
from progrock.delay import (
    DelayServer,
    DelayStore,
    Envelope,
    close_default_stores,
    has_pending,
    send_delayed,
    send_delayed_sync,
)
from progrock.delay import server as delay_server

pytestmark = pytest.mark.redis

TIMEOUT = 30.0  # generous bound for anything that should take milliseconds


def _settings(redis_url: str, **extra: Any) -> dict[str, Any]:
    return {"REDIS_URL": redis_url, "SWEEP_INTERVAL": 60.0, **extra}


@pytest.fixture
def progrock(redis_url: str) -> Iterator[str]:
    with override_settings(PROGROCK=_settings(redis_url)):
        yield redis_url


@pytest.fixture(
    params=[RedisChannelLayer, LeanLayer], ids=["channels_redis", "progrock.contrib.layer"]
)
def layer_class(request: pytest.FixtureRequest) -> type[RedisChannelLayer]:
    """The delay server delivers on channels_redis's own layer and on ProgRock's."""
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
async def layer(
    redis_url: str, layer_class: type[RedisChannelLayer]
) -> AsyncIterator[RedisChannelLayer]:
    layer = layer_class(hosts=[redis_url], capacity=5000)
    yield layer
    await layer.close_pools()


@pytest.fixture
async def store(progrock: str) -> AsyncIterator[DelayStore]:
    store = DelayStore.from_settings()
    yield store
    await store.aclose()


@contextlib.asynccontextmanager
async def serving(redis_url: str, layer: RedisChannelLayer, **kwargs: Any) -> AsyncIterator[None]:
    """Run a DelayServer (own store) until the block ends."""
    store = DelayStore.from_url(redis_url)
    server = DelayServer(store, layer, **kwargs)
    stop = asyncio.Event()
    task = asyncio.create_task(server.run(stop))
    try:
        await asyncio.wait_for(server.ready.wait(), TIMEOUT)
        yield
    finally:
        stop.set()
        await asyncio.wait_for(task, TIMEOUT)
        await store.aclose()


async def receive(layer: RedisChannelLayer, channel: str = "out") -> dict[str, Any]:
    message: dict[str, Any] = await asyncio.wait_for(layer.receive(channel), TIMEOUT)
    return message


async def wait_drained(store: DelayStore) -> None:
    """Wait until every stored message was acked (nothing pending, inflight or stored)."""
    deadline = time.monotonic() + TIMEOUT
    while (counts := await store.counts()) != {
        "pending": 0,
        "inflight": 0,
        "payload": 0,
        "keys": 0,
    }:
        if time.monotonic() > deadline:
            raise AssertionError(f"store not drained: {counts}")
        await asyncio.sleep(0.02)


async def channel_length(redis_url: str, layer: RedisChannelLayer, channel: str) -> int:
    client = redis.asyncio.Redis.from_url(redis_url, socket_timeout=5.0)
    try:
        return int(await client.zcard(layer.prefix + channel))
    finally:
        await client.aclose()


async def test_due_time_respected(
    redis_url: str, store: DelayStore, layer: RedisChannelLayer
) -> None:
    """A message is delivered no earlier than its due time, and not much later."""
    async with serving(redis_url, layer):
        sent = time.time() * 1000
        await store.schedule("out", {"type": "t", "n": 1}, 300)
        message = await receive(layer)
        received = time.time() * 1000
    assert message == {"type": "t", "n": 1}
    assert received >= sent + 300
    assert received <= sent + 300 + 2000


async def test_key_replaces_pending(
    redis_url: str, store: DelayStore, layer: RedisChannelLayer
) -> None:
    """Scheduling with an existing key replaces the pending message of that key."""
    first = await store.schedule("out", {"type": "t", "n": 1}, 100, key="poll:1")
    second = await store.schedule("out", {"type": "t", "n": 2}, 100, key="poll:1")
    assert first != second
    assert (await store.counts())["pending"] == 1
    assert await store.has_pending("poll:1")
    assert not await store.has_pending("poll:2")
    async with serving(redis_url, layer):
        assert await receive(layer) == {"type": "t", "n": 2}
        await wait_drained(store)
    assert not await store.has_pending("poll:1")
    assert await channel_length(redis_url, layer, "out") == 0


async def test_ack_keeps_rescheduled_key(
    redis_url: str, store: DelayStore, layer: RedisChannelLayer
) -> None:
    """Acking a delivered message keeps the key index of a newer message with that key."""
    await store.schedule("out", {"type": "t", "n": 1}, 0, key="poll:1")
    claim = await store.claim(time.time() * 1000, 30_000, 10)
    assert len(claim.items) == 1
    await store.schedule("out", {"type": "t", "n": 2}, 60_000, key="poll:1")
    await store.ack([(claim.items[0][0], "poll:1")])
    assert await store.has_pending("poll:1")
    assert (await store.counts())["keys"] == 1


async def test_merge(
    redis_url: str, layer: RedisChannelLayer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Due merge messages of one channel and type become one send of at most TICK_BATCH."""
    monkeypatch.setattr(delay_server, "TICK_BATCH", 2)
    with override_settings(PROGROCK=_settings(redis_url)):
        store = DelayStore.from_settings()
        ticks = [{"type": "progrock.poll", "ticks": [[f"t{i}", i]], "v": i} for i in range(5)]
        await store.schedule_many(
            [Envelope("out", tick, 0, key=f"poll:t{i}", merge=True) for i, tick in enumerate(ticks)]
            + [
                Envelope("out", {"type": "progrock.poll", "ticks": [["solo", 0]]}, 0),
                Envelope("out", {"type": "other", "ticks": [["o", 0]]}, 0, merge=True),
            ]
        )
        async with serving(redis_url, layer):
            got = [await receive(layer) for _ in range(5)]
            await wait_drained(store)
        await store.aclose()
    merged = [m for m in got if m["type"] == "progrock.poll" and m["ticks"][0][0] != "solo"]
    assert sorted(len(m["ticks"]) for m in merged) == [1, 2, 2]
    assert sorted(t[0] for m in merged for t in m["ticks"]) == [f"t{i}" for i in range(5)]
    assert all(m["v"] == int(m["ticks"][0][0][1:]) for m in merged)  # other fields: the first's
    assert {"type": "progrock.poll", "ticks": [["solo", 0]]} in got
    assert {"type": "other", "ticks": [["o", 0]]} in got


async def test_durable_across_restart(
    redis_url: str, store: DelayStore, layer: RedisChannelLayer
) -> None:
    """Messages scheduled while no server runs are delivered by the next one."""
    async with serving(redis_url, layer):
        await store.schedule("out", {"type": "t", "n": 0}, 0)
        assert await receive(layer) == {"type": "t", "n": 0}
    await store.schedule("out", {"type": "t", "n": 1}, 0)
    await store.schedule("out", {"type": "t", "n": 2}, 50)
    await store.schedule("out", {"type": "t", "n": 3}, 400)
    assert (await store.counts())["pending"] == 3
    async with serving(redis_url, layer):
        got = [(await receive(layer))["n"] for _ in range(3)]
        await wait_drained(store)
    assert got == [1, 2, 3]


async def test_two_servers_exactly_once(
    redis_url: str, store: DelayStore, layer: RedisChannelLayer
) -> None:
    """Two servers sharing a store deliver each of 2,000 messages exactly once."""
    other = RedisChannelLayer(hosts=[redis_url], capacity=5000)
    rng = random.Random(7)
    envelopes = [Envelope("out", {"type": "t", "n": i}, rng.uniform(0, 500)) for i in range(2000)]
    async with serving(redis_url, layer), serving(redis_url, other):
        for start in range(0, 2000, 250):
            await store.schedule_many(envelopes[start : start + 250])
        seen = Counter([(await receive(layer))["n"] for _ in range(2000)])
        await wait_drained(store)
    await other.close_pools()
    assert set(seen) == set(range(2000))
    assert max(seen.values()) == 1
    assert await channel_length(redis_url, layer, "out") == 0


async def test_expired_lease_reclaimed(
    redis_url: str, store: DelayStore, layer: RedisChannelLayer
) -> None:
    """A message claimed by a server that died is re-delivered once its lease expires."""
    await store.schedule("out", {"type": "t", "n": 1}, 0)
    claim = await store.claim(time.time() * 1000, 500, 10)  # the "dead" server
    lease_end = time.time() * 1000 + 500
    assert len(claim.items) == 1
    assert (await store.counts())["inflight"] == 1
    async with serving(redis_url, layer):
        assert await receive(layer) == {"type": "t", "n": 1}
        received = time.time() * 1000
        await wait_drained(store)
    assert received >= lease_end - 50


async def test_malformed_dropped(
    redis_url: str,
    store: DelayStore,
    layer: RedisChannelLayer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Malformed envelopes (channel or store) are logged with the reason and dropped."""
    caplog.set_level(logging.WARNING, logger="progrock.delay")
    client = store.client
    await client.hset(store.keys.payload, "bad1", "not json")
    await client.zadd(store.keys.pending, {"bad1": 0, "bad2": 0})  # bad2: no payload at all
    await client.hset(store.keys.payload, "bad3", '{"channel": "out", "content": [], "due": 0}')
    await client.zadd(store.keys.pending, {"bad3": 0})
    async with serving(redis_url, layer):
        for bad in (
            {"channel": 5, "content": {"type": "t"}, "delay": 0},
            {"channel": "out", "content": {"no": "type"}, "delay": 0},
            {"channel": "out", "content": {"type": "t"}, "delay": -1},
            {"channel": "out", "content": {"type": "t"}},
            {"channel": "out", "content": {"type": "t"}, "delay": 0, "merge": "yes"},
        ):
            await layer.send("asgi.delay", bad)
        await layer.send("asgi.delay", {"channel": "out", "content": {"type": "good"}, "delay": 0})
        assert await receive(layer) == {"type": "good"}
        await wait_drained(store)
    text = caplog.text
    assert "got 5" in text
    assert "got None" in text
    assert "got -1" in text
    assert "no 'delay'" in text
    assert "got 'yes'" in text
    assert "'not json'" in text
    assert "'bad2' has no payload" in text
    assert "got []" in text


async def test_channel_full_retried(
    redis_url: str,
    store: DelayStore,
    caplog: pytest.LogCaptureFixture,
    layer_class: type[RedisChannelLayer],
) -> None:
    """Messages to a full channel are retried later, never dropped."""
    caplog.set_level(logging.WARNING, logger="progrock.delay")
    layer = layer_class(hosts=[redis_url], channel_capacity={"tiny": 2})
    try:
        # The server must come back for the retried messages at their new due
        # time (50 ms), not at its re-check (60 s) or the end of the lease it
        # held on them (60 s).
        async with serving(redis_url, layer, retry_ms=50, recheck_s=60.0, lease_ms=60_000):
            began = time.monotonic()
            await store.schedule_many(
                [Envelope("tiny", {"type": "t", "n": i}, 0) for i in range(6)]
            )
            deadline = time.monotonic() + TIMEOUT
            while "is full" not in caplog.text:  # let the channel overflow first
                assert time.monotonic() < deadline, "the channel never filled up"
                await asyncio.sleep(0.02)
            got = sorted([(await receive(layer, "tiny"))["n"] for _ in range(6)])
            assert time.monotonic() - began < 20.0
            await wait_drained(store)
    finally:
        await layer.close_pools()
    assert got == list(range(6))


async def test_asgi_delay_channel(
    redis_url: str, store: DelayStore, layer: RedisChannelLayer
) -> None:
    """An envelope sent to the asgi.delay channel is delivered when due."""
    async with serving(redis_url, layer):
        sent = time.time() * 1000
        envelope = {"channel": "out", "content": {"type": "t", "x": [1]}, "delay": 150, "key": "k"}
        await layer.send("asgi.delay", envelope)
        assert await receive(layer) == {"type": "t", "x": [1]}
        assert time.time() * 1000 >= sent + 150
        await wait_drained(store)


async def test_wakes_early_for_earlier_message(
    redis_url: str, store: DelayStore, layer: RedisChannelLayer
) -> None:
    """A server sleeping until a far due time wakes up for a newly scheduled earlier one."""
    await store.schedule("out", {"type": "t", "n": "far"}, 120_000)
    async with serving(redis_url, layer, recheck_s=60.0):
        await asyncio.sleep(0.1)  # let the scheduler plan its long sleep
        started = time.monotonic()
        await store.schedule("out", {"type": "t", "n": "near"}, 50)
        assert await receive(layer) == {"type": "t", "n": "near"}
        assert time.monotonic() - started < 5.0  # without the wake-up: 60 s


async def test_cancel_drops_pending_messages_by_key(store: DelayStore) -> None:
    """cancel() removes the pending message of each key in one call, and only those."""
    await store.schedule("out", {"type": "t", "n": 1}, 60_000, key="a")
    await store.schedule("out", {"type": "t", "n": 2}, 60_000, key="b")
    await store.schedule("out", {"type": "t", "n": 3}, 60_000)
    assert await store.cancel(["a", "missing"]) == 1
    assert not await store.has_pending("a")
    assert await store.has_pending("b")
    assert await store.counts() == {"pending": 2, "inflight": 0, "payload": 2, "keys": 1}
    assert await store.cancel([]) == 0


async def test_wake_announced_only_for_a_new_earliest_due(store: DelayStore) -> None:
    """A schedule announces its due time only when it is earlier than every pending one."""
    pubsub = store.client.pubsub()
    await pubsub.subscribe(store.wake_channel)
    try:
        assert (await pubsub.get_message(timeout=TIMEOUT))["type"] == "subscribe"

        async def announced() -> float:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=TIMEOUT)
            assert message is not None, "no announcement"
            return float(message["data"])

        now = time.time() * 1000
        await store.schedule("out", {"type": "t", "n": "a"}, 60_000)  # set empty: announced
        assert await announced() >= now + 60_000
        await store.schedule("out", {"type": "t", "n": "b"}, 120_000)  # later than a: silent
        await store.schedule("out", {"type": "t", "n": "c"}, 30_000)  # earlier than a: announced
        # Announcements arrive in order: had b been announced, it would come first.
        assert await announced() < now + 60_000
    finally:
        await pubsub.aclose()  # type: ignore[no-untyped-call]


async def test_messages_put_back_are_announced_when_earliest(store: DelayStore) -> None:
    """A retry (full channel) announces its due time like a new message, so another
    server delivers it on time if the one that put it back stops first."""
    pubsub = store.client.pubsub()
    await pubsub.subscribe(store.wake_channel)
    try:
        assert (await pubsub.get_message(timeout=TIMEOUT))["type"] == "subscribe"
        now = time.time() * 1000
        await store.schedule("out", {"type": "t", "n": "due"}, 0)
        await store.schedule("out", {"type": "t", "n": "later"}, 60_000)
        claim = await store.claim(time.time() * 1000, 30_000, 10)
        assert [json.loads(raw)["content"]["n"] for _, raw in claim.items] == ["due"]
        while await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.2):
            pass  # the schedules' own announcements
        retry_at = now + 500
        assert await store.retry([(claim.items[0][0], None)], retry_at) == 1
        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=TIMEOUT)
        assert message is not None and float(message["data"]) == retry_at
        # Put back after every pending message: nobody needs waking.
        claim = await store.claim(retry_at + 1, 30_000, 10)
        assert len(claim.items) == 1
        assert await store.retry([(claim.items[0][0], None)], now + 120_000) == 1
        assert await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.5) is None
    finally:
        await pubsub.aclose()  # type: ignore[no-untyped-call]


async def test_no_empty_claim_between_deliveries(redis_url: str, layer: RedisChannelLayer) -> None:
    """After a delivery the server sleeps until the next due time instead of claiming again."""
    store = DelayStore.from_url(redis_url)
    claims: list[int] = []
    real_claim = store.claim

    async def counting_claim(now: float, lease_ms: float, limit: int) -> Any:
        claim = await real_claim(now, lease_ms, limit)
        claims.append(len(claim.items))
        return claim

    store.claim = counting_claim  # type: ignore[method-assign]
    await store.schedule_many(
        [Envelope("out", {"type": "t", "n": 1}, 200), Envelope("out", {"type": "t", "n": 2}, 700)]
    )
    server = DelayServer(store, layer, recheck_s=60.0)
    stop = asyncio.Event()
    task = asyncio.create_task(server.run(stop))
    try:
        assert (await receive(layer))["n"] == 1
        assert (await receive(layer))["n"] == 2
    finally:
        stop.set()
        await asyncio.wait_for(task, TIMEOUT)
        await store.aclose()
    first, last = claims.index(1), len(claims) - 1 - claims[::-1].index(1)
    assert claims[first : last + 1] == [1, 1], claims


async def test_sweep_trigger_once_per_interval(redis_url: str) -> None:
    """Two servers send one progrock.worker.sweep per SWEEP_INTERVAL between them."""
    with override_settings(PROGROCK=_settings(redis_url, SWEEP_INTERVAL=0.2)):
        layers = [RedisChannelLayer(hosts=[redis_url]) for _ in range(2)]
        async with serving(redis_url, layers[0]), serving(redis_url, layers[1]):
            started = time.monotonic()
            sweeps = 0
            while time.monotonic() - started < 1.0:
                try:
                    message = await asyncio.wait_for(layers[0].receive("prog-rocker"), 0.5)
                except TimeoutError:
                    continue
                assert message == {"type": "progrock.sweep"}
                sweeps += 1
            elapsed = time.monotonic() - started
        for layer in layers:
            await layer.close_pools()
    assert 2 <= sweeps <= elapsed / 0.2 + 2


async def test_helpers(progrock: str, layer: RedisChannelLayer) -> None:
    """send_delayed, send_delayed_sync and has_pending use the configured store."""
    try:
        await send_delayed("out", {"type": "t", "n": 1}, 50, key="poll:a")
        await asyncio.to_thread(send_delayed_sync, "out", {"type": "t", "n": 2}, 100, key="poll:b")
        assert await has_pending("poll:a")
        assert await has_pending("poll:b")
        async with serving(progrock, layer):
            got = sorted([(await receive(layer))["n"] for _ in range(2)])
        assert got == [1, 2]
        assert not await has_pending("poll:a")
    finally:
        await close_default_stores()


async def test_schedule_many_is_one_round_trip(store: DelayStore) -> None:
    """schedule_many of 300 messages is a single EVALSHA."""
    await store.schedule("out", {"type": "t"}, 1000)  # loads the script
    await store.client.config_resetstat()
    await store.schedule_many([Envelope("out", {"type": "t", "n": i}, 1000) for i in range(300)])
    stats = await store.client.info("commandstats")
    top_level = {k: v["calls"] for k, v in stats.items() if k.startswith("cmdstat_eval")}
    assert top_level == {"cmdstat_evalsha": 1}
    assert "cmdstat_script|load" not in stats
    assert (await store.counts())["pending"] == 301


async def test_survives_redis_restart(tmp_path: Any, caplog: pytest.LogCaptureFixture) -> None:
    """A Redis outage is logged (once) and retried; delivery resumes when Redis is back,
    which is logged too."""
    from progrock.local.redis_server import RedisServer

    caplog.set_level(logging.WARNING, logger="progrock.delay")
    server = RedisServer(data_dir=tmp_path, persist=True)
    server.start()
    try:
        with override_settings(PROGROCK=_settings(server.url)):
            layer = RedisChannelLayer(hosts=[server.url])
            store = DelayStore.from_url(server.url)
            try:
                async with serving(server.url, layer):
                    await store.schedule("out", {"type": "t", "n": 1}, 0)
                    assert await receive(layer) == {"type": "t", "n": 1}
                    await store.schedule("out", {"type": "t", "n": 2}, 300)
                    await asyncio.to_thread(server.stop)
                    deadline = time.monotonic() + TIMEOUT
                    while "cannot reach Redis" not in caplog.text:
                        assert time.monotonic() < deadline, "the outage was never logged"
                        await asyncio.sleep(0.05)
                    await asyncio.to_thread(server.start)
                    await store.schedule("out", {"type": "t", "n": 3}, 0)
                    got = sorted([(await receive(layer))["n"] for _ in range(2)])
                    await wait_drained(store)
            finally:
                await store.aclose()
                await layer.close_pools()
    finally:
        server.cleanup()
    assert got == [2, 3]
    assert caplog.text.count("cannot reach Redis") == 1, caplog.text
    assert caplog.text.count("reaches Redis again") == 1, caplog.text


class StallingLayer(RedisChannelLayer):
    """channels_redis's layer, except that a send to ``stall`` never returns (a stuck peer)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.stalled = asyncio.Event()

    async def send(self, channel: str, message: dict[str, Any]) -> None:
        if channel == "stall":
            self.stalled.set()
            await asyncio.Event().wait()
        await super().send(channel, message)


async def test_stop_cutting_a_pass_leaves_nothing_half_claimed(
    redis_url: str, store: DelayStore, caplog: pytest.LogCaptureFixture
) -> None:
    """A stop that cuts a delivery pass (its grace over) acks what the pass sent and puts
    the rest of its claim back to pending at once: nothing stays in flight on a lease."""
    caplog.set_level(logging.WARNING, logger="progrock.delay")
    layer = StallingLayer(hosts=[redis_url], capacity=5000)
    await store.schedule_many(
        [Envelope("out", {"type": "t", "n": i}, 0) for i in range(5)]
        + [Envelope("stall", {"type": "t", "n": i}, 0) for i in range(3)]
    )
    server_store = DelayStore.from_url(redis_url)
    server = DelayServer(server_store, layer, stop_grace_s=0.05, lease_ms=60_000)
    stop = asyncio.Event()
    running = asyncio.create_task(server.run(stop))
    try:
        await asyncio.wait_for(layer.stalled.wait(), TIMEOUT)
        got = sorted([(await receive(layer, "out"))["n"] for _ in range(5)])
        stop.set()
        await asyncio.wait_for(running, TIMEOUT)
        counts = await store.counts()
    finally:
        running.cancel()
        await server_store.aclose()
        await layer.close_pools()
    assert got == list(range(5))
    assert counts == {"pending": 3, "inflight": 0, "payload": 3, "keys": 0}, counts
    assert server.left_claimed == 0
    assert "5 sent, 3 claimed messages put back" in caplog.text
