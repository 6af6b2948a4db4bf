"""The loop around a worker's consumer: Channels' worker, outliving Redis outages.

``manage.py runprogrock`` runs Channels' worker (``channels.worker.Worker``):
one listener per channel awaits the channel layer's ``receive`` and hands each
message to the consumer. When that receive raises (Redis restarted, down, or
its connection reset) the listener ends, and with it the worker process, with
every task it was polling: under ``progrock up`` the supervisor starts it
again, under another supervisor it may give up. :class:`PatientWorker` hands
Channels a layer whose ``receive`` waits the outage out instead, with capped
exponential backoff and jitter, and logs one line when receiving starts to
fail and one when it works again (not one per retry). Whatever a killed or
stranded worker held is repaired by others: the sweep re-arms lost poll
chains, start watchdogs forward lost starts again (docs/reliability.md).

It also stops gracefully (:meth:`PatientWorker.request_stop`, which
``runprogrock`` calls on SIGTERM and SIGINT): it takes no new message from the
channel layer, lets its consumers handle every message already taken and
finish that work (polls schedule their next ticks, start batches complete),
then returns, at most ``WORKER_STOP_GRACE`` seconds later; a second signal
ends the wait at once. The consumers hear about it through a
``progrock.settle`` message queued behind the ones they have, so it arrives
once they have taken all of them.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from typing import Any

from channels.worker import Worker as ChannelsWorker

from progrock.tuning import WORKER_STOP_GRACE
from progrock.web.failures import UNAVAILABLE, OutageLog

__all__ = [
    "RECEIVE_RETRY_MAX",
    "RECEIVE_RETRY_MIN",
    "SETTLE",
    "PatientLayer",
    "PatientWorker",
]

logger = logging.getLogger("progrock.worker")

# Seconds between two attempts of a failing receive: doubling from the first to the last.
RECEIVE_RETRY_MIN = 0.2
RECEIVE_RETRY_MAX = 5.0

#: The in-process message a stopping worker queues behind every consumer's
#: messages: ``{"type": SETTLE, "done": future}``; the consumer resolves the
#: future once the work of the messages before it is done.
SETTLE = "progrock.settle"


class PatientLayer:
    """A channel layer whose ``receive`` retries through outages; the rest is the layer's."""

    def __init__(self, layer: Any, outage: OutageLog | None = None) -> None:
        self.layer = layer
        self.outage = outage or OutageLog(logger, "receiving from the channel layer")

    def __getattr__(self, name: str) -> Any:
        return getattr(self.layer, name)

    async def receive(self, channel: str) -> dict[str, Any]:
        """The layer's next message on ``channel``, however long Redis is away."""
        delay = RECEIVE_RETRY_MIN
        while True:
            try:
                message: dict[str, Any] = await self.layer.receive(channel)
            except UNAVAILABLE as exc:
                self.outage.failed(exc)
                await asyncio.sleep(delay * (0.5 + random.random()))
                delay = min(RECEIVE_RETRY_MAX, delay * 2)
                continue
            self.outage.recovered()
            return message


class PatientWorker(ChannelsWorker):  # type: ignore[misc]
    """Channels' worker on a :class:`PatientLayer`: a Redis outage does not end it,
    and it stops gracefully on :meth:`request_stop`."""

    def __init__(
        self,
        application: Any,
        channels: list[str],
        channel_layer: Any,
        max_applications: int = 1000,
        *,
        stop_grace: float = WORKER_STOP_GRACE,
    ) -> None:
        patient = None if channel_layer is None else PatientLayer(channel_layer)
        super().__init__(application, channels, patient, max_applications)
        self.stop_grace = stop_grace
        self._stop: asyncio.Event | None = None
        self._hurry: asyncio.Event | None = None
        self._stop_began = 0.0

    def _events(self) -> tuple[asyncio.Event, asyncio.Event]:
        if self._stop is None or self._hurry is None:
            self._stop, self._hurry = asyncio.Event(), asyncio.Event()
        return self._stop, self._hurry

    def request_stop(self, why: str = "a stop request") -> None:
        """Stop taking messages and finish the work in hand; a second call stops waiting
        for it. Call it in the worker's event loop (a loop signal handler does)."""
        stop, hurry = self._events()
        if stop.is_set():
            logger.warning("worker got %s again: exiting without waiting further", why)
            hurry.set()
            return
        self._stop_began = time.monotonic()
        logger.info("worker got %s: taking no new message, finishing the work in hand", why)
        stop.set()

    async def handle(self) -> None:
        """Channels' listeners (one per channel) until they end or a stop is requested."""
        stop, _ = self._events()
        listeners = [asyncio.ensure_future(self.listener(channel)) for channel in self.channels]
        ended = asyncio.ensure_future(asyncio.wait(listeners))
        stopping = asyncio.ensure_future(stop.wait())
        await asyncio.wait([ended, stopping], return_when=asyncio.FIRST_COMPLETED)
        if not stop.is_set():
            stopping.cancel()
            for listener in listeners:  # a listener failed (as in Channels): raise its error
                listener.result()
            return
        for listener in listeners:
            listener.cancel()
        await asyncio.gather(ended, *listeners, return_exceptions=True)
        await self.finish_in_hand()

    async def finish_in_hand(self) -> bool:
        """Wait until every application instance handled the messages it was given
        (at most ``stop_grace`` seconds); return whether all did."""
        _, hurry = self._events()
        loop = asyncio.get_running_loop()
        settled: list[asyncio.Future[None]] = []
        for details in list(self.application_instances.values()):
            if details["future"].done():
                continue
            done: asyncio.Future[None] = loop.create_future()
            details["input_queue"].put_nowait({"type": SETTLE, "done": done})
            settled.append(done)
        hurried = asyncio.ensure_future(hurry.wait())
        try:
            if settled:
                everything = asyncio.ensure_future(asyncio.wait(settled))
                await asyncio.wait(
                    [everything, hurried],
                    timeout=self.stop_grace,
                    return_when=asyncio.FIRST_COMPLETED,
                )
                everything.cancel()
        finally:
            hurried.cancel()
        took = time.monotonic() - self._stop_began
        if all(done.done() for done in settled):
            logger.info(
                "worker stopped after %.1f s: the work in hand is done (next ticks scheduled)",
                took,
            )
            return True
        logger.warning(
            "worker stopped after %.1f s with work unfinished; the sweep re-arms what it left",
            took,
        )
        return False
