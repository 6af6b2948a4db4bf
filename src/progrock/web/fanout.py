"""The web process's side of the fan-out: one Redis pub/sub connection per process.

Workers publish each task message once, on the task's channel. Every web
process subscribes to the channels of the tasks its sockets watch (and only
those) and hands each message to those sockets directly, so an update costs
one PUBLISH however many sockets watch it, and no channel-layer round trip per
watcher. If the pub/sub connection drops, the hub reconnects, re-subscribes
and asks every listener to resynchronise from a snapshot, so no socket misses
a task's end.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from collections.abc import Awaitable
from typing import Protocol

from redis.exceptions import ConnectionError as RedisConnectionError

from progrock.conf import progrock_settings
from progrock.protocol import parse_fanout
from progrock.state.live import fanout_channel
from progrock.web.pubsub import PubSubConnection, Reply

logger = logging.getLogger("progrock.hub")


class Listener(Protocol):
    async def hub_message(self, task_id: str, seq: int, flag: str, body: str) -> None: ...

    async def hub_resync(self, task_id: str) -> None: ...


class Hub:
    """Subscribes this process to task channels on behalf of its sockets."""

    def __init__(self, url: str, prefix: str) -> None:
        self.url = url
        self.prefix = prefix
        self._listeners: dict[str, set[Listener]] = {}
        # channel -> resolved once Redis confirmed the SUBSCRIBE on the current connection
        self._confirmed: dict[str, asyncio.Future[None]] = {}
        self._conn: PubSubConnection | None = None
        self._reader: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self._resync: set[str] = set()  # channels to resynchronise once confirmed

    # -- public API ---------------------------------------------------------

    async def subscribe(self, task_id: str, listener: Listener) -> None:
        """Deliver the task's messages to ``listener``; returns once Redis confirmed.

        Every caller waits for the confirmation, not only the first one: a
        snapshot read before it could miss a message published meanwhile.
        On failure the listener is not left registered and the error is raised.
        """
        listeners = self._listeners.setdefault(task_id, set())
        listeners.add(listener)
        try:
            await self._ensure_running()
            await self._wait_confirmed(task_id)
        except BaseException:
            if self._drop(task_id, listener):
                await self._unsubscribe_channel(task_id)
            raise

    async def unsubscribe(self, task_id: str, listener: Listener) -> None:
        if self._drop(task_id, listener):
            await self._unsubscribe_channel(task_id)

    async def _unsubscribe_channel(self, task_id: str) -> None:
        channel = fanout_channel(task_id, self.prefix)
        async with self._lock:  # never while a reconnect swaps the connection
            if task_id in self._listeners:  # someone subscribed again meanwhile
                return
            self._confirmed.pop(channel, None)
            self._resync.discard(channel)
            if self._conn is not None:
                with contextlib.suppress(OSError):
                    self._conn.unsubscribe(channel)

    def watched(self) -> int:
        return len(self._listeners)

    async def aclose(self) -> None:
        """Stop reading and close the connection (listeners get nothing more)."""
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
            self._reader = None
        self._close_connection()
        self._listeners.clear()
        self._resync.clear()

    # -- internals ----------------------------------------------------------

    def _drop(self, task_id: str, listener: Listener) -> bool:
        """Forget a listener; True if it was the task's last one."""
        listeners = self._listeners.get(task_id)
        if not listeners:
            return False
        listeners.discard(listener)
        if listeners:
            return False
        del self._listeners[task_id]
        return True

    async def _ensure_running(self) -> None:
        restarted = False
        async with self._lock:
            if self._reader is None or self._reader.done():
                restarted = self._reader is not None
                await self._connect()
                self._reader = asyncio.create_task(self._read_loop(), name="progrock-hub")
        if restarted:  # the old reader died: its listeners may have missed messages
            self._resync_when_confirmed()

    async def _connect(self) -> None:
        """(Re)open the pub/sub connection and subscribe every watched task.

        Call with ``_lock`` held. Futures someone still waits on are kept, so
        they resolve with the new connection's confirmations.
        """
        self._close_connection()
        conn = await PubSubConnection.open(self.url, connect_timeout=5)
        loop = asyncio.get_running_loop()
        old = self._confirmed
        confirmed: dict[str, asyncio.Future[None]] = {}
        for task_id in self._listeners:
            channel = fanout_channel(task_id, self.prefix)
            future = old.get(channel)
            if future is None or future.done():
                future = loop.create_future()
            confirmed[channel] = future
        # A channel nobody publishes on keeps the connection subscribed when idle.
        try:
            conn.subscribe(f"{self.prefix}hub", *confirmed)
        except OSError:
            conn.close()
            raise
        self._conn, self._confirmed = conn, confirmed

    def _close_connection(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    async def _wait_confirmed(self, task_id: str) -> None:
        channel = fanout_channel(task_id, self.prefix)
        async with self._lock:  # never while a reconnect swaps the connection
            future = self._confirmed.get(channel)
            if future is None:
                if self._conn is None:
                    raise RedisConnectionError("the fan-out connection is being re-established")
                future = asyncio.get_running_loop().create_future()
                self._confirmed[channel] = future
                try:
                    self._conn.subscribe(channel)
                except OSError as exc:
                    # The connection just died: the reader's reconnect subscribes
                    # every watched channel again and resolves this future.
                    logger.info("subscribe to %s waits for the reconnect (%s)", channel, exc)
        try:
            await asyncio.wait_for(asyncio.shield(future), timeout=10)
        except TimeoutError:
            if self._confirmed.get(channel) is future and not future.done():
                self._confirmed.pop(channel, None)  # the next subscriber asks again
            raise RedisConnectionError(
                f"Redis did not confirm the subscription to {channel} within 10 s"
            ) from None

    async def _read_loop(self) -> None:
        attempt = 0
        while True:
            try:
                conn = self._conn
                if conn is None:
                    raise ConnectionError("no pub/sub connection")
                replies = await conn.read()
                for reply in replies:
                    await self._dispatch(reply)
                # Only now: an error reply (NOAUTH, max clients) raises in
                # _dispatch, and the reconnects that follow must back off.
                attempt = 0
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                attempt += 1
                logger.warning("fan-out connection lost (%s); reconnecting", exc)
                await self._reconnect(attempt)

    async def _dispatch(self, reply: Reply) -> None:
        if not isinstance(reply, list) or len(reply) != 3:
            # An error reply (e.g. NOAUTH): this connection is of no use.
            raise ConnectionError(f"unexpected reply on the fan-out connection: {reply!r:.200}")
        kind, raw_channel, data = reply
        channel = raw_channel.decode()
        task_id = channel[len(self.prefix) + 2 :]  # fanout_channel(): "<prefix>u:<task_id>"
        if kind == b"subscribe":
            future = self._confirmed.get(channel)
            if future is not None and not future.done():
                future.set_result(None)
            if channel in self._resync:
                self._resync.discard(channel)
                for listener in list(self._listeners.get(task_id, ())):
                    await _safely(listener.hub_resync(task_id))
            return
        if kind != b"message":
            return
        listeners = self._listeners.get(task_id)
        if not listeners:
            return
        try:
            seq, flag, body = parse_fanout(data.decode())
        except ValueError:
            logger.error("dropping malformed fan-out message on %s: %.200r", channel, data)
            return
        for listener in list(listeners):
            await _safely(listener.hub_message(task_id, seq, flag, body))

    async def _reconnect(self, attempt: int) -> None:
        """Retry until connected again; every listener is then resynchronised as
        Redis confirms its task's channel on the new connection. Logs the first
        failed attempt and the success, not every retry of a long outage."""
        failures = 0
        while True:
            await asyncio.sleep(min(5.0, 0.1 * 2 ** min(attempt, 6)))
            try:
                async with self._lock:
                    await self._connect()
            except Exception as exc:
                attempt += 1
                failures += 1
                if failures == 1:
                    logger.warning("fan-out reconnect failed (%s); retrying quietly", exc)
                continue
            break
        logger.warning(
            "fan-out reconnected after %d failed attempts; resynchronising %d tasks",
            failures,
            len(self._listeners),
        )
        self._resync_when_confirmed()

    def _resync_when_confirmed(self) -> None:
        """Resynchronise each watched task's listeners once Redis confirms its
        channel on the new connection: a snapshot read any earlier could miss a
        message published before the subscription took effect."""
        self._resync = {fanout_channel(task_id, self.prefix) for task_id in self._listeners}


async def _safely(call: Awaitable[None]) -> None:
    try:
        await call
    except asyncio.CancelledError:
        raise
    except Exception:
        logger.exception("a hub listener failed")


_hubs: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Hub] = weakref.WeakKeyDictionary()


def get_hub() -> Hub:
    """The hub of the running event loop (one per web process)."""
    loop = asyncio.get_running_loop()
    hub = _hubs.get(loop)
    if hub is None:
        hub = Hub(progrock_settings.REDIS_URL, progrock_settings.KEY_PREFIX)
        _hubs[loop] = hub
    return hub
