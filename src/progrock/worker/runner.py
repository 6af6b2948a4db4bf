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
"""

from __future__ import annotations

import asyncio
import logging
import random
from typing import Any

from channels.worker import Worker as ChannelsWorker

from progrock.web.failures import UNAVAILABLE, OutageLog

__all__ = ["RECEIVE_RETRY_MAX", "RECEIVE_RETRY_MIN", "PatientLayer", "PatientWorker"]

logger = logging.getLogger("progrock.worker")

# Seconds between two attempts of a failing receive: doubling from the first to the last.
RECEIVE_RETRY_MIN = 0.2
RECEIVE_RETRY_MAX = 5.0


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
    """Channels' worker on a :class:`PatientLayer`: a Redis outage does not end it."""

    def __init__(
        self,
        application: Any,
        channels: list[str],
        channel_layer: Any,
        max_applications: int = 1000,
    ) -> None:
        patient = None if channel_layer is None else PatientLayer(channel_layer)
        super().__init__(application, channels, patient, max_applications)
