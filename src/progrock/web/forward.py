"""Forwarding start and cancel requests from web processes to the workers.

The consumer and the Python API hand requests to the ``prog-rocker`` channel
through here. Starts are batched (many per channel-layer message) and each is
guarded by a watchdog in the delay store (:mod:`progrock.worker.start_watch`), so a
start that a killed worker took with it is forwarded again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
import weakref
from collections.abc import Mapping
from typing import Any

from channels.exceptions import ChannelFull
from channels.layers import get_channel_layer
from redis.exceptions import RedisError

from progrock.delay.store import default_store
from progrock.exceptions import ProgRockError
from progrock.protocol import WORKER_CHANNEL
from progrock.tuning import FORWARD_BATCH, FORWARD_TIMEOUT, FORWARD_WINDOW
from progrock.worker import start_watch

logger = logging.getLogger("progrock.forward")

# Failures of Redis or the channel layer themselves: the same for every start
# of a batch, so every caller gets them. Any other failure belongs to a
# start (a value the layer cannot serialise): the batch is split to find it.
TRANSIENT = (RedisError, OSError, ChannelFull, TimeoutError)


class Unsendable(ProgRockError):
    """A start that cannot be sent for a reason of its own (it holds a value
    the channel layer or the delay store cannot serialise)."""


async def to_workers(message: dict[str, Any]) -> None:
    """Send one message to the worker channel."""
    layer = get_channel_layer()
    if layer is None:
        raise ProgRockError("no channel layer is configured (settings.CHANNEL_LAYERS)")
    await layer.send(WORKER_CHANNEL, message)


_Batch = list[tuple[dict[str, Any], asyncio.Future[None]]]


class _StartForwarder:
    """Sends start requests to the workers, many per channel-layer message.

    A channel-layer send costs Redis round trips (four with channels_redis's
    own layer, one with :mod:`progrock.contrib.layer`); when many sockets
    start tasks at once, the requests of ``FORWARD_WINDOW`` seconds (and those that
    arrive while a send is under way) share one message. Each caller still
    waits for its own request to be sent and gets the send's error if it fails.

    The batch's watchdogs are armed (one round trip) before it is sent, so no
    worker can act on a start before its watchdog exists; if the send fails,
    they are dropped again.
    """

    def __init__(self) -> None:
        self._queue: _Batch = []
        self._flusher: asyncio.Task[None] | None = None

    async def send(self, start: dict[str, Any]) -> None:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        self._queue.append((start, done))
        if self._flusher is None or self._flusher.done():
            self._flusher = loop.create_task(self._flush())
        await done

    async def _flush(self) -> None:
        await asyncio.sleep(FORWARD_WINDOW)  # let the starts of the next few ms join
        while self._queue:
            # A caller that gave up (its request timed out) before its start
            # went out gets nothing sent: it was told nothing was done.
            batch = [(s, d) for s, d in self._queue[:FORWARD_BATCH] if not d.done()]
            del self._queue[:FORWARD_BATCH]
            if batch:
                await self._send_batch(batch)

    async def _send_batch(self, batch: _Batch) -> None:
        """Send ``batch`` as one message; one start's own failure never fails the others.

        If the send fails for a reason that is not Redis's (a start holds a
        value the layer cannot serialise), the batch is split in halves and
        each half sent again, down to the guilty start, whose caller alone
        gets :class:`Unsendable`.
        """
        starts = [start for start, _ in batch]
        try:
            async with asyncio.timeout(FORWARD_TIMEOUT):
                await self._send(starts)
        except TRANSIENT as exc:
            _settle(batch, exc)
        except Exception as exc:
            if len(batch) == 1:
                logger.error("cannot forward start %s: %r", starts[0].get("task_id"), exc)
                _settle(batch, Unsendable(f"the start cannot be sent: {type(exc).__name__}"))
                return
            half = len(batch) // 2
            await self._send_batch(batch[:half])
            await self._send_batch(batch[half:])
        else:
            _settle(batch, None)

    async def _send(self, starts: list[dict[str, Any]]) -> None:
        message: dict[str, Any] = (
            starts[0] if len(starts) == 1 else {"type": "progrock.start", "starts": starts}
        )
        await start_watch.arm(default_store(), starts)
        try:
            await to_workers(message)
        except BaseException:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(FORWARD_TIMEOUT):
                    await start_watch.disarm(default_store(), [s["task_id"] for s in starts])
            raise


def _settle(batch: _Batch, exc: Exception | None) -> None:
    for _, done in batch:
        if done.done():
            continue
        if exc is None:
            done.set_result(None)
        else:
            done.set_exception(exc)


_forwarders: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _StartForwarder] = (
    weakref.WeakKeyDictionary()
)


async def forward_start(
    *,
    task_id: str,
    kind: str,
    params: Mapping[str, Any],
    owner: str,
    reply_channel: str | None,
    ref: str | int | None = None,
) -> None:
    """Hand a start request to a worker (the consumer and the Python API use this)."""
    loop = asyncio.get_running_loop()
    forwarder = _forwarders.get(loop)
    if forwarder is None:
        forwarder = _forwarders[loop] = _StartForwarder()
    await forwarder.send(
        {
            "type": "progrock.start",
            "task_id": task_id,
            "kind": kind,
            "params": dict(params),
            "owner": owner,
            "reply_channel": reply_channel,
            "ref": ref,
            "nonce": start_watch.nonce(),
        }
    )


async def forward_cancel(task_id: str, *, reply_channel: str | None) -> None:
    """Hand a cancel request to a worker; each request is claimed once by id."""
    await to_workers(
        {
            "type": "progrock.cancel",
            "task_id": task_id,
            "reply_channel": reply_channel,
            "request_id": uuid.uuid4().hex,
        }
    )
