"""The load generator's lean WebSocket client (benchmarks/_wsclient.py).

Against a real ``websockets`` server in-process (echo, long and fragmented
messages, pings, both closing directions, a 403), against a hand-written raw
server for what ``websockets`` will not send (protocol violations, a wrong
accept key, control frames inside a fragmented message), and with a server byte
stream fed to the protocol cut at every position.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import struct
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from http import HTTPStatus
from typing import Any

import pytest
from benchmarks import _wsclient as wsc
from websockets.asyncio.server import ServerConnection, serve
from websockets.http11 import Request, Response

ORIGIN = "http://127.0.0.1"
TIMEOUT = 5.0

Handler = Callable[[ServerConnection], Awaitable[None]]
Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@contextlib.asynccontextmanager
async def ws_server(handler: Handler, **kwargs: Any) -> AsyncIterator[str]:
    """A ``websockets`` server on 127.0.0.1:0; yields its ws:// URL."""
    async with serve(handler, "127.0.0.1", 0, **kwargs) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        yield f"ws://127.0.0.1:{port}/path?q=1"


@contextlib.asynccontextmanager
async def raw_server(script: Script) -> AsyncIterator[str]:
    """A bare TCP server that runs ``script`` on each connection."""
    tasks: list[asyncio.Task[None]] = []

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        tasks.append(asyncio.current_task())  # type: ignore[arg-type]
        try:
            await script(reader, writer)
        finally:
            writer.close()

    server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
    try:
        yield f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}/"
        # Surface the script's own assertion errors.
        for task in tasks:
            await asyncio.wait_for(task, TIMEOUT)
    finally:
        server.close()
        for task in tasks:
            task.cancel()
        await server.wait_closed()


async def read_request(reader: asyncio.StreamReader) -> dict[str, str]:
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
    headers = {"request-line": head[0]}
    for line in head[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    return headers


async def accept(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, key: str | None = None
) -> dict[str, str]:
    """Answer the client's handshake with a 101 (and ``key`` as the accept, if given)."""
    headers = await read_request(reader)
    answer = key or wsc.accept_key(headers["sec-websocket-key"])
    writer.write(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: " + answer.encode() + b"\r\n\r\n"
    )
    return headers


def server_frame(b0: int, payload: bytes, masked: bool = False) -> bytes:
    """A frame as a server would write it (unmasked unless asked)."""
    n = len(payload)
    bit = 0x80 if masked else 0
    if n < 126:
        header = bytes((b0, bit | n))
    elif n < 65536:
        header = struct.pack("!BBH", b0, bit | 126, n)
    else:
        header = struct.pack("!BBQ", b0, bit | 127, n)
    if masked:
        return header + b"abcd" + wsc.mask(payload, b"abcd")
    return header + payload


async def read_client_frame(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """One frame from the client, which must be masked; returns (first byte, payload)."""
    b0, b1 = await reader.readexactly(2)
    assert b1 & 0x80, "client frames must be masked"
    n = b1 & 0x7F
    if n == 126:
        n = int.from_bytes(await reader.readexactly(2))
    elif n == 127:
        n = int.from_bytes(await reader.readexactly(8))
    key = await reader.readexactly(4)
    return b0, wsc.mask(await reader.readexactly(n), key)


async def answer_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Wait for the client's close frame, echo it and end TCP, as a server should."""
    b0, payload = await read_client_frame(reader)
    assert b0 == 0x88, (b0, payload)
    writer.write(server_frame(0x88, payload))


def test_mask_matches_a_per_byte_xor() -> None:
    """The big-int masking equals the RFC's byte-by-byte definition, zero bytes included."""
    key = bytes([0x00, 0xFF, 0x37, 0x80])
    for payload in (b"", b"\x00", b"\x00\x00\x00\x00\x00", bytes(range(256)) * 3, b"hello"):
        expected = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
        assert wsc.mask(payload, key) == expected
        assert wsc.mask(wsc.mask(payload, key), key) == payload


def test_accept_key_matches_rfc_example() -> None:
    """RFC 6455 section 1.3's example key and accept value."""
    assert wsc.accept_key("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


async def test_echo_of_short_16_bit_and_64_bit_length_messages() -> None:
    """What the client sends arrives intact and the echoes come back in order."""

    async def echo(ws: ServerConnection) -> None:
        async for message in ws:
            await ws.send(message)

    texts = ["hi", "", "é€😀" * 10, "x" * 125, "y" * 126, "z" * 200, "w" * 65535, "v" * 70_000]
    async with ws_server(echo) as url:
        conn = await wsc.connect(url, origin=ORIGIN, open_timeout=TIMEOUT)
        for text in texts:
            await conn.send(text)
        received = [await asyncio.wait_for(conn.recv(), TIMEOUT) for _ in texts]
        await conn.close()
    assert received == texts


async def test_server_messages_fragmented_long_and_many() -> None:
    """Fragmented, 200-byte, 70,000-byte and many small messages arrive exactly."""
    big = "".join(chr(0x41 + i % 26) for i in range(70_000))
    small = [f'{{"type":"progress","seq":{i},"progress":{i * 3.0}}}' for i in range(300)]

    async def push(ws: ServerConnection) -> None:
        await ws.send(["frag", "ment", "ed ", "é"])
        await ws.send("m" * 200)
        await ws.send(big)
        for text in small:
            await ws.send(text)
        await ws.send(["a" * 70_000, "b" * 300])
        await ws.wait_closed()

    async with ws_server(push) as url:
        conn = await wsc.connect(url, origin=ORIGIN, open_timeout=TIMEOUT)
        received = [await asyncio.wait_for(conn.recv(), TIMEOUT) for _ in range(4 + len(small))]
        await conn.close()
    assert received[:3] == ["fragmented é", "m" * 200, big]
    assert received[3:-1] == small
    assert received[-1] == "a" * 70_000 + "b" * 300


async def test_handshake_sends_the_rfc_headers() -> None:
    """Host, Upgrade, Connection, a 16-byte base64 key, version 13 and the Origin."""
    seen: list[dict[str, str]] = []

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(await accept(reader, writer))
        await answer_close(reader, writer)

    async with raw_server(script) as url:
        conn = await wsc.connect(url + "p?x=1", origin="http://example.test", open_timeout=TIMEOUT)
        await conn.close()
    [headers] = seen
    port = url.rsplit(":", 1)[1].rstrip("/")
    assert headers["request-line"] == "GET /p?x=1 HTTP/1.1"
    assert headers["host"] == f"127.0.0.1:{port}"
    assert headers["upgrade"].lower() == "websocket"
    assert headers["connection"].lower() == "upgrade"
    assert len(base64.b64decode(headers["sec-websocket-key"], validate=True)) == 16
    assert headers["sec-websocket-version"] == "13"
    assert headers["origin"] == "http://example.test"


async def test_client_answers_pings_with_their_payload() -> None:
    """The server's ping waiter resolves: the client sent a matching pong."""

    async def pinger(ws: ServerConnection) -> None:
        for payload in (b"", b"abc", bytes(range(125))):
            pong = await ws.ping(payload)
            await asyncio.wait_for(pong, TIMEOUT)
        await ws.send("pongs seen")
        await ws.wait_closed()

    async with ws_server(pinger) as url:
        conn = await wsc.connect(url, origin=ORIGIN, open_timeout=TIMEOUT)
        assert await asyncio.wait_for(conn.recv(), TIMEOUT) == "pongs seen"
        await conn.close()


async def test_ping_inside_a_fragmented_message_and_unsolicited_pong() -> None:
    """Control frames between fragments are handled; a code point split across fragments."""
    pongs: list[tuple[int, bytes]] = []

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await accept(reader, writer)
        euro = "€".encode()
        writer.write(server_frame(0x01, b"price " + euro[:1]))
        writer.write(server_frame(0x89, b"are you there"))
        writer.write(server_frame(0x8A, b"unsolicited"))
        writer.write(server_frame(0x00, euro[1:]))
        writer.write(server_frame(0x80, b" 5"))
        pongs.append(await read_client_frame(reader))
        writer.write(server_frame(0x81, b"after"))
        await answer_close(reader, writer)

    async with raw_server(script) as url:
        conn = await wsc.connect(url, origin=ORIGIN, open_timeout=TIMEOUT)
        assert await asyncio.wait_for(conn.recv(), TIMEOUT) == "price € 5"
        assert await asyncio.wait_for(conn.recv(), TIMEOUT) == "after"
        await conn.close()
    assert pongs == [(0x8A, b"are you there")]


async def test_server_close_is_answered_and_ends_recv() -> None:
    """Messages before the close are delivered, then recv raises with the server's code."""
    server_saw: list[int | None] = []

    async def closer(ws: ServerConnection) -> None:
        await ws.send("last")
        await ws.close(4001, "bye")
        server_saw.append(ws.close_code)

    async with ws_server(closer) as url:
        conn = await wsc.connect(url, origin=ORIGIN, open_timeout=TIMEOUT)
        assert await asyncio.wait_for(conn.recv(), TIMEOUT) == "last"
        with pytest.raises(wsc.ConnectionClosed) as info:
            await asyncio.wait_for(conn.recv(), TIMEOUT)
        assert (info.value.code, info.value.reason) == (4001, "bye")
        with pytest.raises(wsc.ConnectionClosed):
            await conn.send("too late")
        await asyncio.wait_for(conn.close(), TIMEOUT)
    # The server's close completed, so it received the client's echoed close frame.
    assert server_saw == [4001]


async def test_client_close_completes_the_handshake_and_is_idempotent() -> None:
    """The server sees code 1000; close returns quickly, twice; recv then raises."""
    server_saw: list[tuple[int | None, str | None]] = []

    async def waiter(ws: ServerConnection) -> None:
        await ws.wait_closed()
        server_saw.append((ws.close_code, ws.close_reason))

    async with ws_server(waiter) as url:
        conn = await wsc.connect(url, origin=ORIGIN, open_timeout=TIMEOUT)
        began = time.monotonic()
        await conn.close()
        assert time.monotonic() - began < 1.0
        await conn.close()
        with pytest.raises(wsc.ConnectionClosed):
            await conn.recv()
        with pytest.raises(wsc.ConnectionClosed):
            await conn.send("x")
        for _ in range(100):
            if server_saw:
                break
            await asyncio.sleep(0.01)
    assert server_saw == [(1000, "")]


async def test_close_gives_up_on_a_silent_server() -> None:
    """A server that never answers the close frame holds close() only close_timeout."""
    frames: list[tuple[int, bytes]] = []

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await accept(reader, writer)
        frames.append(await read_client_frame(reader))
        await reader.read()  # until the client drops TCP

    async with raw_server(script) as url:
        conn = await wsc.connect(url, origin=ORIGIN, open_timeout=TIMEOUT, close_timeout=0.3)
        began = time.monotonic()
        await conn.close()
        assert 0.25 < time.monotonic() - began < 2.0
    assert frames == [(0x88, struct.pack("!H", 1000))]


async def test_recv_raises_when_tcp_drops_without_a_close_frame() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await accept(reader, writer)
        writer.write(server_frame(0x81, b"one"))
        await writer.drain()

    async with raw_server(script) as url:
        conn = await wsc.connect(url, origin=ORIGIN, open_timeout=TIMEOUT)
        assert await asyncio.wait_for(conn.recv(), TIMEOUT) == "one"
        with pytest.raises(wsc.ConnectionClosed) as info:
            await asyncio.wait_for(conn.recv(), TIMEOUT)
        assert info.value.code == 1006
        await conn.close()


@pytest.mark.parametrize(
    ("data", "close_code", "message"),
    [
        (server_frame(0x81, b"masked", masked=True), 1002, "masked"),
        (server_frame(0xC1, b"rsv1"), 1002, "reserved"),
        (server_frame(0x83, b"op3"), 1002, "opcode 3"),
        (server_frame(0x8B, b"op11"), 1002, "opcode 11"),
        (server_frame(0x82, b"\x00\x01"), 1003, "binary"),
        (server_frame(0x80, b"cont"), 1002, "continuation"),
        (server_frame(0x09, b"fragmented ping"), 1002, "control"),
        (server_frame(0x89, b"p" * 126), 1002, "control"),
        (server_frame(0x01, b"a") + server_frame(0x81, b"b"), 1002, "inside"),
        (server_frame(0x81, b"\xff\xfe"), 1007, "UTF-8"),
        (server_frame(0x81, b"x" * 2000), 1009, "max_size"),
        (server_frame(0x01, b"x" * 600) + server_frame(0x80, b"y" * 600), 1009, "max_size"),
    ],
)
async def test_protocol_errors_fail_the_connection(
    data: bytes, close_code: int, message: str
) -> None:
    """recv raises ProtocolError and the server receives a close frame with the code."""
    frames: list[tuple[int, bytes]] = []

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await accept(reader, writer)
        writer.write(server_frame(0x81, b"fine") + data)
        frames.append(await read_client_frame(reader))
        assert await reader.read() == b""  # then the client closes TCP

    async with raw_server(script) as url:
        conn = await wsc.connect(url, origin=ORIGIN, open_timeout=TIMEOUT, max_size=1000)
        assert await asyncio.wait_for(conn.recv(), TIMEOUT) == "fine"
        with pytest.raises(wsc.ProtocolError, match=message):
            await asyncio.wait_for(conn.recv(), TIMEOUT)
        with pytest.raises(wsc.ProtocolError):
            await conn.recv()
        await asyncio.wait_for(conn.close(), TIMEOUT)
    assert frames == [(0x88, struct.pack("!H", close_code))]


async def test_http_403_makes_connect_raise() -> None:
    async def refuse(ws: Any, request: Request) -> Response:
        return ws.respond(HTTPStatus.FORBIDDEN, "go away\n")  # type: ignore[no-any-return]

    async def never(ws: ServerConnection) -> None:
        raise AssertionError("the handler must not run")

    async with ws_server(never, process_request=refuse) as url:
        with pytest.raises(wsc.HandshakeError, match="403"):
            await wsc.connect(url, origin=ORIGIN, open_timeout=TIMEOUT)


@pytest.mark.parametrize(
    "response",
    [
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n",
        b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: {accept}\r\n\r\n",
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: {accept}\r\nSec-WebSocket-Extensions: permessage-deflate\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 101 Switching",  # then EOF
        b"",  # EOF straight away
    ],
    ids=["wrong-accept", "no-upgrade", "extension", "200", "eof-in-headers", "eof"],
)
async def test_bad_handshake_responses_make_connect_raise(response: bytes) -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        headers = await read_request(reader)
        accept_value = wsc.accept_key(headers["sec-websocket-key"]).encode()
        writer.write(response.replace(b"{accept}", accept_value))
        await writer.drain()

    async with raw_server(script) as url:
        with pytest.raises(wsc.HandshakeError):
            await wsc.connect(url, origin=ORIGIN, open_timeout=TIMEOUT)


async def test_silent_server_makes_connect_time_out() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()

    async with raw_server(script) as url:
        began = time.monotonic()
        with pytest.raises(TimeoutError, match="timed out"):
            await wsc.connect(url, origin=ORIGIN, open_timeout=0.2)
        assert time.monotonic() - began < 2.0


class FakeTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written: list[bytes] = []
        self.closed = False

    def write(self, data: Any) -> None:
        self.written.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True


def feed(conn: wsc.Connection, data: bytes) -> None:
    """Deliver ``data`` as a selector transport would: recv_into get_buffer()'s view."""
    while data:
        buf = conn.get_buffer(-1)
        assert len(buf) > 0, "get_buffer() must never return an empty buffer"
        n = min(len(buf), len(data))
        buf[:n] = data[:n]
        conn.buffer_updated(n)
        data = data[n:]


async def test_any_split_of_the_byte_stream_gives_the_same_messages() -> None:
    """Handshake and frames (7/16/64-bit lengths, fragments, a ping) cut at every byte."""
    key = "dGhlIHNhbXBsZSBub25jZQ=="
    stream = (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"
        + server_frame(0x81, b"short")
        + server_frame(0x81, b"m" * 300)
        + server_frame(0x01, "😀".encode()[:3])
        + server_frame(0x89, b"ping")
        + server_frame(0x80, "😀".encode()[3:])
        + server_frame(0x81, b"L" * 70_000)
        + server_frame(0x81, b"")
    )
    expected = ["short", "m" * 300, "😀", "L" * 70_000, ""]
    big_at = stream.index(b"LLLL")
    splits = [[stream[:cut], stream[cut:]] for cut in range(big_at + 10)]
    splits += [[stream[:cut], stream[cut:]] for cut in range(len(stream) - 30, len(stream) + 1)]
    for size in (1, 7, 1000):
        splits.append([stream[i : i + size] for i in range(0, len(stream), size)])
    for pieces in splits:
        conn = wsc.Connection(key, 2**20, 1.0)
        transport = FakeTransport()
        conn.connection_made(transport)
        for piece in pieces:
            feed(conn, piece)
        assert conn._opened.done() and conn._opened.exception() is None
        received = [await conn.recv() for _ in expected]
        assert received == expected, [len(piece) for piece in pieces[:3]]
        [pong] = transport.written
        assert pong[0] == 0x8A and pong[1] == 0x80 | 4
        assert wsc.mask(pong[6:], pong[2:6]) == b"ping"
        assert conn._len == 0 and len(conn._buf) == wsc.RECV_BUFFER


async def test_bytes_after_the_close_frame_or_a_failure_are_dropped() -> None:
    """Whatever follows a close frame (or a protocol error) is ignored, however long."""
    key = "dGhlIHNhbXBsZSBub25jZQ=="
    head = (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"
    )
    for ending, error in (
        (server_frame(0x88, struct.pack("!H", 1001) + b"away"), wsc.ConnectionClosed),
        (server_frame(0xC1, b"rsv"), wsc.ProtocolError),
    ):
        conn = wsc.Connection(key, 2**20, 1.0)
        transport = FakeTransport()
        conn.connection_made(transport)
        feed(conn, head + server_frame(0x81, b"ok") + ending + server_frame(0x81, b"x" * 60_000))
        feed(conn, b"\xff" * 200_000)
        assert await conn.recv() == "ok"
        with pytest.raises(error):
            await conn.recv()
        [close] = transport.written
        assert close[0] == 0x88
        assert conn._len == 0
