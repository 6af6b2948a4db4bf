"""A lean Redis pub/sub connection for the hub: an asyncio protocol over hiredis.

The hub reads every progress update a web process pushes, so its read path is
the web process's hottest loop. redis-py's ``PubSub.get_message()`` arms an
event-loop timer (its read timeout) and takes a lock for every message, which
cost about a third of a busy web process; here bytes go straight from
``data_received`` into hiredis's parser, and the reader wakes once per batch
of replies, with no timer at all.

It speaks just what the hub needs: ``AUTH`` when the URL has a password,
``SUBSCRIBE`` and ``UNSUBSCRIBE`` (fire and forget: Redis's confirmations come
back as replies), and the pushed messages. URLs are parsed as redis-py parses
them (``redis://``, ``rediss://``, ``unix://``).
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Sequence
from typing import Any, cast

import hiredis
from redis.asyncio.connection import RedisSSLContext
from redis.connection import SSLConnection, parse_url

from progrock.tuning import PUBSUB_HIGH_WATER as HIGH_WATER

Reply = Any  # hiredis gives nested lists of bytes, ints and hiredis.ReplyError


class PubSubClosed(ConnectionError):
    """The pub/sub connection is closed or was lost."""


def encode_command(*args: str | bytes) -> bytes:
    """One command in RESP, the form Redis reads."""
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg.encode() if isinstance(arg, str) else arg
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


class _Protocol(asyncio.Protocol):
    def __init__(self) -> None:
        self.reader = hiredis.Reader()
        self.replies: list[Reply] = []
        self.waiter: asyncio.Future[None] | None = None
        self.transport: asyncio.Transport | None = None
        self.lost: BaseException | None = None
        self.paused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports quack like asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        try:
            reply = self.reader.gets()
            while reply is not False:
                self.replies.append(reply)
                reply = self.reader.gets()
        except hiredis.ProtocolError as exc:
            self._fail(PubSubClosed(f"Redis sent a malformed reply: {exc}"))
            if self.transport is not None:
                self.transport.abort()
            return
        if len(self.replies) >= HIGH_WATER and not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool | None:
        self._fail(PubSubClosed("Redis closed the pub/sub connection"))
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(PubSubClosed(f"pub/sub connection lost: {exc or 'closed'}"))

    def _fail(self, exc: BaseException) -> None:
        if self.lost is None:
            self.lost = exc
        self._wake()

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


class PubSubConnection:
    """One pub/sub connection: send (un)subscribe commands, read replies in batches."""

    def __init__(self, transport: asyncio.Transport, protocol: _Protocol) -> None:
        self._transport = transport
        self._protocol = protocol
        self._unsent: list[bytes] = []

    @classmethod
    async def open(cls, url: str, *, connect_timeout: float = 5.0) -> PubSubConnection:
        """Connect (and authenticate) to the Redis server of ``url``."""
        options = parse_url(url)  # type: ignore[no-untyped-call]
        loop = asyncio.get_running_loop()
        transport: asyncio.BaseTransport | None = None
        try:
            async with asyncio.timeout(connect_timeout):
                if options.get("path"):
                    transport, protocol = await loop.create_unix_connection(
                        _Protocol, options["path"]
                    )
                else:
                    transport, protocol = await loop.create_connection(
                        _Protocol,
                        options.get("host") or "localhost",
                        int(options.get("port") or 6379),
                        ssl=_tls_context(options),
                    )
                conn = cls(transport, protocol)
                await conn._authenticate(options.get("username"), options.get("password"))
        except BaseException as exc:
            if transport is not None:  # connected, but AUTH failed or did not answer
                transport.close()
            if isinstance(exc, TimeoutError):
                raise PubSubClosed(
                    f"could not connect to Redis within {connect_timeout} s"
                ) from None
            raise
        return conn

    async def _authenticate(self, username: str | None, password: str | None) -> None:
        """AUTH as redis-py does: ``AUTH user password`` (password may be empty),
        or ``AUTH password``; a server older than ACLs gets ``AUTH password``."""
        if not username and not password:
            return
        args = [username, password or ""] if username else [password or ""]
        self._write(encode_command("AUTH", *args))
        reply = (await self.read())[0]
        if (
            username
            and isinstance(reply, hiredis.ReplyError)
            and "wrong number of arguments" in str(reply)
        ):
            self._write(encode_command("AUTH", password or ""))
            reply = (await self.read())[0]
        if reply != b"OK":  # open() closes the connection
            raise PubSubClosed(f"Redis refused AUTH: {reply}")

    @property
    def closed(self) -> bool:
        return self._protocol.lost is not None or self._transport.is_closing()

    def subscribe(self, *channels: str) -> None:
        """Ask Redis to subscribe; each channel's confirmation arrives as a reply."""
        if channels:
            self._write(encode_command("SUBSCRIBE", *channels))

    def unsubscribe(self, *channels: str) -> None:
        if channels:
            self._write(encode_command("UNSUBSCRIBE", *channels))

    async def read(self) -> Sequence[Reply]:
        """Every reply that has arrived, waiting for at least one.

        Raises :class:`PubSubClosed` once the connection is gone and every
        reply that arrived before has been read.
        """
        protocol = self._protocol
        while not protocol.replies:
            if protocol.lost is not None:
                raise protocol.lost
            protocol.waiter = asyncio.get_running_loop().create_future()
            try:
                await protocol.waiter
            finally:
                protocol.waiter = None
        replies, protocol.replies = protocol.replies, []
        if protocol.paused:
            protocol.paused = False
            self._transport.resume_reading()
        return replies

    def close(self) -> None:
        self._protocol._fail(PubSubClosed("pub/sub connection closed"))
        self._transport.close()

    def _write(self, data: bytes) -> None:
        """Queue a command; what one event-loop turn queues goes out in one write.

        A burst of page loads subscribes (and later unsubscribes) one channel
        per socket, each from its own coroutine: one ``send`` system call per
        loop turn instead of one per command. Order is kept.
        """
        if self.closed:
            raise PubSubClosed("the pub/sub connection is closed")
        if not self._unsent:
            asyncio.get_running_loop().call_soon(self._flush)
        self._unsent.append(data)

    def _flush(self) -> None:
        data = b"".join(self._unsent)
        self._unsent.clear()
        # Closed meanwhile: the hub's reconnect subscribes every watched channel again.
        if data and not self.closed:
            self._transport.write(data)


def _tls_context(options: dict[str, Any]) -> ssl.SSLContext | None:
    """The TLS context of a ``rediss://`` URL, with its ``ssl_*`` options, as redis-py
    builds it; None for a plain connection."""
    connection_class = options.get("connection_class")
    if not (isinstance(connection_class, type) and issubclass(connection_class, SSLConnection)):
        return None
    return RedisSSLContext(
        keyfile=options.get("ssl_keyfile"),
        certfile=options.get("ssl_certfile"),
        cert_reqs=options.get("ssl_cert_reqs") or "required",  # redis-py's default
        ca_certs=options.get("ssl_ca_certs"),
        ca_data=options.get("ssl_ca_data"),
        ca_path=options.get("ssl_ca_path"),
        check_hostname=bool(options.get("ssl_check_hostname", True)),
    ).get()
