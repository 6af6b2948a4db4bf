"""Forwarding start and cancel requests from web processes to the workers.

The consumer and the Python API hand requests to the ``prog-rocker`` channel
through here. Starts are batched (many per channel-layer message) and each is
guarded by a watchdog in the delay store (:mod:`progrock.worker.start_watch`), so a
start that a killed worker took with it is forwarded again.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
import weakref
from collections.abc import Mapping
from typing import Any

from channels.layers import get_channel_layer

from progrock.conf import progrock_settings
from progrock.delay.store import default_store
from progrock.exceptions import ProgRockError
from progrock.worker import start_watch

# Starts forwarded together in one channel-layer message, at most this many.
FORWARD_BATCH = 100
# Seconds a start waits for others to share its channel-layer message and its
# watchdog call (a few Redis round trips each): at 100 starts a second, most
# would otherwise go alone.
FORWARD_WINDOW = 0.01


async def to_workers(message: dict[str, Any]) -> None:
    """Send one message to the worker channel."""
    layer = get_channel_layer()
    if layer is None:
        raise ProgRockError("no channel layer is configured (settings.CHANNEL_LAYERS)")
    await layer.send(progrock_settings.WORKER_CHANNEL, message)


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
        self._queue: list[tuple[dict[str, Any], asyncio.Future[None]]] = []
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
            batch = self._queue[:FORWARD_BATCH]
            del self._queue[:FORWARD_BATCH]
            starts = [start for start, _ in batch]
            message: dict[str, Any] = (
                starts[0] if len(batch) == 1 else {"type": "progrock.start", "starts": starts}
            )
            try:
                await start_watch.arm(default_store(), starts)
                try:
                    await to_workers(message)
                except BaseException:
                    with contextlib.suppress(Exception):
                        await start_watch.disarm(default_store(), [s["task_id"] for s in starts])
                    raise
            except Exception as exc:
                for _, done in batch:
                    if not done.done():
                        done.set_exception(exc)
            else:
                for _, done in batch:
                    if not done.done():
                        done.set_result(None)


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
