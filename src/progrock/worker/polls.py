"""Polling: what a worker does with a batch of due poll ticks.

Each running task has a poll chain of delayed messages (see
:meth:`progrock.worker.engine.Engine.schedule_ticks`). For a batch of due ticks a
worker claims them and loads their tasks in one Lua call (a tick counts only
if it is its task's next due tick), asks the backend for all of their
statuses in one request, announces what changed in one Lua call, schedules
each task's next tick on its cadence and records the ends it found. Live
progress is copied to the database now and then, off the poll's path.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from asgiref.sync import sync_to_async
from django.db import transaction

from progrock.conf import progrock_settings
from progrock.delay.store import now_ms
from progrock.exceptions import ServiceError
from progrock.models import Task
from progrock.protocol import (
    Status,
    backoff,
    canonical_task_id,
    clamp_progress,
    estimate,
    failure,
    progress_message,
)
from progrock.services.base import ServiceStatus
from progrock.state import tasks
from progrock.state.live import UNKNOWN, Change, TaskStore, encode_fields
from progrock.state.rows import update_each, write_alias

if TYPE_CHECKING:
    from progrock.worker.engine import Engine

logger = logging.getLogger("progrock.worker")

POLL = "progrock.poll"


@dataclass(frozen=True, slots=True)
class Tick:
    task_id: str
    due_ms: float


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
            task_id = canonical_task_id(item[0])
            if task_id is not None:
                ticks.append(Tick(task_id, float(item[1])))
                continue
        logger.error("dropping malformed tick %.200r: expected [task_id, due_ms]", item)
    return ticks


async def until_due(due_ms: float, lead_ms: float) -> None:
    """Wait for ``due_ms`` before asking the backend: a tick is delivered up to
    ``lead_ms`` (``TICK_LEAD``) early (:meth:`progrock.worker.engine.Engine.schedule_ticks`), and
    the backend's step may not have come before its due time. The wait is
    capped at that lead: a clock that differs between the delay server's
    machine and this one cannot hold a poll for longer. (Looped: uvloop rounds
    a timer to whole milliseconds, and may wake up to one early.)"""
    now = now_ms()
    until = min(due_ms, now + lead_ms)
    while now < until:
        await asyncio.sleep((until - now) / 1000)
        now = now_ms()


@dataclass(slots=True)
class PollTimes:
    """When a poll asked the backend, had its answer, announced what changed and
    recorded the ends it found (ms since the epoch, for the debug log)."""

    asked_ms: float | None = None
    answered_ms: float | None = None
    announced_ms: float | None = None
    ended: int = 0
    ended_ms: float | None = None


async def poll(engine: Engine, ticks: Sequence[Tick], times: PollTimes | None = None) -> None:
    """Poll the backend for a batch of due ticks and announce what changed."""
    times = times if times is not None else PollTimes()
    clock_ms = now_ms()
    engine.load.add(clock_ms, len(ticks))
    claims = [(t.task_id, t.due_ms, engine.next_due(t.due_ms, clock_ms)) for t in ticks]
    claimed = await engine.store.claim(claims, time.time())
    following = {task_id: nxt for task_id, (_, nxt) in claimed.items()}
    live = {task_id: fields for task_id, (fields, _) in claimed.items()}
    for task_id, fields in list(live.items()):
        if fields is None or not fields.get("owner") or fields.get("status") == "queued":
            # Live state lost (Redis flushed or expired), or older than the row
            # (a tick for a task Redis still thinks queued): rebuild it from the row.
            task = await tasks.arebuild(task_id, engine.store)
            live[task_id] = encode_fields(tasks.live_fields(task, rebuilt=True)) if task else None
            if task is not None:  # the rebuilt state carries this chain on
                await engine.store.init(task_id, {"nd": following[task_id]})
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
    await until_due(max(t.due_ms for t in ticks if t.task_id in running), engine.tick_lead_ms)
    times.asked_ms = now_ms()
    try:
        statuses: Mapping[
            str, ServiceStatus | ServiceError | None
        ] = await engine.service.status_many(list(refs))
    except ServiceError as exc:
        statuses = {ref: exc for ref in refs}
    now, clock_ms = time.time(), now_ms()
    times.answered_ms = clock_ms
    changes: list[Change] = []
    bookkeeping: list[tuple[str, dict[str, Any]]] = []
    next_ticks: list[Tick] = []
    endings: list[tasks.Ending] = []
    db_due: dict[str, str | None] = {}  # task id -> message, for the database copy
    for ref, task_id in refs.items():
        fields = running[task_id]
        try:
            result = statuses.get(ref, ServiceError(f"backend omitted task {ref!r} from its reply"))
            if isinstance(result, ServiceError):
                retry = backend_trouble(task_id, fields, result, now, endings)
                if retry is not None:
                    tick = Tick(task_id, engine.on_grid(clock_ms + retry[0] * 1000))
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
                endings.append(ending_from_backend(task_id, fields, result))
                continue
            change, book = observe(task_id, fields, result, now)
            if change is not None:
                changes.append(change)
                if now - float(fields.get("dbt") or 0) >= progrock_settings.DB_PROGRESS_INTERVAL:
                    book["dbt"] = now
                    db_due[task_id] = result.message
            elif book:
                bookkeeping.append((task_id, book))
        except Exception:
            # One task's bad data must not stop the batch: log it, poll again later.
            logger.exception("poll of task %s failed", task_id)
        next_ticks.append(Tick(task_id, following[task_id]))
    try:
        replies = await engine.store.apply_many(changes, bookkeeping)
        times.announced_ms = now_ms()
    finally:
        # Whatever happened above, every running task keeps its poll chain
        # and every end found in this batch is still recorded.
        try:
            await engine.schedule_ticks(next_ticks)
        finally:
            if await run_endings(engine.store, endings) and endings:
                times.ended, times.ended_ms = len(endings), now_ms()
    rows = []
    for change, code in zip(changes, replies, strict=True):
        if code == UNKNOWN:
            await tasks.arebuild(change.task_id, engine.store)
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
        engine.progress_copy.write(rows)


async def run_endings(store: TaskStore, endings: list[tasks.Ending]) -> bool:
    """Record and announce the ends a poll found; the sweep retries what fails.

    False if that failed (logged)."""
    try:
        await tasks.afinish_many(endings, store)
    except Exception:
        logger.exception("ending %d tasks failed; the sweep will try again", len(endings))
        return False
    return True


def observe(
    task_id: str, fields: Mapping[str, str], result: ServiceStatus, now: float
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


def backend_trouble(
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


def ending_from_backend(
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


class ProgressCopy:
    """Copies live progress to the database in the background, one write at a time.

    The write is off the poll's path: a slow database never delays a tick.
    Rows that find a write in flight are skipped; their task is written on a
    later poll (each row's due time was already pushed back in Redis).
    """

    def __init__(self) -> None:
        self._write: asyncio.Task[None] | None = None

    def write(self, rows: list[Task]) -> None:
        if self._write is not None and not self._write.done():
            return
        self._write = asyncio.create_task(self._run(rows))

    async def drain(self) -> None:
        """Wait for the background write, if one is under way."""
        if self._write is not None:
            await asyncio.gather(self._write, return_exceptions=True)

    async def _run(self, rows: list[Task]) -> None:
        try:
            await sync_to_async(copy_progress)(rows)
        except Exception:
            logger.exception("writing the progress of %d tasks to the database failed", len(rows))


def copy_progress(rows: Sequence[Task]) -> None:
    """Copy live progress into running rows only: never touch a finished task's row.

    One conditional UPDATE sent once per row with ``executemany``
    (:func:`progrock.state.rows.update_each`), in one transaction.
    """
    with transaction.atomic(using=write_alias()):
        update_each(
            ("progress", "message", "seq"),
            ((row.pk, (row.progress, row.message, row.seq)) for row in rows),
            status_in=(Status.RUNNING.value,),
        )
