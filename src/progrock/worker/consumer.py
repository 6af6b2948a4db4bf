"""The ``prog-rocker`` worker: the channel consumer that starts, polls and cancels tasks.

No handler sleeps or loops over a task. Each running task has a poll chain of
delayed messages: the delay server delivers due ticks (merged, many tasks per
message), the worker polls the backend for all of them in one request,
announces what changed, and schedules each task's next tick on its cadence
(``due + POLL_INTERVAL``, so the cadence does not drift). Run it with
``manage.py runprogrock`` (or ``runworker prog-rocker``); any number may run
at once.

This module only adapts channel messages to the work: starting is in
:mod:`progrock.worker.starts`, polling in :mod:`progrock.worker.polls`,
cancelling in :mod:`progrock.worker.cancel`, repairs in
:mod:`progrock.worker.sweep`; each gets the loop's :class:`Worker`.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Coroutine, Mapping, Sequence
from typing import Any

from channels.consumer import AsyncConsumer, get_handler_name
from channels.db import aclose_old_connections

from progrock import heartbeat, tuning
from progrock.conf import progrock_settings
from progrock.services import aclose_service
from progrock.worker.cancel import cancel
from progrock.worker.context import Worker
from progrock.worker.outage import UNAVAILABLE, recovered, unavailable
from progrock.worker.polls import parse_ticks, poll
from progrock.worker.runner import SETTLE
from progrock.worker.starts import start_many
from progrock.worker.sweep import sweep

logger = logging.getLogger("progrock.worker")

_workers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Worker] = weakref.WeakKeyDictionary()


def get_worker() -> Worker:
    """The running event loop's worker (built from the settings on first use)."""
    loop = asyncio.get_running_loop()
    worker = _workers.get(loop)
    if worker is None:
        worker = _workers[loop] = Worker.from_settings()
    return worker


_START: Mapping[str, Any] = {"type": "progrock.start"}  # what a runner's log lines name


class WorkerConsumer(AsyncConsumer):  # type: ignore[misc]
    """The ``prog-rocker`` channel's consumer: a thin adapter over the worker's functions.

    Messages are handled concurrently in two lanes, each with its own limit:
    poll ticks, and control messages (start, cancel, sweep) whose database and
    backend work is slower. A burst of starts never holds up the polls.

    Starts are batched: those that arrive while earlier ones are being
    handled (or within ``START_WINDOW`` seconds of the first) are started
    together, up to ``START_BATCH`` at a time (see
    :mod:`progrock.worker.starts`). One runner takes batch after batch; a
    further one (up to ``START_RUNNERS``) begins only while every runner has
    been on its batch for longer than ``START_PATIENCE`` seconds: then the
    backend or the database is slow, and more batches in flight add
    throughput. A worker that is merely busy gains nothing from them: they
    crowd its event loop and delay the polls of running tasks.
    """

    # The values and their whys are in progrock.tuning; per instance here so
    # that a test can change them for one consumer.
    LANES = tuning.WORKER_LANES
    START_BATCH = tuning.START_BATCH
    START_RUNNERS = tuning.START_RUNNERS
    START_PATIENCE = tuning.START_PATIENCE
    START_WINDOW = tuning.START_WINDOW

    async def dispatch(self, message: dict[str, Any]) -> None:
        # Channels' default dispatch hops to a thread to close stale database
        # connections before every message (about 70 us each); poll ticks rarely
        # touch the database, so the worker does that in its sweep instead.
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            logger.error("dropping message of unknown type %.200r", message.get("type"))
            return
        await handler(message)

    _lanes: dict[str, asyncio.Semaphore] | None = None
    _running: set[asyncio.Task[None]]

    _starts: list[dict[str, Any]] | None = None
    _start_runners = 0
    _batch_began = 0.0  # loop time the latest batch (or its gathering) began
    _recheck_pending = False  # a look at the runners is scheduled

    async def progrock_start(self, message: dict[str, Any]) -> None:
        if self._starts is None:
            self._starts = []
        batch = message.get("starts")
        if isinstance(batch, list):  # several starts forwarded together by a web process
            self._starts.extend(m if isinstance(m, dict) else {"invalid": m} for m in batch)
        else:
            self._starts.append(message)
        self._add_runner(message)

    def _add_runner(self, message: Mapping[str, Any] = _START) -> None:
        """Start a runner if none runs, or another if every runner has been on its
        batch for ``START_PATIENCE`` seconds (up to ``START_RUNNERS``); while
        starts wait for that, look again once the patience is over."""
        if not self._starts or self._start_runners >= self.START_RUNNERS:
            return
        loop = asyncio.get_running_loop()
        waited = loop.time() - self._batch_began
        if self._start_runners == 0 or waited >= self.START_PATIENCE:
            self._start_runners += 1
            self._batch_began = loop.time()
            self._spawn("starts", self._run_starts(), message)
        elif not self._recheck_pending:
            self._recheck_pending = True
            loop.call_later(self.START_PATIENCE - waited, self._recheck_runners)

    def _recheck_runners(self) -> None:
        self._recheck_pending = False
        self._add_runner()

    async def _run_starts(self) -> None:
        assert self._starts is not None
        loop = asyncio.get_running_loop()
        try:
            await asyncio.sleep(self.START_WINDOW)  # let a burst gather
            while self._starts:
                self._batch_began = loop.time()
                batch = self._starts[: self.START_BATCH]
                del self._starts[: self.START_BATCH]
                if self._starts:  # more wait: if this batch is slow, another runner helps
                    self._add_runner()
                try:
                    await self.start_batch(batch)
                except UNAVAILABLE as exc:
                    # The start watchdogs forward these starts again.
                    await unavailable(exc)
                except Exception:
                    # The sweep fails tasks whose start never completed.
                    logger.exception("starting a batch of %d tasks failed", len(batch))
                else:
                    recovered()
        finally:
            self._start_runners -= 1

    async def start_batch(self, batch: Sequence[Mapping[str, Any]]) -> None:
        """Start one batch of start messages (see :func:`progrock.worker.starts.start_many`)."""
        await start_many(get_worker(), batch)

    async def progrock_poll(self, message: dict[str, Any]) -> None:
        self._spawn("poll", poll(get_worker(), parse_ticks(message.get("ticks"))), message)

    async def progrock_cancel(self, message: dict[str, Any]) -> None:
        self._spawn("control", cancel(get_worker(), message), message)

    async def progrock_sweep(self, message: dict[str, Any]) -> None:
        await aclose_old_connections()
        # runprogrock beats from its start; a plain `runworker prog-rocker` from its first sweep.
        worker = get_worker()
        heartbeat.ensure_beating(worker.store.redis, progrock_settings.KEY_PREFIX, "worker")
        self._spawn("control", sweep(worker), message)

    async def progrock_settle(self, message: dict[str, Any]) -> None:
        """A stopping worker's last message (:data:`progrock.worker.runner.SETTLE`):
        resolve its future once the work of every earlier message is done and the
        backend service is closed."""
        done = message.get("done")
        if not isinstance(done, asyncio.Future):  # only ever queued in-process
            logger.error("dropping a %s message without its future: %.200r", SETTLE, message)
            return
        try:
            await self.settle()
            await aclose_service()  # the worker exits next: close the backend's connections
        finally:
            if not done.done():
                done.set_result(None)

    async def settle(self) -> None:
        """Wait until the work of every message handled so far is done: polls (with
        their next ticks scheduled), starts, cancels, sweeps, and the background
        copy of progress to the database."""
        while self._lanes is not None and self._running:
            await asyncio.wait(list(self._running))
        worker = _workers.get(asyncio.get_running_loop())
        if worker is not None:
            await worker.drain()

    def _spawn(self, lane: str, work: Coroutine[Any, Any, Any], message: Mapping[str, Any]) -> None:
        if self._lanes is None:
            self._lanes = {name: asyncio.Semaphore(n) for name, n in self.LANES.items()}
            self._lanes["starts"] = asyncio.Semaphore(self.START_RUNNERS)
            self._running = set()
        task = asyncio.create_task(self._guard(self._lanes[lane], work, message))
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def _guard(
        self, slots: asyncio.Semaphore, work: Coroutine[Any, Any, Any], message: Mapping[str, Any]
    ) -> None:
        async with slots:
            try:
                await work
            except UNAVAILABLE as exc:
                # Redis or the database is away: the sweep re-arms any poll
                # chain this broke once they are back.
                await unavailable(exc)
            except Exception:
                # One bad message must not take the worker down; the sweep
                # re-arms any poll chain this broke.
                logger.exception("worker failed on %.300r", message)
            else:
                recovered()
