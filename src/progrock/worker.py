"""The ``prog-rocker`` worker: start, poll and cancel tasks on the backend service.

No handler sleeps or loops over a task. Each running task has a poll chain of
delayed messages: the delay server delivers due ticks (merged, many tasks per
message), the worker polls the backend for all of them in one request,
announces what changed, and schedules each task's next tick on its cadence
(``due + POLL_INTERVAL``, so the cadence does not drift). Run it with
``manage.py runworker prog-rocker``; any number may run at once.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import time
import uuid
import weakref
from collections.abc import Coroutine, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from asgiref.sync import sync_to_async
from channels.consumer import AsyncConsumer, get_handler_name
from channels.db import aclose_old_connections
from channels.layers import get_channel_layer
from django.db import transaction

from progrock import tasks
from progrock.conf import progrock_settings
from progrock.delay import DelayStore
from progrock.delay.store import now_ms
from progrock.exceptions import ServiceError, ServiceRejected
from progrock.models import Task
from progrock.protocol import (
    ACTIVE,
    Status,
    backoff,
    clamp_progress,
    estimate,
    failure,
    progress_message,
)
from progrock.services import load_service
from progrock.services.base import ServiceStatus, TaskService
from progrock.starts import start_many
from progrock.store import UNKNOWN, Change, TaskStore, encode_fields

logger = logging.getLogger("progrock.worker")

POLL = "progrock.poll"


@dataclass(frozen=True, slots=True)
class Tick:
    task_id: str
    due_ms: float


# A task id as str(uuid.UUID(...)) writes it: checked far faster than by parsing.
_CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def parse_ticks(raw: object) -> list[Tick]:
    """Ticks of a ``progrock.poll`` message; malformed entries are logged and skipped."""
    ticks: list[Tick] = []
    if not isinstance(raw, list):
        logger.error("dropping poll message: 'ticks' must be a list, got %.200r", raw)
        return ticks
    for item in raw:
        if (
            isinstance(item, list)
            and len(item) == 2
            and isinstance(item[0], str)
            and isinstance(item[1], (int, float))
            and not isinstance(item[1], bool)
        ):
            task_id = item[0]
            if _CANONICAL_UUID.fullmatch(task_id) is None:
                try:  # not in the form we write: accept any form uuid.UUID reads
                    task_id = str(uuid.UUID(task_id))
                except ValueError:
                    task_id = ""
            if task_id:
                ticks.append(Tick(task_id, float(item[1])))
                continue
        logger.error("dropping malformed tick %.200r: expected [task_id, due_ms]", item)
    return ticks


class Engine:
    """What a worker does, independent of how messages reach it."""

    def __init__(self, service: TaskService, store: TaskStore, delay: DelayStore) -> None:
        self.service = service
        self.store = store
        self.delay = delay
        self._db_write: asyncio.Task[None] | None = None

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
        now = now_ms()
        await self.delay.schedule_many(
            [
                {
                    "channel": progrock_settings.WORKER_CHANNEL,
                    "content": {"type": POLL, "ticks": items[i : i + batch]},
                    "delay": max(0.0, due - now),
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
        """Start one task (see :mod:`progrock.starts`)."""
        await start_many(self, [message])

    async def start_many(self, messages: Sequence[Mapping[str, Any]]) -> None:
        """Start the tasks of a batch of start messages (see :mod:`progrock.starts`)."""
        await start_many(self, messages)

    @property
    def interval_ms(self) -> float:
        return float(progrock_settings.POLL_INTERVAL) * 1000

    def next_due(self, due_ms: float, at_ms: float) -> float:
        """The tick after one due at ``due_ms`` and handled at ``at_ms``, on the tick grid.

        One interval after the last one was due (not after now), so the cadence
        does not drift under load. A poll handled more than an interval late
        skips ahead by whole intervals instead of starting a new rhythm: the
        task keeps its phase against the backend's own steps, which a shifted
        rhythm could straddle (polls that alternately see no step and two).
        The grid makes tasks share due times, so the delay server merges their
        ticks into one message and one backend call.
        """
        interval = self.interval_ms
        due = due_ms + interval
        if at_ms > due and interval > 0:
            due += interval * math.ceil((at_ms - due) / interval)
        grid = float(progrock_settings.TICK_GRID) * 1000
        return due if grid <= 0 else math.ceil(due / grid) * grid

    # -- poll ---------------------------------------------------------------

    async def poll(self, ticks: Sequence[Tick]) -> None:
        started = time.perf_counter()
        try:
            await self._poll(ticks)
        finally:
            logger.debug(
                "polled %d ticks in %.1f ms, %.1f ms late",
                len(ticks),
                (time.perf_counter() - started) * 1000,
                now_ms() - min((t.due_ms for t in ticks), default=now_ms()),
            )

    async def _poll(self, ticks: Sequence[Tick]) -> None:
        clock_ms = now_ms()
        claims = [(t.task_id, t.due_ms, self.next_due(t.due_ms, clock_ms)) for t in ticks]
        claimed = await self.store.claim(claims, time.time())
        following = {task_id: nxt for task_id, (_, nxt) in claimed.items()}
        live = {task_id: fields for task_id, (fields, _) in claimed.items()}
        for task_id, fields in list(live.items()):
            if fields is None or not fields.get("owner") or fields.get("status") == "queued":
                # Live state lost (Redis flushed or expired), or older than the row
                # (a tick for a task Redis still thinks queued): rebuild it from the row.
                task = await tasks.arebuild(task_id, self.store)
                live[task_id] = (
                    encode_fields(tasks.live_fields(task, rebuilt=True)) if task else None
                )
                if task is not None:  # the rebuilt state carries this chain on
                    await self.store.init(task_id, {"nd": following[task_id]})
        running = {
            task_id: fields
            for task_id, fields in live.items()
            if fields is not None
            and fields.get("status") == Status.RUNNING.value
            and fields.get("ref")
            and fields.get("push") != "1"
        }
        if not running:
            return
        refs = {fields["ref"]: task_id for task_id, fields in running.items()}
        try:
            statuses: Mapping[
                str, ServiceStatus | ServiceError | None
            ] = await self.service.status_many(list(refs))
        except ServiceError as exc:
            statuses = {ref: exc for ref in refs}
        now, clock_ms = time.time(), now_ms()
        changes: list[Change] = []
        bookkeeping: list[tuple[str, dict[str, Any]]] = []
        next_ticks: list[Tick] = []
        endings: list[tasks.Ending] = []
        db_due: dict[str, str | None] = {}  # task id -> message, for the database copy
        for ref, task_id in refs.items():
            fields = running[task_id]
            try:
                result = statuses.get(
                    ref, ServiceError(f"backend omitted task {ref!r} from its reply")
                )
                if isinstance(result, ServiceError):
                    retry = self._backend_trouble(task_id, fields, result, now, endings)
                    if retry is not None:
                        tick = Tick(task_id, clock_ms + retry[0] * 1000)
                        bookkeeping.append((task_id, {**retry[1], "nd": tick.due_ms}))
                        next_ticks.append(tick)
                    continue
                if result is None:
                    endings.append(
                        tasks.Ending(
                            task_id,
                            Status.FAILED,
                            progress=float(fields.get("progress") or 0),
                            error=failure("lost", f"the backend no longer knows task {ref!r}"),
                            seq_hint=int(fields.get("seq") or 0),
                        )
                    )
                    continue
                if result.state != "running":
                    endings.append(self._ending_from_backend(task_id, fields, result))
                    continue
                change, book = self._observe(task_id, fields, result, now)
                if change is not None:
                    changes.append(change)
                    if (
                        now - float(fields.get("dbt") or 0)
                        >= progrock_settings.DB_PROGRESS_INTERVAL
                    ):
                        book["dbt"] = now
                        db_due[task_id] = result.message
                elif book:
                    bookkeeping.append((task_id, book))
            except Exception:
                # One task's bad data must not stop the batch: log it, poll again later.
                logger.exception("poll of task %s failed", task_id)
            next_ticks.append(Tick(task_id, following[task_id]))
        try:
            replies = await self.store.apply_many(changes, bookkeeping)
        finally:
            # Whatever happened above, every running task keeps its poll chain
            # and every end found in this batch is still recorded.
            try:
                await self.schedule_ticks(next_ticks)
            finally:
                await self._run_endings(endings)
        rows = []
        for change, code in zip(changes, replies, strict=True):
            if code == UNKNOWN:
                await tasks.arebuild(change.task_id, self.store)
            elif code > 0 and change.task_id in db_due:
                rows.append(
                    Task(
                        id=change.task_id,
                        progress=change.progress,
                        message=db_due[change.task_id],
                        seq=code,
                    )
                )
        if rows:
            self._write_progress(rows)

    async def _run_endings(self, endings: list[tasks.Ending]) -> None:
        try:
            await tasks.afinish_many(endings, self.store)
        except Exception:
            logger.exception("ending %d tasks failed; the sweep will try again", len(endings))

    def _observe(
        self, task_id: str, fields: Mapping[str, str], result: ServiceStatus, now: float
    ) -> tuple[Change | None, dict[str, Any]]:
        """What a running backend status changes: the announcement (if any) and bookkeeping."""
        book: dict[str, Any] = {}
        if fields.get("fails"):
            book.update(fails="", fail_since="")
        old_progress = float(fields.get("progress") or 0)
        progress = max(old_progress, clamp_progress(result.progress))
        if progress == old_progress and (result.message or "") == fields.get("message", ""):
            return None, book
        est = estimate(
            progress=progress,
            now=now,
            last_progress=float(fields.get("rp") or 0),
            last_time=float(fields.get("rt") or now),
            last_rate=float(fields["rate"]) if fields.get("rate") else None,
        )
        book.update(message=result.message, eta_s=est.eta_s, rate=est.rate, rp=progress, rt=now)
        msg = progress_message(task_id, progress, result.message, est.eta_s, est.rate)
        return Change(task_id, msg, Status.RUNNING, progress, book), book

    def _write_progress(self, rows: list[Task]) -> None:
        """Copy live progress to the database in the background, one write at a time.

        The write is off the poll's path: a slow database never delays a tick.
        Rows that find a write in flight are skipped; their task is written on
        a later poll (each row's due time was already pushed back in Redis).
        """
        if self._db_write is not None and not self._db_write.done():
            return
        self._db_write = asyncio.create_task(self._bulk_update(rows))

    async def drain(self) -> None:
        """Wait for the background database write, if one is under way."""
        if self._db_write is not None:
            await asyncio.gather(self._db_write, return_exceptions=True)

    async def _bulk_update(self, rows: list[Task]) -> None:
        try:
            await sync_to_async(_copy_progress)(rows)
        except Exception:
            logger.exception("writing the progress of %d tasks to the database failed", len(rows))

    def _backend_trouble(
        self,
        task_id: str,
        fields: Mapping[str, str],
        exc: ServiceError,
        now: float,
        endings: list[tasks.Ending],
    ) -> tuple[float, dict[str, Any]] | None:
        """Back off, or (once the failure budget is spent) queue the task's failure."""
        fails = int(fields.get("fails") or 0) + 1
        since = float(fields.get("fail_since") or now)
        if now - since >= progrock_settings.FAILURE_BUDGET:
            detail = (
                f"backend unusable for {now - since:.0f}s ({fails} failed polls); last error: {exc}"
            )
            endings.append(
                tasks.Ending(
                    task_id,
                    Status.FAILED,
                    progress=float(fields.get("progress") or 0),
                    error=failure("backend_unreachable", detail),
                    seq_hint=int(fields.get("seq") or 0),
                )
            )
            return None
        delay = backoff(fails, progrock_settings.RETRY_BASE, progrock_settings.RETRY_MAX)
        logger.warning(
            "poll of %s failed (%s); attempt %d, retrying in %.1fs", task_id, exc, fails, delay
        )
        return delay, {"fails": fails, "fail_since": since}

    @staticmethod
    def _ending_from_backend(
        task_id: str, fields: Mapping[str, str], result: ServiceStatus
    ) -> tasks.Ending:
        """The end of a task the backend reports as over."""
        seq = int(fields.get("seq") or 0)
        progress = max(float(fields.get("progress") or 0), clamp_progress(result.progress))
        if result.state == "succeeded":
            return tasks.Ending(task_id, Status.SUCCEEDED, 100, result.result, seq_hint=seq)
        if result.state == "failed":
            error = failure("backend_failed", result.error or "the task failed")
            return tasks.Ending(task_id, Status.FAILED, progress, error=error, seq_hint=seq)
        return tasks.Ending(task_id, Status.CANCELLED, progress, seq_hint=seq)

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
            await tasks.afinish_many(
                [self._ending_from_backend(task_id, fields, ended)], self.store
            )
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
        """Repair what crashes and lost messages left behind (see :mod:`progrock.sweep`)."""
        from progrock.sweep import sweep

        return await sweep(self)


def _copy_progress(rows: list[Task]) -> None:
    """Copy live progress into running rows only: never touch a finished task's row."""
    with transaction.atomic():
        for row in rows:
            Task.objects.filter(pk=row.pk, status=Status.RUNNING.value).update(
                progress=row.progress, message=row.message, seq=row.seq
            )


_engines: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Engine] = weakref.WeakKeyDictionary()


def get_engine() -> Engine:
    loop = asyncio.get_running_loop()
    engine = _engines.get(loop)
    if engine is None:
        engine = Engine(load_service(), TaskStore.from_settings(), DelayStore.from_settings())
        _engines[loop] = engine
    return engine


class WorkerConsumer(AsyncConsumer):  # type: ignore[misc]
    """The ``prog-rocker`` channel's consumer: a thin adapter over :class:`Engine`.

    Messages are handled concurrently in two lanes, each with its own limit:
    poll ticks, and control messages (start, cancel, sweep) whose database and
    backend work is slower. A burst of starts never holds up the polls.

    Starts are batched: those that arrive while earlier ones are being
    handled (or within ``START_WINDOW`` seconds of the first) are started
    together, up to ``START_BATCH`` at a time, by at most ``START_RUNNERS``
    concurrent batches (see :mod:`progrock.starts`).
    """

    LANES = {"poll": 32, "control": 16}
    START_BATCH = 100
    START_RUNNERS = 4
    START_WINDOW = 0.002

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

    async def progrock_start(self, message: dict[str, Any]) -> None:
        if self._starts is None:
            self._starts = []
        batch = message.get("starts")
        if isinstance(batch, list):  # several starts forwarded together by a web process
            self._starts.extend(m if isinstance(m, dict) else {"invalid": m} for m in batch)
        else:
            self._starts.append(message)
        if self._start_runners < self.START_RUNNERS:
            self._start_runners += 1
            self._spawn("starts", self._run_starts(), message)

    async def _run_starts(self) -> None:
        assert self._starts is not None
        try:
            await asyncio.sleep(self.START_WINDOW)  # let a burst gather
            while self._starts:
                batch = self._starts[: self.START_BATCH]
                del self._starts[: self.START_BATCH]
                try:
                    await get_engine().start_many(batch)
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
