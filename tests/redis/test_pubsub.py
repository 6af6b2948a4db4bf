"""The hub's lean pub/sub connection, against a real Redis (and one fake server)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import pytest
import redis.asyncio as aioredis

from progrock.web import pubsub
from progrock.web.pubsub import PubSubClosed, PubSubConnection, encode_command

pytestmark = pytest.mark.redis


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url)
    yield client
    await client.aclose()


async def read_until(conn: PubSubConnection, count: int) -> list[object]:
    replies: list[object] = []
    async with asyncio.timeout(10):
        while len(replies) < count:
            replies.extend(await conn.read())
    return replies


def test_commands_are_encoded_as_resp() -> None:
    assert encode_command("SUBSCRIBE", "a", b"\xffb") == (
        b"*3\r\n$9\r\nSUBSCRIBE\r\n$1\r\na\r\n$2\r\n\xffb\r\n"
    )
    assert encode_command("UNSUBSCRIBE", "é") == b"*2\r\n$11\r\nUNSUBSCRIBE\r\n$2\r\n\xc3\xa9\r\n"


async def test_subscribe_confirms_then_delivers_in_order(
    redis_url: str, client: aioredis.Redis
) -> None:
    conn = await PubSubConnection.open(redis_url)
    conn.subscribe("t:a", "t:b")
    assert await read_until(conn, 2) == [[b"subscribe", b"t:a", 1], [b"subscribe", b"t:b", 2]]
    for i in range(50):
        await client.publish("t:a" if i % 2 else "t:b", f"m{i}")
    replies = await read_until(conn, 50)
    assert replies == [
        [b"message", b"t:a" if i % 2 else b"t:b", f"m{i}".encode()] for i in range(50)
    ]
    conn.unsubscribe("t:a")
    assert await read_until(conn, 1) == [[b"unsubscribe", b"t:a", 1]]
    assert await client.publish("t:a", "gone") == 0
    conn.close()
    assert conn.closed


async def test_a_lost_connection_is_reported_after_what_arrived_before(
    redis_url: str, client: aioredis.Redis
) -> None:
    conn = await PubSubConnection.open(redis_url)
    conn.subscribe("t:x")
    await read_until(conn, 1)
    await client.publish("t:x", "last")
    assert await client.client_kill_filter(_type="pubsub") >= 1
    replies: list[object] = []
    with pytest.raises(PubSubClosed):
        async with asyncio.timeout(10):
            while True:
                replies.extend(await conn.read())
    assert replies == [[b"message", b"t:x", b"last"]]
    with pytest.raises(PubSubClosed):
        conn.subscribe("t:y")


async def test_reading_pauses_at_the_high_water_mark_and_loses_nothing(
    redis_url: str, client: aioredis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pubsub, "HIGH_WATER", 5)
    conn = await PubSubConnection.open(redis_url)
    conn.subscribe("t:flood")
    await read_until(conn, 1)
    async with client.pipeline(transaction=False) as pipe:
        for i in range(300):
            pipe.publish("t:flood", str(i))
        await pipe.execute()
    async with asyncio.timeout(5):  # nobody reads: the socket fills past the mark
        while not conn._protocol.paused:
            await asyncio.sleep(0.01)
    replies = await read_until(conn, 300)
    assert [int(r[2]) for r in replies] == list(range(300))  # type: ignore[index]
    assert not conn._protocol.paused
    conn.close()


async def test_authenticates_with_the_urls_user_and_password(
    redis_url: str, client: aioredis.Redis
) -> None:
    await client.execute_command("ACL", "SETUSER", "hubtest", "on", ">s3cret", "~*", "&*", "+@all")
    parts = urlsplit(redis_url)
    try:
        good = f"redis://hubtest:s3cret@{parts.netloc.split('@')[-1]}{parts.path}"
        conn = await PubSubConnection.open(good)
        conn.subscribe("t:auth")
        assert await read_until(conn, 1) == [[b"subscribe", b"t:auth", 1]]
        conn.close()
        bad = f"redis://hubtest:wrong@{parts.netloc.split('@')[-1]}{parts.path}"
        with pytest.raises(PubSubClosed, match="AUTH"):
            await PubSubConnection.open(bad)
    finally:
        await client.execute_command("ACL", "DELUSER", "hubtest")


async def test_a_malformed_reply_closes_the_connection_with_a_clear_error() -> None:
    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(100)
        writer.write(b"?this is not RESP\r\n")
        await writer.drain()
        await asyncio.sleep(1)
        writer.close()

    server = await asyncio.start_server(garbage, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        conn = await PubSubConnection.open(f"redis://127.0.0.1:{port}/0")
        conn.subscribe("t:z")
        with pytest.raises(PubSubClosed, match="malformed"):
            async with asyncio.timeout(5):
                await conn.read()
    finally:
        server.close()


async def test_connecting_to_nothing_fails_promptly() -> None:
    probe = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = probe.sockets[0].getsockname()[1]
    probe.close()
    await probe.wait_closed()
    with pytest.raises(OSError):
        await PubSubConnection.open(f"redis://127.0.0.1:{port}/0", connect_timeout=2)


def test_works_on_uvloop(redis_url: str) -> None:
    """uvicorn runs web processes on uvloop, whose transports are not asyncio's classes."""
    uvloop = pytest.importorskip("uvloop")

    async def roundtrip() -> list[object]:
        conn = await PubSubConnection.open(redis_url)
        conn.subscribe("t:uv")
        client = aioredis.Redis.from_url(redis_url)
        try:
            replies = await read_until(conn, 1)
            await client.publish("t:uv", "hello")
            return replies + await read_until(conn, 1)
        finally:
            conn.close()
            await client.aclose()

    assert uvloop.run(roundtrip()) == [[b"subscribe", b"t:uv", 1], [b"message", b"t:uv", b"hello"]]


async def test_error_replies_make_the_hub_back_off_not_storm() -> None:
    """A Redis answering every command with an error (NOAUTH, max clients): the hub's
    reconnects slow down (0.2, 0.4, 0.8 s ...) instead of retrying five times a second."""
    from progrock.web.fanout import Hub

    connections = 0

    async def refuse(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        while await reader.read(4096):
            writer.write(b"-NOAUTH Authentication required.\r\n")
        writer.close()

    class Quiet:
        async def hub_message(self, task_id: str, seq: int, flag: str, body: str) -> None:
            return None

        async def hub_resync(self, task_id: str) -> None:
            return None

    server = await asyncio.start_server(refuse, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    hub = Hub(f"redis://127.0.0.1:{port}/0", "progrock:")
    waiting = asyncio.create_task(hub.subscribe("t1", Quiet()))
    try:
        await asyncio.sleep(2.5)  # a window to count reconnects in, not a wait for an event
        assert 2 <= connections <= 6, connections
    finally:
        waiting.cancel()
        await asyncio.gather(waiting, return_exceptions=True)
        await hub.aclose()
        server.close()


def test_tls_urls_keep_their_ssl_options_and_verify_by_default() -> None:
    import ssl

    from redis.connection import parse_url

    from progrock.web.pubsub import _tls_context

    strict = _tls_context(parse_url("rediss://redis.example:6380/0"))
    assert strict is not None
    assert (strict.verify_mode, strict.check_hostname) == (ssl.CERT_REQUIRED, True)
    lax = _tls_context(
        parse_url("rediss://redis.example:6380/0?ssl_cert_reqs=none&ssl_check_hostname=false")
    )
    assert lax is not None and (lax.verify_mode, lax.check_hostname) == (ssl.CERT_NONE, False)
    assert _tls_context(parse_url("redis://redis.example:6379/0")) is None


async def test_commands_queued_in_one_loop_turn_go_out_in_one_write(
    redis_url: str, client: aioredis.Redis
) -> None:
    conn = await PubSubConnection.open(redis_url)
    writes: list[bytes] = []
    real_write = conn._transport.write

    def counting_write(data: bytes) -> None:
        writes.append(bytes(data))
        real_write(data)

    conn._transport.write = counting_write  # type: ignore[method-assign]
    for i in range(20):
        conn.subscribe(f"t:{i}")
    conn.unsubscribe("t:3")
    assert writes == []  # nothing sent before the loop turns
    replies = await read_until(conn, 21)
    assert len(writes) == 1
    assert replies[:20] == [[b"subscribe", f"t:{i}".encode(), i + 1] for i in range(20)]
    assert replies[20] == [b"unsubscribe", b"t:3", 19]  # order kept
    assert await client.publish("t:7", "x") == 1
    assert await read_until(conn, 1) == [[b"message", b"t:7", b"x"]]
    conn.close()
