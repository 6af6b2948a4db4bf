"""The ``prog-rocker`` worker: start, poll and cancel tasks on the backend service.

No handler sleeps or loops over a task. Each running task has a poll chain of
delayed messages: the delay server delivers due ticks (merged, many tasks per
message), the worker polls the backend for all of them in one request,
announces what changed, and schedules each task's next tick on its cadence
(``due + POLL_INTERVAL``, so the cadence does not drift). Run it with
``manage.py runprogrock`` (or ``runworker prog-rocker``); any number may run
at once. Starting is in :mod:`progrock.worker.starts`, polling in
:mod:`progrock.worker.polls`, repairs in :mod:`progrock.worker.sweep`; this module holds
the engine they share and the channel consumer.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
import uuid
import weakref
from collections.abc import Coroutine, Mapping, Sequence
from typing import Any

from channels.consumer import AsyncConsumer, get_handler_name
from channels.db import aclose_old_connections
from channels.layers import get_channel_layer

from progrock.conf import progrock_settings
from progrock.delay import DelayStore
from progrock.delay.store import now_ms
from progrock.exceptions import ServiceError, ServiceRejected
from progrock.models import Task
from progrock.protocol import (
    ACTIVE,
    Status,
)
from progrock.services import load_service
from progrock.services.base import ServiceStatus, TaskService
from progrock.state import tasks
from progrock.state.live import TaskStore
from progrock.worker import start_watch
from progrock.worker.phase import Lead, LoadMeter, ceil_to, grid_ms, is_multiple
from progrock.worker.polls import (
    POLL,
    PollTimes,
    ProgressCopy,
    Tick,
    ending_from_backend,
    parse_ticks,
    poll,
)
from progrock.worker.starts import start_many

logger = logging.getLogger("progrock.worker")


class Engine:
    """What a worker does, independent of how messages reach it."""

    def __init__(self, service: TaskService, store: TaskStore, delay: DelayStore) -> None:
        self.service = service
        self.store = store
        self.delay = delay
        self.progress_copy = ProgressCopy()
        # Queued tasks a sweep found without a start watchdog, and since when (see sweep).
        self.unwatched: dict[str, float] = {}
        # When a batch's create calls go out, and the load that sets the grid
        # (see progrock.worker.phase).
        self.create_lead = Lead()
        # How long a start batch takes from being taken to its creates.
        self.prep_lead = Lead()
        self.load = LoadMeter()
        # The warm-up while it runs (see get_engine; held so that it is not
        # collected, and dropped when done: the task refers to its loop).
        self.warming: asyncio.Task[None] | None = None

    # -- scheduling ---------------------------------------------------------

    async def schedule_ticks(self, ticks: Sequence[Tick]) -> None:
        """Schedule ticks as few delayed messages: one per due time (and TICK_BATCH ticks).

        A task's tick counts only if it is the task's next due tick (its
        ``nd`` field, claimed atomically in :meth:`TaskStore.claim`), so poll
        chains need no per-task key: a duplicated or outdated tick is dropped.
        """
        if not ticks:
            return
        groups: dict[float, list[list[Any]]] = {}
        for t in ticks:
            groups.setdefault(t.due_ms, []).append([t.task_id, t.due_ms])
        batch = max(1, int(progrock_settings.TICK_BATCH))
        # Delivered TICK_LEAD early: the worker claims meanwhile and waits for
        # the due time before asking the backend (polls.until_due).
        early = now_ms() + self.tick_lead_ms
        await self.delay.schedule_many(
            [
                {
                    "channel": progrock_settings.WORKER_CHANNEL,
                    "content": {"type": POLL, "ticks": items[i : i + batch]},
                    "delay": max(0.0, due - early),
                    "merge": True,
                }
                for due, items in groups.items()
                for i in range(0, len(items), batch)
            ]
        )

    async def reply_error(self, reply_channel: object, code: str, detail: str, **ctx: Any) -> None:
        if not isinstance(reply_channel, str) or not reply_channel:
            logger.warning("%s: %s", code, detail)
            return
        layer = get_channel_layer()
        if layer is not None:
            await layer.send(
                reply_channel, {"type": "progrock.error", "code": code, "detail": detail, **ctx}
            )

    # -- start --------------------------------------------------------------

    async def start(self, message: Mapping[str, Any]) -> None:
        """Start one task (see :mod:`progrock.worker.starts`)."""
        await start_many(self, [message])

    async def start_many(self, messages: Sequence[Mapping[str, Any]]) -> None:
        """Start the tasks of a batch of start messages (see :mod:`progrock.worker.starts`)."""
        await start_many(self, messages)

    @property
    def interval_ms(self) -> float:
        return float(progrock_settings.POLL_INTERVAL) * 1000

    @property
    def tick_grid_ms(self) -> float:
        """The tick grid, ``TICK_GRID``, in ms (0: none)."""
        return float(progrock_settings.TICK_GRID) * 1000

    @property
    def tick_lead_ms(self) -> float:
        """How early poll ticks are delivered, ``TICK_LEAD``, in ms (0: when due)."""
        return float(progrock_settings.TICK_LEAD) * 1000

    @property
    def tick_align_ms(self) -> float:
        """The light-load first ticks' align step, ``TICK_ALIGN``, in ms (0: none)."""
        return float(progrock_settings.TICK_ALIGN) * 1000

    def next_due(self, due_ms: float, at_ms: float) -> float:
        """The tick after one due at ``due_ms`` and handled at ``at_ms``, in its phase.

        One interval after the last one was due (not after now), so the cadence
        does not drift under load. A poll handled more than an interval late
        skips ahead by whole intervals instead of starting a new rhythm: the
        task keeps its phase against the backend's own steps, which a shifted
        rhythm could straddle (polls that alternately see no step and two).

        Ticks are put on the tick grid where a task's rhythm begins (its first
        tick under heavy load, :func:`progrock.worker.phase.first_due`; a retry after
        backend trouble, a chain the sweep re-arms: :meth:`on_grid`), so that
        tasks share due times and the delay server merges their ticks into one
        message and one backend call; this keeps whatever phase that gave (a
        light-load start batch's first tick keeps its finer ``TICK_ALIGN``
        phase, :func:`progrock.worker.phase.first_due`). With a ``POLL_INTERVAL`` that is not
        a multiple of ``TICK_GRID``, every tick is rounded up to the grid, which
        stretches the interval (0.25 s on a 20 ms grid: 260 ms).
        """
        interval = self.interval_ms
        due = due_ms + interval
        if at_ms > due and interval > 0:
            due += interval * math.ceil((at_ms - due) / interval)
        grid = self.tick_grid_ms
        if grid > 0 and not is_multiple(interval, grid):
            # An interval off the grid would spread tasks over ever more due
            # times: each tick goes back on the grid (stretching the interval).
            return ceil_to(due, grid)
        return due

    def on_grid(self, due_ms: float) -> float:
        """``due_ms`` rounded up to the tick grid (unchanged without one)."""
        grid = self.tick_grid_ms
        return due_ms if grid <= 0 else ceil_to(due_ms, grid)

    def first_tick(self, due_ms: float, at_ms: float) -> float:
        """A new task's first tick, ``due_ms`` (:func:`~.phase.first_due`), at ``at_ms``.

        Kept even if it is already past (the start took longer than an
        interval: it is delivered at once); moved on by whole intervals,
        keeping its phase, only once it is more than an interval past.
        """
        interval = self.interval_ms
        return self.next_due(due_ms - interval, at_ms - interval)

    def note_starts(self, count: int) -> None:
        """Count arriving starts as the load their tasks will bring (a tick per interval)."""
        if self.interval_ms > 0:
            self.load.add(now_ms(), count * 1000 / self.interval_ms)

    def light_load(self, at_ms: float) -> bool:
        """Whether this worker handles fewer than ``LIGHT_LOAD`` ticks a second (0: never)."""
        limit = float(progrock_settings.LIGHT_LOAD)
        return limit > 0 and self.load.per_second(at_ms) < limit

    def start_grid_ms(self, at_ms: float) -> float:
        """The grid new tasks' creates are aimed at: ``TICK_GRID_LIGHT`` under light load.

        Their first ticks go on it, or, with ``TICK_ALIGN``, just after the
        answer (:func:`progrock.worker.phase.first_due`); later ticks keep their
        task's phase (:meth:`next_due`).
        """
        return grid_ms(
            self.tick_grid_ms,
            float(progrock_settings.TICK_GRID_LIGHT) * 1000,
            self.interval_ms,
            self.light_load(at_ms),
        )

    def gather_s(self, window_s: float) -> float:
        """How long a start runner lets starts gather before taking its batch.

        Under light load, until the batch can be prepared and its creates
        sent just before the next point of the start grid (so the wait, less
        than one grid step, also gathers the starts); otherwise ``window_s``.
        """
        at = now_ms()
        if self.light_load(at):
            wait = self.create_lead.wait_ms(
                at, self.start_grid_ms(at), before_ms=self.prep_lead.lead_ms(at)
            )
            if wait is not None:
                return wait / 1000
        return window_s

    def create_wait_ms(self, at_ms: float, grid: float) -> float | None:
        """How long a prepared start batch waits to send its creates (None: no wait, no aim).

        Under light load, until the lead before the next grid point, if that
        is at most half a step away (the batch's gathering aimed at it);
        otherwise, and under heavy load, None: the creates go out at once.
        """
        if not self.light_load(at_ms):
            return None
        return self.create_lead.wait_ms(at_ms, grid, at_most_ms=grid / 2)

    # -- poll ---------------------------------------------------------------

    async def poll(self, ticks: Sequence[Tick]) -> None:
        """Poll a batch of due ticks (see :mod:`progrock.worker.polls`).

        A message may merge ticks of several due times (a delay server that
        fell behind merges whatever was delivered). Those already due are
        polled at once, each later due time on its own: ticks arrive up to
        ``TICK_LEAD`` early, and a poll waits for its latest due time.
        """
        now = now_ms()
        groups: dict[float, list[Tick]] = {}
        for t in ticks:
            groups.setdefault(t.due_ms if t.due_ms > now else 0.0, []).append(t)
        if len(groups) > 1:
            await asyncio.gather(*(self._poll(group) for group in groups.values()))
        else:
            await self._poll(ticks)

    async def _poll(self, ticks: Sequence[Tick]) -> None:
        if not logger.isEnabledFor(logging.DEBUG):
            await poll(self, ticks)
            return
        started, times = time.perf_counter(), PollTimes()
        try:
            await poll(self, ticks, times)
        finally:
            due = max((t.due_ms for t in ticks), default=now_ms())
            logger.debug(
                "polled %d ticks in %.1f ms, %.1f ms late; asked the backend %s, "
                "answered %s, announced %s, ended %s",
                len(ticks),
                (time.perf_counter() - started) * 1000,
                now_ms() - due,
                "never" if times.asked_ms is None else f"{times.asked_ms - due:+.1f} ms",
                "never" if times.answered_ms is None else f"{times.answered_ms - due:+.1f} ms",
                "nothing" if times.announced_ms is None else f"{times.announced_ms - due:+.1f} ms",
                "none"
                if times.ended_ms is None
                else f"{times.ended} at {times.ended_ms - due:+.1f} ms",
            )

    async def warm_up(self) -> None:
        """Open the backend's connection before the first start batch, and time it.

        Calls the service's optional ``warm_up()`` (the HTTP service: ``GET
        /health``) twice: the first call opens the connection, the second
        one's round trip seeds the create lead (:meth:`progrock.worker.phase.Lead.seed`,
        unless a batch was timed meanwhile), so that the first creates of a
        fresh worker are aimed at the tick grid with it rather than with the
        initial guess. A failure only leaves the guess in place.
        """
        warm = getattr(self.service, "warm_up", None)
        if warm is None:
            return
        try:
            await warm()  # opens the connection
            began = now_ms()
            await warm()  # a round trip on it
        except ServiceError as exc:
            logger.info("backend warm-up failed (%s); creates are timed from the first batch", exc)
            return
        except Exception:
            logger.exception("backend warm-up failed; creates are timed from the first batch")
            return
        took = now_ms() - began
        logger.debug("backend warm-up took %.1f ms", took)
        self.create_lead.seed(took)

    async def drain(self) -> None:
        """Wait for the background database write, if one is under way (for tests)."""
        await self.progress_copy.drain()

    # -- cancel -------------------------------------------------------------

    async def cancel(self, message: Mapping[str, Any]) -> None:
        try:
            task_id = str(uuid.UUID(str(message["task_id"])))
        except (KeyError, ValueError) as exc:
            logger.error("dropping malformed cancel message %.300r: %s", message, exc)
            return
        reply = message.get("reply_channel")
        request = str(message.get("request_id") or "")
        claim = f"{progrock_settings.KEY_PREFIX}cancel:{task_id}:{request}"
        if request and not await self.store.redis.set(claim, b"1", nx=True, ex=60):
            return  # a second delivery of the same cancel request (see start)
        task = await Task.objects.filter(pk=task_id).afirst()
        if task is None or task.status not in ACTIVE:
            state = task.status if task else "unknown"
            await self.reply_error(
                reply,
                "not_cancellable",
                f"task {task_id} is {state}",
                action="cancel",
                task_id=task_id,
            )
            return
        ended = await self.cancel_backend(task.backend_ref) if task.backend_ref else None
        view = await self.store.view(task_id)
        progress = view.progress if view else task.progress
        seq = view.seq if view else task.seq
        if ended is not None and ended.state in ("succeeded", "failed"):
            # The backend finished first: the task ends as the backend says.
            fields = {"progress": str(progress), "seq": str(seq)}
            await tasks.afinish_many([ending_from_backend(task_id, fields, ended)], self.store)
            await self.reply_error(
                reply,
                "not_cancellable",
                f"task {task_id} finished before the cancel",
                action="cancel",
                task_id=task_id,
            )
            return
        done = await tasks.afinish(
            task_id, Status.CANCELLED, self.store, progress=progress, seq_hint=seq
        )
        if done and task.status == Status.QUEUED.value:
            # Cancelled before it started: its start watchdog has nothing to do.
            await start_watch.disarm(self.delay, [task_id])
        if not done:
            await self.reply_error(
                reply,
                "not_cancellable",
                f"task {task_id} is already over",
                action="cancel",
                task_id=task_id,
            )

    async def cancel_backend(self, ref: str) -> ServiceStatus | None:
        """Tell the backend; returns its state of the task when it answers."""
        try:
            return await self.service.cancel(ref)
        except (ServiceError, ServiceRejected) as exc:
            logger.warning("backend did not cancel %s: %s", ref, exc)
            return None

    # -- sweep ---------------------------------------------------------------

    async def sweep(self) -> int:
        """Repair what crashes and lost messages left behind (see :mod:`progrock.worker.sweep`)."""
        from progrock.worker.sweep import sweep

        return await sweep(self)


_engines: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Engine] = weakref.WeakKeyDictionary()


def get_engine() -> Engine:
    loop = asyncio.get_running_loop()
    engine = _engines.get(loop)
    if engine is None:
        engine = Engine(load_service(), TaskStore.from_settings(), DelayStore.from_settings())
        _engines[loop] = engine
        engine.warming = loop.create_task(engine.warm_up(), name="progrock-warm-up")
        engine.warming.add_done_callback(lambda _: setattr(engine, "warming", None))
    return engine


_START: Mapping[str, Any] = {"type": "progrock.start"}  # what a runner's log lines name


class WorkerConsumer(AsyncConsumer):  # type: ignore[misc]
    """The ``prog-rocker`` channel's consumer: a thin adapter over :class:`Engine`.

    Messages are handled concurrently in two lanes, each with its own limit:
    poll ticks, and control messages (start, cancel, sweep) whose database and
    backend work is slower. A burst of starts never holds up the polls.

    Starts are batched: those that arrive while earlier ones are being
    handled (or within ``START_WINDOW`` seconds of the first; under light
    load, until the next point of the start grid, see
    :meth:`Engine.gather_s`) are started together, up to ``START_BATCH`` at
    a time (see :mod:`progrock.worker.starts`). One runner takes batch after batch;
    a further one (up to ``START_RUNNERS``) begins only while every runner
    has been on its batch for longer than ``START_PATIENCE`` seconds: then
    the backend or the database is slow, and more batches in flight add
    throughput. A worker that is merely busy gains nothing from them: they
    crowd its event loop and delay the polls of running tasks.
    """

    LANES = {"poll": 32, "control": 16}
    START_BATCH = 100
    START_RUNNERS = 4
    START_PATIENCE = 0.5
    START_WINDOW = 0.02

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
        get_engine().note_starts(len(batch) if isinstance(batch, list) else 1)
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
            engine = get_engine()
            await asyncio.sleep(engine.gather_s(self.START_WINDOW))  # let a burst gather
            first = True
            while self._starts:
                # Under light load, those that came during the last batch
                # gather to the next grid point too (no wait otherwise).
                wait = 0.0 if first else engine.gather_s(0.0)
                self._batch_began = loop.time()
                if wait:
                    await asyncio.sleep(wait)
                first = False
                batch = self._starts[: self.START_BATCH]
                del self._starts[: self.START_BATCH]
                if self._starts:  # more wait: if this batch is slow, another runner helps
                    self._add_runner()
                try:
                    await engine.start_many(batch)
                except Exception:
                    # The sweep fails tasks whose start never completed.
                    logger.exception("starting a batch of %d tasks failed", len(batch))
        finally:
            self._start_runners -= 1

    async def progrock_poll(self, message: dict[str, Any]) -> None:
        self._spawn("poll", get_engine().poll(parse_ticks(message.get("ticks"))), message)

    async def progrock_cancel(self, message: dict[str, Any]) -> None:
        self._spawn("control", get_engine().cancel(message), message)

    async def progrock_sweep(self, message: dict[str, Any]) -> None:
        await aclose_old_connections()
        self._spawn("control", get_engine().sweep(), message)

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
            except Exception:
                # One bad message must not take the worker down; the sweep
                # re-arms any poll chain this broke.
                logger.exception("worker failed on %.300r", message)
