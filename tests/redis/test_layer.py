"""progrock.contrib.layer.RedisChannelLayer on a real Redis, beside channels_redis's own layer."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import channels_redis
import pytest
import redis.asyncio as aioredis
from channels.exceptions import ChannelFull
from channels_redis.core import RedisChannelLayer as ChannelsRedisLayer

from progrock.contrib import layer as contrib_layer
from progrock.contrib.layer import RedisChannelLayer

pytestmark = pytest.mark.redis


@pytest.fixture
async def layer(redis_url: str) -> AsyncIterator[RedisChannelLayer]:
    layer = RedisChannelLayer(hosts=[redis_url], capacity=50, expiry=60)
    yield layer
    await layer.flush()


@pytest.fixture
async def plain(redis_url: str) -> AsyncIterator[ChannelsRedisLayer]:
    layer = ChannelsRedisLayer(hosts=[redis_url], capacity=50, expiry=60)
    yield layer
    await layer.flush()


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url)
    yield client
    await client.aclose()


async def commands(client: aioredis.Redis) -> dict[str, int]:
    stats = await client.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()}


async def test_a_message_sent_is_received_in_order(layer: RedisChannelLayer) -> None:
    """Messages on one general channel come back in the order they were sent."""
    for i in range(5):
        await layer.send("prog-rocker", {"type": "progrock.poll", "n": i, "ticks": [["a", 1.5]]})
    got = [await layer.receive("prog-rocker") for _ in range(5)]
    assert got == [{"type": "progrock.poll", "n": i, "ticks": [["a", 1.5]]} for i in range(5)]


async def test_send_and_receive_take_one_redis_call_each(
    layer: RedisChannelLayer, client: aioredis.Redis
) -> None:
    """In the steady state a send is one EVALSHA and a receive one BZPOPMIN."""
    assert layer.lean  # the channels_redis of constraints.txt: the guard let it be
    await layer.send("warm", {"type": "x"})  # loads the script
    await layer.receive("warm")  # restores the channel's backup once
    await layer.send("prog-rocker", {"type": "x"})
    await layer.receive("prog-rocker")  # first receive on this channel: one restore
    before = await commands(client)
    await layer.send("prog-rocker", {"type": "x"})
    assert await layer.receive("prog-rocker") == {"type": "x"}
    after = await commands(client)
    issued = {name: after[name] - before.get(name, 0) for name in after}
    issued["info"] -= 1  # the INFO call that took `before`
    # What the client sent (commands run inside the script are counted too).
    assert issued["evalsha"] == 1
    assert issued["bzpopmin"] == 1
    assert "eval" not in issued or issued["eval"] == 0
    assert issued.get("zadd") == 1 and issued.get("expire") == 1  # inside the script


async def test_process_specific_channels_are_routed(layer: RedisChannelLayer) -> None:
    """A message sent to a process-specific channel reaches that channel only."""
    one = await layer.new_channel()
    two = await layer.new_channel()
    await layer.send(two, {"type": "to.two"})
    await layer.send(one, {"type": "to.one"})
    assert await layer.receive(one) == {"type": "to.one"}
    assert await layer.receive(two) == {"type": "to.two"}


async def test_a_full_channel_refuses_and_keeps_what_it_holds(redis_url: str) -> None:
    """At capacity (per channel or default) send raises ChannelFull and loses nothing."""
    layer = RedisChannelLayer(hosts=[redis_url], capacity=3, channel_capacity={"small": 2})
    try:
        await layer.send("small", {"type": "a"})
        await layer.send("small", {"type": "b"})
        with pytest.raises(ChannelFull):
            await layer.send("small", {"type": "c"})
        for i in range(3):
            await layer.send("other", {"type": "x", "i": i})
        with pytest.raises(ChannelFull):
            await layer.send("other", {"type": "x", "i": 3})
        assert await layer.receive("small") == {"type": "a"}
        assert await layer.receive("small") == {"type": "b"}
        await layer.send("small", {"type": "d"})  # room again
        assert await layer.receive("small") == {"type": "d"}
    finally:
        await layer.flush()


async def test_sending_drops_expired_messages_and_sets_the_keys_expiry(
    layer: RedisChannelLayer, client: aioredis.Redis
) -> None:
    """A send removes expired messages and sets the channel key's expiry, as channels_redis does."""
    key = layer.prefix + "prog-rocker"
    await client.zadd(key, {b"stale message": 1.0})  # far older than the expiry
    await layer.send("prog-rocker", {"type": "fresh"})
    assert await client.zrange(key, 0, -1, withscores=False) != [b"stale message"]
    assert await client.zcard(key) == 1
    assert 0 < await client.ttl(key) <= 60
    assert await layer.receive("prog-rocker") == {"type": "fresh"}


async def test_it_reads_and_writes_what_channels_redis_does(
    layer: RedisChannelLayer, plain: ChannelsRedisLayer
) -> None:
    """Processes on either layer can share a Redis: same keys, same encoding."""
    await plain.send("prog-rocker", {"type": "from.plain", "n": 1})
    assert await layer.receive("prog-rocker") == {"type": "from.plain", "n": 1}
    await layer.send("asgi.delay", {"type": "from.lean", "n": 2})
    assert await plain.receive("asgi.delay") == {"type": "from.lean", "n": 2}
    specific = await plain.new_channel()
    await layer.send(specific, {"type": "to.plain"})
    assert await plain.receive(specific) == {"type": "to.plain"}


async def test_the_first_receive_restores_a_backup_left_by_channels_redis(
    layer: RedisChannelLayer, plain: ChannelsRedisLayer, client: aioredis.Redis
) -> None:
    """A message channels_redis had moved to its in-flight backup (a consumer
    cancelled mid-receive) is received, before newer ones."""
    key = layer.prefix + "prog-rocker"
    await plain.send("prog-rocker", {"type": "left", "n": 1})
    await plain.send("prog-rocker", {"type": "newer", "n": 2})
    # What channels_redis's receive does before the consumer gets the message.
    popped = await client.bzpopmin(key, timeout=1)
    assert popped is not None
    await client.zadd(key + "$inflight", {popped[1]: popped[2]})
    assert await layer.receive("prog-rocker") == {"type": "left", "n": 1}
    assert await layer.receive("prog-rocker") == {"type": "newer", "n": 2}
    assert await client.exists(key + "$inflight") == 0


async def test_it_sends_after_redis_forgot_its_script(
    layer: RedisChannelLayer, client: aioredis.Redis
) -> None:
    """After SCRIPT FLUSH the next send loads the script again and succeeds."""
    await layer.send("prog-rocker", {"type": "a"})
    await client.script_flush()
    await layer.send("prog-rocker", {"type": "b"})
    assert [await layer.receive("prog-rocker") for _ in range(2)] == [{"type": "a"}, {"type": "b"}]


async def test_consumers_of_one_channel_share_its_messages_without_duplicates(
    redis_url: str,
) -> None:
    """Two consumers (as two workers): every message is received, and only once."""
    sender = RedisChannelLayer(hosts=[redis_url], capacity=1000)
    consumers = [RedisChannelLayer(hosts=[redis_url], capacity=1000) for _ in range(2)]
    total = 300
    received: list[list[int]] = [[], []]

    async def consume(i: int) -> None:
        while True:
            message = await consumers[i].receive("prog-rocker")
            if message["n"] < 0:
                return
            received[i].append(message["n"])

    try:
        running = [asyncio.create_task(consume(i)) for i in range(2)]
        for n in range(total):
            await sender.send("prog-rocker", {"type": "x", "n": n})
        for _ in range(2):
            await sender.send("prog-rocker", {"type": "x", "n": -1})
        await asyncio.wait_for(asyncio.gather(*running), timeout=30)
        everything = received[0] + received[1]
        assert sorted(everything) == list(range(total))
        assert received[0] and received[1]  # both took part
    finally:
        for one in [sender, *consumers]:
            await one.flush()


async def test_groups_work_as_in_channels_redis(layer: RedisChannelLayer) -> None:
    """group_add and group_send (channels_redis's own) reach every member."""
    one = await layer.new_channel()
    two = await layer.new_channel()
    await layer.group_add("watchers", one)
    await layer.group_add("watchers", two)
    await layer.group_send("watchers", {"type": "hello"})
    got: list[dict[str, Any]] = [await layer.receive(one), await layer.receive(two)]
    assert got == [{"type": "hello"}, {"type": "hello"}]


async def test_a_receive_outlives_its_blocking_timeout(redis_url: str) -> None:
    """A receive waits across BZPOPMIN timeouts (here 1 s) until a message comes."""
    layer = RedisChannelLayer(hosts=[redis_url])
    layer.brpop_timeout = 1
    try:
        waiting = asyncio.create_task(layer.receive("prog-rocker"))
        done, _ = await asyncio.wait({waiting}, timeout=1.5)  # one timeout has passed
        assert not done
        await layer.send("prog-rocker", {"type": "late"})
        assert await asyncio.wait_for(waiting, timeout=5) == {"type": "late"}
    finally:
        await layer.flush()


async def test_an_idle_receive_takes_back_a_backup_left_meanwhile(
    redis_url: str, client: aioredis.Redis
) -> None:
    """A channels_redis consumer cancelled mid-receive after this layer's first
    receive (a rolling upgrade): its backed-up message is received all the same."""
    layer = RedisChannelLayer(hosts=[redis_url])
    layer.brpop_timeout = 1
    plain = ChannelsRedisLayer(hosts=[redis_url])
    key = layer.prefix + "prog-rocker"
    try:
        await layer.send("prog-rocker", {"type": "first"})
        assert await layer.receive("prog-rocker") == {"type": "first"}  # restored once here
        waiting = asyncio.create_task(layer.receive("prog-rocker"))
        await asyncio.sleep(0.2)  # blocked in BZPOPMIN
        message = plain.serialize({"type": "stranded"})
        await client.zadd(key + "$inflight", {message: 1.0})  # as channels_redis leaves it
        assert await asyncio.wait_for(waiting, timeout=5) == {"type": "stranded"}
        assert await client.exists(key + "$inflight") == 0
    finally:
        await layer.flush()
        await plain.flush()


@pytest.mark.parametrize("specific", [False, True])
async def test_a_cancelled_receive_leaves_the_next_message_for_the_next_receive(
    layer: RedisChannelLayer, specific: bool
) -> None:
    """A receive cancelled while blocked takes nothing: the next receive gets the next message."""
    channel = await layer.new_channel() if specific else "prog-rocker"
    blocked = asyncio.create_task(layer.receive(channel))
    await asyncio.sleep(0.2)  # blocked in BZPOPMIN
    blocked.cancel()
    with pytest.raises(asyncio.CancelledError):
        await blocked
    await layer.send(channel, {"type": "after"})
    assert await asyncio.wait_for(layer.receive(channel), timeout=5) == {"type": "after"}


async def test_with_two_hosts_every_channel_reaches_its_receiver(redis_url: str) -> None:
    """Two hosts (two databases of the test Redis): general channels go round
    both, and a process-specific channel goes to the host its receiver reads."""
    base = redis_url.rsplit("/", 1)[0]
    hosts = [f"{base}/1", f"{base}/2"]
    layer = RedisChannelLayer(hosts=hosts, capacity=100)
    cleanup = [aioredis.Redis.from_url(h) for h in hosts]
    try:
        for c in cleanup:
            await c.flushdb()
        names = [await layer.new_channel() for _ in range(40)]
        for i, name in enumerate(names):
            await layer.send(name, {"type": "x", "i": i})
        got = [await asyncio.wait_for(layer.receive(name), timeout=5) for name in names]
        assert got == [{"type": "x", "i": i} for i in range(len(names))]
        for i in range(6):
            await layer.send("prog-rocker", {"type": "g", "i": i})
        sizes = [await c.zcard(layer.prefix + "prog-rocker") for c in cleanup]
        assert sizes == [3, 3]  # round robin over the hosts
        received = sorted(
            [(await layer.receive("prog-rocker"))["i"] for _ in range(6)]  # type: ignore[index]
        )
        assert received == list(range(6))
    finally:
        await layer.flush()
        for c in cleanup:
            await c.flushdb()
            await c.aclose()


async def test_a_capacity_pattern_applies_to_process_specific_channels(redis_url: str) -> None:
    """A channel_capacity pattern limits process-specific channels too."""
    layer = RedisChannelLayer(hosts=[redis_url], capacity=100, channel_capacity={"specific*": 1})
    try:
        name = await layer.new_channel()
        await layer.send(name, {"type": "a"})
        with pytest.raises(ChannelFull):
            await layer.send(name, {"type": "b"})
        assert await layer.receive(name) == {"type": "a"}
    finally:
        await layer.flush()


async def test_with_two_hosts_each_hosts_backup_is_restored_on_its_first_receive(
    redis_url: str,
) -> None:
    """With two hosts, each host's leftover backup is restored at once, not after a timeout."""
    base = redis_url.rsplit("/", 1)[0]
    hosts = [f"{base}/3", f"{base}/4"]
    layer = RedisChannelLayer(hosts=hosts)
    layer.brpop_timeout = 5  # the restore must not wait for an idle timeout
    plain = ChannelsRedisLayer(hosts=hosts)
    clients = [aioredis.Redis.from_url(h) for h in hosts]
    key = layer.prefix + "prog-rocker"
    try:
        for i, c in enumerate(clients):
            await c.flushdb()
            await c.zadd(key + "$inflight", {plain.serialize({"type": "left", "host": i}): 1.0})
        # General receives take the hosts in turn: one from each backup, at once.
        got = [await asyncio.wait_for(layer.receive("prog-rocker"), timeout=2) for _ in range(2)]
        assert sorted(m["host"] for m in got) == [0, 1]
    finally:
        await layer.flush()
        await plain.flush()
        for c in clients:
            await c.flushdb()
            await c.aclose()


@pytest.fixture
def unwarned(monkeypatch: pytest.MonkeyPatch) -> None:
    """The layer's guard has not warned yet in this process."""
    monkeypatch.setattr(contrib_layer.GUARD, "warned", False)


async def test_on_an_untested_channels_redis_it_is_channels_redis_own_layer(
    redis_url: str, client: aioredis.Redis, monkeypatch: pytest.MonkeyPatch, unwarned: None
) -> None:
    """Outside the tested range: one warning for every instance, and send and receive are
    channels_redis's own (its four-command send, its backup-queue receive), not the scripts."""
    monkeypatch.setattr(channels_redis, "__version__", "4.4.0")
    with pytest.warns(RuntimeWarning) as caught:
        layer = RedisChannelLayer(hosts=[redis_url], capacity=50)
        other = RedisChannelLayer(hosts=[redis_url])
    assert len(caught) == 1
    text = str(caught[0].message)
    assert "channels_redis '4.4.0'" in text and ">=4.3.0, <4.4" in text
    assert "behaves exactly as channels_redis.core.RedisChannelLayer" in text
    assert not layer.lean and not other.lean
    try:
        before = await commands(client)
        await layer.send("prog-rocker", {"type": "stock"})
        assert await layer.receive("prog-rocker") == {"type": "stock"}
        after = await commands(client)
        issued = {name: after[name] - before.get(name, 0) for name in after}
        assert issued.get("zcount") == 1 and issued.get("eval") == 1  # channels_redis's steps
        assert issued.get("evalsha", 0) == 0  # none of this layer's scripts
    finally:
        await layer.flush()


def test_a_missing_channels_redis_member_falls_back_without_half_measures(
    redis_url: str, monkeypatch: pytest.MonkeyPatch, unwarned: None
) -> None:
    """On the tested version, a private member gone: the instance is channels_redis's own."""
    monkeypatch.delattr(ChannelsRedisLayer, "_backup_channel_name")  # as if renamed upstream
    with pytest.warns(
        RuntimeWarning,
        match=r"has no channels_redis\.core\.RedisChannelLayer\._backup_channel_name",
    ):
        layer = RedisChannelLayer(hosts=[redis_url])
    assert layer.lean is False


async def test_bad_messages_and_names_are_refused_naming_what_is_wrong(
    layer: RedisChannelLayer,
) -> None:
    """Not a dict, the reserved key, a bad name: exceptions saying what was expected and got."""
    with pytest.raises(TypeError, match=r"message must be a dict, got list: \['a'\]"):
        await layer.send("prog-rocker", ["a"])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="must not contain the reserved key '__asgi_channel__'"):
        await layer.send("prog-rocker", {"type": "x", "__asgi_channel__": "y"})
    with pytest.raises(TypeError, match=r"Channel name must be .* Got 'no spaces'\."):
        await layer.send("no spaces", {"type": "x"})
    with pytest.raises(TypeError, match=r"must end at the !.* Got 'specific\.a!b'\."):
        await layer.receive_single("specific.a!b")
