"""What a worker's start, poll, cancel and sweep work with, passed to each of them.

:class:`Worker` holds the collaborators (the backend service, live state,
the delay store), the poll cadence and the little state a worker keeps
between messages. The channel consumer (:mod:`progrock.worker.consumer`)
builds one per event loop from the settings; tests build their own.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

import redis.asyncio as aioredis

from progrock import heartbeat
from progrock.conf import progrock_settings
from progrock.delay import DelayStore
from progrock.protocol import WORKER_CHANNEL
from progrock.services import load_service
from progrock.services.base import TaskService
from progrock.services.metered import MeteredService
from progrock.state.live import TaskStore
from progrock.tuning import TICK_BATCH, TICK_GRID
from progrock.web.liveness import Liveness
from progrock.worker.progress_copy import ProgressCopy

logger = logging.getLogger("progrock.worker")


class DelayWatch:
    """Warns once per outage when the worker schedules ticks and no delay server beats
    (a :class:`~progrock.web.liveness.Liveness` on the delay kind, the worker's logger).

    The check runs beside the scheduling and never delays it. It waits out the
    confirmation window on its own (:meth:`Liveness.settled`): with no delay server
    no tick comes back, so the schedule that finds it missing may be the last one.
    """

    def __init__(self, liveness: Liveness) -> None:
        self.liveness = liveness
        self._task: asyncio.Task[None] | None = None

    @classmethod
    def on(cls, client: aioredis.Redis, prefix: str) -> DelayWatch:
        async def read() -> frozenset[str]:
            return await heartbeat.live_kinds(client, prefix)

        return cls(
            Liveness(
                read,
                needed=("delay",),
                log=logger,
                meaning=(
                    "poll ticks wait in Redis and tasks show no progress until one runs",
                    "poll ticks are delivered again",
                ),
            )
        )

    def check(self) -> None:
        """Start a check unless one is under way (cheap: one read per few seconds)."""
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(
                self._check(), name="progrock-delay-watch"
            )

    async def _check(self) -> None:
        try:
            await self.liveness.settled()
        except Exception:  # Redis away: the worker's outage log says so
            logger.debug("reading the delay server's heartbeat failed", exc_info=True)

    async def wait(self) -> None:
        """Wait for the check under way, if any (for tests)."""
        if self._task is not None:
            await self._task


@dataclass(frozen=True, slots=True)
class Cadence:
    """When poll ticks are due and how they travel (see :mod:`progrock.worker.ticks`)."""

    interval_ms: float  # POLL_INTERVAL
    grid_ms: float  # tuning.TICK_GRID (0: none)
    batch: int  # tuning.TICK_BATCH: most ticks in one delayed message
    channel: str  # WORKER_CHANNEL: where the delay server delivers them

    @classmethod
    def from_settings(cls) -> Cadence:
        return cls(
            interval_ms=progrock_settings.POLL_INTERVAL * 1000,
            grid_ms=TICK_GRID * 1000,
            batch=TICK_BATCH,
            channel=WORKER_CHANNEL,
        )


@dataclass(frozen=True, slots=True)
class Worker:
    """A worker's collaborators and cadence (one per event loop)."""

    service: TaskService
    store: TaskStore
    delay: DelayStore
    cadence: Cadence
    #: Background copies of live progress to the database (see polls).
    progress_copy: ProgressCopy = field(default_factory=ProgressCopy)
    #: Queued tasks a sweep found without a start watchdog, and since when (see sweep).
    unwatched: dict[str, float] = field(default_factory=dict)
    #: Whether a delay server beats, checked when ticks are scheduled (None: not watched).
    delay_watch: DelayWatch | None = None

    @classmethod
    def from_settings(cls) -> Worker:
        """A worker on the configured service (timed and counted: :mod:`progrock.metrics`),
        Redis and cadence (in the running loop)."""
        store = TaskStore.from_settings()
        return cls(
            MeteredService(load_service()),
            store,
            DelayStore.from_settings(),
            Cadence.from_settings(),
            delay_watch=DelayWatch.on(store.redis, progrock_settings.KEY_PREFIX),
        )

    async def drain(self) -> None:
        """Wait for the background database write, if one is under way (for tests)."""
        await self.progress_copy.drain()
