"""A lean RFC 6455 WebSocket client for the load generator.

The load generator shares the machine with the stack it measures, so its CPU
per received update matters: with the ``websockets`` library a client process
spent ~27-30 µs per small text frame (50 sockets, one frame per read), with this
client ~10-13 µs, most of it the asyncio event loop itself. It does only what a
simulated browser needs, on a bare asyncio protocol (no streams):

* ``connect()`` performs the HTTP/1.1 Upgrade handshake (``ws://`` and
  ``wss://``, no extensions, no subprotocols) and checks the 101 status and
  ``Sec-WebSocket-Accept``;
* ``Connection.recv()`` returns the next text message (``str``); fragmented
  messages are joined, pings answered with a masked pong, pongs ignored;
* ``Connection.send()`` sends one masked text frame;
* ``Connection.close()`` runs the closing handshake.

Binary messages are rejected: the connection is failed with close code 1003 and
``recv()`` raises ``ProtocolError``. Other protocol violations (a masked server
frame, reserved bits, unknown opcodes, bad control frames, invalid UTF-8,
messages over ``max_size``) fail it the same way with 1002 / 1007 / 1009. Not
checked: minimal length encoding and the validity of received close codes.

Hot path: the connection is an ``asyncio.BufferedProtocol``: the transport
reads straight into one preallocated 64 KiB ``bytearray`` (a plain ``Protocol``
gets a fresh ``bytes`` from ``sock.recv(256 KiB)`` per read, which glibc serves
with mmap/mremap/munmap: several µs a read). ``buffer_updated`` parses frames
in place, decodes each text message once and appends it to a deque, waking the
single waiting ``recv()``; an incomplete tail is moved to the buffer's start
(which grows only for a frame that does not fit).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import struct
from collections import deque
from urllib.parse import urlsplit

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
MAX_HEADERS = 16384
RECV_BUFFER = 65536


class WebSocketError(Exception):
    """Base class of this module's errors."""


class HandshakeError(WebSocketError):
    """The opening handshake failed (status, headers, EOF)."""


class ProtocolError(WebSocketError):
    """The server broke RFC 6455; the connection was failed with close ``code``."""

    def __init__(self, message: str, code: int = 1002) -> None:
        super().__init__(message)
        self.code = code


class ConnectionClosed(WebSocketError):
    """The connection is closed; ``code`` is the server's close code (1006: none)."""

    def __init__(self, code: int, reason: str = "") -> None:
        super().__init__(f"connection closed: code {code}" + (f", {reason!r}" if reason else ""))
        self.code = code
        self.reason = reason


def accept_key(key: str) -> str:
    """The ``Sec-WebSocket-Accept`` a server must answer to ``key``."""
    return base64.b64encode(hashlib.sha1(key.encode() + GUID).digest()).decode()


def mask(payload: bytes | bytearray, key: bytes) -> bytes:
    """XOR ``payload`` with the 4-byte ``key`` repeated (one big-int XOR, no loop)."""
    n = len(payload)
    if not n:
        return b""
    repeated = (key * ((n + 3) >> 2))[:n]
    return (int.from_bytes(payload) ^ int.from_bytes(repeated)).to_bytes(n)


def frame(opcode: int, payload: bytes | bytearray) -> bytes:
    """One final, masked client frame."""
    n = len(payload)
    if n < 126:
        header = bytes((0x80 | opcode, 0x80 | n))
    elif n < 65536:
        header = struct.pack("!BBH", 0x80 | opcode, 0xFE, n)
    else:
        header = struct.pack("!BBQ", 0x80 | opcode, 0xFF, n)
    key = os.urandom(4)
    return header + key + mask(payload, key)


class Connection(asyncio.BufferedProtocol):
    """One client connection; made by ``connect()``. One ``recv()`` at a time."""

    def __init__(self, key: str, max_size: int, close_timeout: float) -> None:
        self._loop = asyncio.get_running_loop()
        self._key = key
        self._max_size = max_size
        self._close_timeout = close_timeout
        self._transport: asyncio.Transport | None = None
        self._opened: asyncio.Future[None] = self._loop.create_future()  # the handshake
        self._lost: asyncio.Future[None] = self._loop.create_future()
        self._handshaking = True
        self._ignore_input = False  # after the server's close frame or a failure
        self._buf = bytearray(RECV_BUFFER)  # the transport reads into this
        self._view = memoryview(self._buf)
        self._len = 0  # bytes of ``_buf`` not parsed yet (always at its start)
        self._need = 0  # ``_len`` needed before parsing can progress
        self._messages: deque[str] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._exc: WebSocketError | None = None  # raised by recv() once drained
        self._frag_opcode = 0  # opcode of the message being reassembled, or 0
        self._frags: list[bytes] = []
        self._frag_size = 0
        self._close_sent = False
        self._abort_timer: asyncio.TimerHandle | None = None
        self._writable: asyncio.Future[None] | None = None

    # asyncio.BufferedProtocol callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def get_buffer(self, sizehint: int) -> memoryview:
        """Where the transport reads to: after the unparsed bytes (never empty)."""
        return self._view[self._len :]

    def buffer_updated(self, nbytes: int) -> None:
        self._len = n = self._len + nbytes
        if n < self._need:
            return
        if self._ignore_input:
            self._len = 0
            return
        try:
            pos = self._handshake_received() if self._handshaking else self._parse(self._view, n)
        except WebSocketError as exc:
            self._fail(exc)
            return
        if pos or self._need > len(self._buf):
            self._consume(pos)

    def _consume(self, pos: int) -> None:
        """Drop the first ``pos`` bytes; make room for the next frame."""
        rest = self._len - pos
        if rest:
            self._buf[:rest] = self._buf[pos : self._len]
        self._len = rest
        size = len(self._buf)
        if self._need > size or (size > RECV_BUFFER and self._need <= RECV_BUFFER):
            buf = bytearray(max(self._need, RECV_BUFFER))
            buf[:rest] = self._buf[:rest]
            self._buf, self._view = buf, memoryview(buf)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._opened.done():
            self._opened.set_exception(HandshakeError("connection closed during the handshake"))
        self._set_exc(ConnectionClosed(1006, "connection lost without a close frame"))
        if not self._lost.done():
            self._lost.set_result(None)
        if self._abort_timer is not None:
            self._abort_timer.cancel()
        self.resume_writing()

    def pause_writing(self) -> None:
        self._writable = self._loop.create_future()

    def resume_writing(self) -> None:
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)
        self._writable = None

    # Handshake and frames

    def _handshake_received(self) -> int:
        """Check the response once complete; return the bytes it took (0: not yet)."""
        end = self._buf.find(b"\r\n\r\n", 0, self._len)
        if end < 0:
            if self._len > MAX_HEADERS:
                self._handshake_failed("response headers too long")
            return 0
        head = self._buf[:end].decode("latin-1").split("\r\n")
        status = head[0].split(" ", 2)
        if len(status) < 2 or status[0] != "HTTP/1.1" or status[1] != "101":
            self._handshake_failed(f"server rejected WebSocket: {head[0]!r}")
            return 0
        headers: dict[str, str] = {}
        for line in head[1:]:
            name, sep, value = line.partition(":")
            if not sep:
                self._handshake_failed(f"bad response header line {line!r}")
                return 0
            headers[name.strip().lower()] = value.strip()
        connection = {t.strip().lower() for t in headers.get("connection", "").split(",")}
        if headers.get("upgrade", "").lower() != "websocket":
            self._handshake_failed(f"Upgrade: {headers.get('upgrade')!r}")
        elif "upgrade" not in connection:
            self._handshake_failed(f"Connection: {headers.get('connection')!r}")
        elif headers.get("sec-websocket-accept") != accept_key(self._key):
            self._handshake_failed(f"Sec-WebSocket-Accept: {headers.get('sec-websocket-accept')!r}")
        elif "sec-websocket-extensions" in headers or "sec-websocket-protocol" in headers:
            self._handshake_failed("an extension or subprotocol that was not requested")
        else:
            self._handshaking = False
            self._opened.set_result(None)
            self._consume(end + 4)
            if self._len:
                self.buffer_updated(0)
        return 0

    def _handshake_failed(self, problem: str) -> None:
        self._ignore_input = True
        self._len = self._need = 0
        if not self._opened.done():
            self._opened.set_exception(HandshakeError(f"bad handshake response: {problem}"))

    def _parse(self, buf: memoryview, n: int) -> int:
        """Handle every complete frame in ``buf[:n]``; return where the incomplete tail starts."""
        pos = 0
        while True:
            if n - pos < 2:
                self._need = 2
                return pos
            b0, b1 = buf[pos], buf[pos + 1]
            length, start = b1, pos + 2  # b1 < 126: unmasked, 7-bit length
            if b1 >= 126:
                if b1 & 0x80:
                    raise ProtocolError("the server sent a masked frame")
                if b1 == 126:
                    if n - pos < 4:
                        self._need = 4
                        return pos
                    length, start = (buf[pos + 2] << 8) | buf[pos + 3], pos + 4
                else:
                    if n - pos < 10:
                        self._need = 10
                        return pos
                    length, start = int.from_bytes(buf[pos + 2 : pos + 10]), pos + 10
                if length > self._max_size:
                    raise ProtocolError(f"frame of {length} bytes (over max_size)", 1009)
            end = start + length
            if end > n:
                self._need = end - pos
                return pos
            if b0 == 0x81 and not self._frag_opcode:  # a whole text message: the hot path
                try:
                    text = buf[start:end].tobytes().decode()
                except UnicodeDecodeError:
                    raise ProtocolError("invalid UTF-8 in a text message", 1007) from None
                self._messages.append(text)
                waiter = self._waiter
                if waiter is not None and not waiter.done():
                    waiter.set_result(None)
            else:
                self._frame(b0, buf[start:end].tobytes())
                if self._ignore_input:  # the server's close frame
                    return n
            pos = end

    def _frame(self, b0: int, payload: bytes) -> None:
        if b0 & 0x70:
            raise ProtocolError("reserved bits set (no extension was negotiated)")
        fin, opcode = b0 & 0x80, b0 & 0x0F
        if opcode >= 8:
            if not fin or len(payload) > 125:
                raise ProtocolError("fragmented or oversized control frame")
            if opcode == 9:  # ping
                if not self._close_sent and self._transport is not None:
                    self._transport.write(frame(0xA, payload))
            elif opcode == 8:
                self._closing(payload)
            elif opcode != 0xA:
                raise ProtocolError(f"unknown opcode {opcode}")
            return
        if opcode == 0:
            if not self._frag_opcode:
                raise ProtocolError("continuation frame without a message to continue")
        elif opcode in (1, 2):
            if self._frag_opcode:
                raise ProtocolError("new message inside a fragmented one")
            if opcode == 2:
                raise ProtocolError("binary message (this client takes text only)", 1003)
            self._frag_opcode = opcode
        else:
            raise ProtocolError(f"unknown opcode {opcode}")
        self._frags.append(payload)
        self._frag_size += len(payload)
        if self._frag_size > self._max_size:
            raise ProtocolError(f"message over {self._max_size} bytes (max_size)", 1009)
        if fin:
            data, self._frags, self._frag_size, self._frag_opcode = b"".join(self._frags), [], 0, 0
            try:
                self._messages.append(data.decode())
            except UnicodeDecodeError:
                raise ProtocolError("invalid UTF-8 in a text message", 1007) from None
            self._wake()

    def _closing(self, payload: bytes) -> None:
        """The server's close frame: answer it, then end the stream of messages."""
        if len(payload) == 1:
            raise ProtocolError("close frame with a 1-byte payload")
        code = int.from_bytes(payload[:2]) if payload else 1005
        try:
            reason = payload[2:].decode()
        except UnicodeDecodeError:
            raise ProtocolError("invalid UTF-8 in a close reason", 1007) from None
        self._ignore_input = True
        self._need = 0  # so that buffer_updated drops what follows
        if not self._close_sent:
            self._send_close(b"" if code == 1005 else payload[:2])
        self._set_exc(ConnectionClosed(code, reason))
        # The server closes TCP first (RFC 6455 7.1.1); don't wait for it forever.
        self._abort_timer = self._loop.call_later(self._close_timeout, self._abort)

    def _send_close(self, body: bytes) -> None:
        self._close_sent = True
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(frame(0x8, body))

    def _fail(self, exc: WebSocketError) -> None:
        """Fail the connection: send a close frame with the error's code, close TCP."""
        if not self._close_sent:
            self._send_close(struct.pack("!H", getattr(exc, "code", 1002)))
        self._ignore_input = True
        self._need = 0
        self._set_exc(exc)
        if self._transport is not None:
            self._transport.close()

    def _set_exc(self, exc: WebSocketError) -> None:
        if self._exc is None:
            self._exc = exc
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _abort(self) -> None:
        if self._transport is not None and not self._lost.done():
            self._transport.abort()

    # Public API

    async def recv(self) -> str:
        """The next text message; raises ``ConnectionClosed``/``ProtocolError`` at the end."""
        messages = self._messages
        if not messages:
            if self._exc is not None:
                raise self._exc
            if self._waiter is not None:
                raise RuntimeError("recv() is already being awaited on this connection")
            self._waiter = self._loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
            if not messages:
                assert self._exc is not None
                raise self._exc
        return messages.popleft()

    async def send(self, text: str) -> None:
        """Send ``text`` as one masked text frame (waits while the write buffer is full)."""
        if self._close_sent or self._transport is None or self._transport.is_closing():
            raise self._exc or ConnectionClosed(1006, "the connection is closing")
        self._transport.write(frame(0x1, text.encode()))
        if self._writable is not None:
            await asyncio.shield(self._writable)

    async def close(self, code: int = 1000) -> None:
        """Send a close frame, wait up to ``close_timeout`` for the server to end TCP."""
        if not self._close_sent:
            self._send_close(struct.pack("!H", code))
        self._set_exc(ConnectionClosed(code, "closed by the client"))
        try:
            if not self._lost.done():
                await asyncio.wait((self._lost,), timeout=self._close_timeout)
        finally:
            self._abort()


async def connect(
    url: str,
    *,
    origin: str,
    open_timeout: float,
    max_size: int = 2**24,
    close_timeout: float = 2.0,
    cookie: str | None = None,
) -> Connection:
    """Open a WebSocket to ``url`` (``ws://`` or ``wss://``) sending ``Origin: origin``
    (and ``Cookie: cookie``, if given)."""
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise ValueError(f"expected a ws:// or wss:// URL, got {url!r}")
    secure = parts.scheme == "wss"
    port = parts.port or (443 if secure else 80)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    key = base64.b64encode(os.urandom(16)).decode()
    request = (
        f"GET {path} HTTP/1.1\r\nHost: {parts.netloc.rpartition('@')[2]}\r\n"
        "Upgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nOrigin: {origin}\r\n"
        + (f"Cookie: {cookie}\r\n" if cookie else "")
        + "\r\n"
    )
    loop = asyncio.get_running_loop()
    transport: asyncio.Transport | None = None
    try:
        async with asyncio.timeout(open_timeout):
            transport, conn = await loop.create_connection(
                lambda: Connection(key, max_size, close_timeout),
                parts.hostname,
                port,
                ssl=secure or None,
            )
            transport.write(request.encode("latin-1"))
            await conn._opened
    except TimeoutError:
        if transport is not None:
            transport.abort()
        raise TimeoutError(
            f"WebSocket handshake with {url} timed out after {open_timeout}s"
        ) from None
    except BaseException:
        if transport is not None:
            transport.abort()
        raise
    return conn
