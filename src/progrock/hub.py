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
from collections.abc import Awaitable, Callable
from typing import Protocol

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from progrock.conf import progrock_settings
from progrock.protocol import parse_fanout
from progrock.store import fanout_channel

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
        self._confirm: dict[str, asyncio.Future[None]] = {}
        self._pubsub: aioredis.client.PubSub | None = None
        self._client: aioredis.Redis | None = None
        self._reader: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self._connected = asyncio.Event()

    # -- public API ---------------------------------------------------------

    async def subscribe(self, task_id: str, listener: Listener) -> None:
        """Deliver the task's messages to ``listener``; returns once Redis confirmed."""
        listeners = self._listeners.setdefault(task_id, set())
        first = not listeners
        listeners.add(listener)
        if first:
            await self._ensure_running()
            await self._subscribe_channel(task_id)

    async def unsubscribe(self, task_id: str, listener: Listener) -> None:
        listeners = self._listeners.get(task_id)
        if not listeners:
            return
        listeners.discard(listener)
        if not listeners:
            del self._listeners[task_id]
            if self._pubsub is not None:
                with contextlib.suppress(RedisError, OSError):
                    await self._pubsub.unsubscribe(fanout_channel(task_id, self.prefix))

    def watched(self) -> int:
        return len(self._listeners)

    async def aclose(self) -> None:
        """Stop reading and close the connection (listeners get nothing more)."""
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
            self._reader = None
        if self._pubsub is not None:
            with contextlib.suppress(Exception):
                await self._pubsub.aclose()  # type: ignore[no-untyped-call]
            self._pubsub = None
        if self._client is not None:
            await self._client.aclose()
            self._client = None
        self._listeners.clear()

    # -- internals ----------------------------------------------------------

    async def _ensure_running(self) -> None:
        async with self._lock:
            if self._reader is None or self._reader.done():
                self._client = aioredis.Redis.from_url(
                    self.url, socket_connect_timeout=5, health_check_interval=0
                )
                self._pubsub = self._client.pubsub()
                # A channel nobody uses keeps the connection open and the reader fed.
                await self._pubsub.subscribe(f"{self.prefix}hub")
                self._connected.set()
                self._reader = asyncio.create_task(self._read_loop(), name="progrock-hub")

    async def _subscribe_channel(self, task_id: str) -> None:
        channel = fanout_channel(task_id, self.prefix)
        loop = asyncio.get_running_loop()
        future = self._confirm.get(channel)
        if future is None or future.done():
            future = loop.create_future()
            self._confirm[channel] = future
        await self._connected.wait()
        if self._pubsub is None:  # pragma: no cover - set by _ensure_running
            raise RuntimeError("hub is not connected")
        await self._pubsub.subscribe(channel)
        try:
            await asyncio.wait_for(asyncio.shield(future), timeout=10)
        except TimeoutError:
            logger.warning("no subscribe confirmation for %s within 10 s", channel)

    async def _read_loop(self) -> None:
        attempt = 0
        while True:
            pubsub = self._pubsub
            if pubsub is None:
                return
            try:
                message = await pubsub.get_message(ignore_subscribe_messages=False, timeout=5.0)
                attempt = 0
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                attempt += 1
                logger.warning("fan-out connection lost (%s); reconnecting", exc)
                await self._reconnect(attempt)
                continue
            if message is None:
                continue
            await self._dispatch(message)

    async def _dispatch(self, message: dict[str, object]) -> None:
        kind = message.get("type")
        raw_channel = message.get("channel")
        channel = raw_channel.decode() if isinstance(raw_channel, bytes) else str(raw_channel)
        if kind == "subscribe":
            future = self._confirm.pop(channel, None)
            if future is not None and not future.done():
                future.set_result(None)
            return
        if kind != "message":
            return
        task_id = channel[len(self.prefix) + 2 :]
        listeners = self._listeners.get(task_id)
        if not listeners:
            return
        data = message.get("data")
        text = data.decode() if isinstance(data, bytes) else str(data)
        try:
            seq, flag, body = parse_fanout(text)
        except ValueError:
            logger.error("dropping malformed fan-out message on %s: %.200r", channel, text)
            return
        for listener in list(listeners):
            await _safely(listener.hub_message(task_id, seq, flag, body))

    async def _reconnect(self, attempt: int) -> None:
        self._connected.clear()
        old = self._pubsub
        if old is not None:
            with contextlib.suppress(Exception):
                await old.aclose()  # type: ignore[no-untyped-call]
        delay = min(5.0, 0.1 * 2 ** min(attempt, 6))
        await asyncio.sleep(delay)
        try:
            if self._client is None:  # pragma: no cover
                raise RuntimeError("hub has no client")
            self._pubsub = self._client.pubsub()
            channels = [f"{self.prefix}hub"] + [
                fanout_channel(t, self.prefix) for t in self._listeners
            ]
            await self._pubsub.subscribe(*channels)
        except (RedisError, OSError) as exc:
            logger.warning("fan-out reconnect failed: %s", exc)
            return
        self._connected.set()
        logger.info("fan-out reconnected; resynchronising %d tasks", len(self._listeners))
        for task_id, listeners in list(self._listeners.items()):
            for listener in list(listeners):
                await _safely(listener.hub_resync(task_id))


async def _safely(call: Awaitable[None]) -> None:
    try:
        await call
    except asyncio.CancelledError:
        raise
    except Exception:
        logger.exception("a hub listener failed")


_hubs: dict[int, Hub] = {}


def get_hub() -> Hub:
    """The hub of the running event loop (one per web process)."""
    loop = asyncio.get_running_loop()
    hub = _hubs.get(id(loop))
    if hub is None:
        hub = Hub(progrock_settings.REDIS_URL, progrock_settings.KEY_PREFIX)
        _hubs[id(loop)] = hub
    return hub


HubFactory = Callable[[], Hub]
