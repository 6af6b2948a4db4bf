"""Polling: what a worker does with a batch of due poll ticks.

Each running task has a poll chain of delayed messages (see
:mod:`progrock.worker.schedule`). For a batch of due ticks a worker claims
them and loads their tasks in one Lua call (a tick counts only if it is its
task's next due tick), asks the backend for all of their statuses in one
request, decides per task what changed (:class:`PollPlan`, no I/O), announces
it in one Lua call, schedules each task's next tick on its cadence and
records the ends it found. Live progress is copied to the database now and
then, off the poll's path (:mod:`progrock.worker.progress_copy`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from progrock import metrics
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
from progrock.state.live import UNKNOWN, Change, LiveState, TaskStore, encode_fields
from progrock.state.scripts import (
    DB_WRITTEN,
    FAIL_SINCE,
    FAILS,
    NEXT_DUE,
    RATE_PROGRESS,
    RATE_TIME,
)
from progrock.tuning import DB_PROGRESS_INTERVAL, RETRY_BASE, RETRY_MAX
from progrock.worker.context import Worker
from progrock.worker.outage import UNAVAILABLE, unavailable
from progrock.worker.schedule import schedule_ticks
from progrock.worker.ticks import Tick, next_due, on_grid

logger = logging.getLogger("progrock.worker")


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


@dataclass(slots=True)
class PollTimes:
    """When a poll asked the backend, had its answer, announced what changed and
    recorded the ends it found (ms since the epoch, for the debug log)."""

    asked_ms: float | None = None
    answered_ms: float | None = None
    announced_ms: float | None = None
    ended: int = 0
    ended_ms: float | None = None


async def poll(worker: Worker, ticks: Sequence[Tick]) -> None:
    """Poll the backend for a batch of due ticks and announce what changed.

    A message may merge ticks of several due times (a delay server that fell
    behind merges whatever was due): they are polled together.
    """
    if not logger.isEnabledFor(logging.DEBUG):
        await _poll(worker, ticks, PollTimes())
        return
    started, times = time.perf_counter(), PollTimes()
    try:
        await _poll(worker, ticks, times)
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


async def _poll(worker: Worker, ticks: Sequence[Tick], times: PollTimes) -> None:
    interval, grid = worker.cadence.interval_ms, worker.cadence.grid_ms
    clock_ms = now_ms()
    claims = [(t.task_id, t.due_ms, next_due(t.due_ms, clock_ms, interval, grid)) for t in ticks]
    if ticks:
        metrics.POLL_LATENESS.observe(max(0.0, clock_ms - min(t.due_ms for t in ticks)) / 1000)
    claimed = await worker.store.claim(claims, time.time())
    running: dict[str, tuple[LiveState, float]] = {}
    for task_id, (state, following) in claimed.items():
        if state is None or not state.owner or state.status is Status.QUEUED:
            # Live state lost (Redis flushed or expired), or older than the row
            # (a tick for a task Redis still thinks queued): rebuild it from the row.
            state = await _rebuild(worker.store, task_id, following)
        if state is not None and state.status is Status.RUNNING and state.ref and not state.push:
            running[task_id] = (state, following)
    if not running:
        return
    refs = {state.ref: task_id for task_id, (state, _) in running.items()}
    times.asked_ms = now_ms()
    try:
        statuses: Mapping[
            str, ServiceStatus | ServiceError | None
        ] = await worker.service.status_many(list(refs))
    except ServiceError as exc:
        statuses = {ref: exc for ref in refs}
    now, clock_ms = time.time(), now_ms()
    times.answered_ms = clock_ms
    plan = PollPlan(now, clock_ms, grid, DB_PROGRESS_INTERVAL)
    for ref, task_id in refs.items():
        state, following = running[task_id]
        result = (
            statuses[ref]
            if ref in statuses
            else ServiceError(f"backend omitted task {ref!r} from its reply")
        )
        plan.add(task_id, state, result, following)
    await _carry_out(worker, plan, times)


async def _rebuild(store: TaskStore, task_id: str, following: float) -> LiveState | None:
    """Rebuild a task's live state from its row; the rebuilt state carries this chain on."""
    task = await tasks.arebuild(task_id, store)
    if task is None:
        return None
    await store.init(task_id, {NEXT_DUE: following})
    return LiveState.from_hash(encode_fields(tasks.live_fields(task, rebuilt=True)))


@dataclass(slots=True)
class PollPlan:
    """What a poll does once the backend has answered, decided per task without I/O."""

    now: float  # epoch seconds, when the answer came
    clock_ms: float  # the same, in ms
    grid_ms: float  # the tick grid, where a retry's tick goes
    db_interval: float  # DB_PROGRESS_INTERVAL
    changes: list[Change] = field(default_factory=list)  # announcements
    bookkeeping: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    next_ticks: list[Tick] = field(default_factory=list)
    endings: list[tasks.Ending] = field(default_factory=list)
    db_due: dict[str, str | None] = field(default_factory=dict)  # task id -> message, to copy

    def add(
        self,
        task_id: str,
        state: LiveState,
        result: ServiceStatus | ServiceError | None,
        following: float,
    ) -> None:
        """Decide for one task from the backend's answer; every running task keeps its
        poll chain unless it ends."""
        try:
            if isinstance(result, ServiceError):
                retry = backend_trouble(task_id, state, result, self.now, self.endings)
                if retry is not None:
                    tick = Tick(task_id, on_grid(self.clock_ms + retry[0] * 1000, self.grid_ms))
                    self.bookkeeping.append((task_id, {**retry[1], NEXT_DUE: tick.due_ms}))
                    self.next_ticks.append(tick)
                return
            if result is None:
                _log_lost(task_id, state)
                self.endings.append(
                    tasks.Ending(
                        task_id,
                        Status.FAILED,
                        progress=state.progress,
                        error=failure("lost", f"the backend no longer knows task {state.ref!r}"),
                        seq_hint=state.seq,
                    )
                )
                return
            if result.state != "running":
                self.endings.append(ending_from_backend(task_id, state.progress, state.seq, result))
                return
            change, book = observe(task_id, state, result, self.now)
            if change is not None:
                self.changes.append(change)
                if self.now - state.db_written >= self.db_interval:
                    book[DB_WRITTEN] = self.now
                    self.db_due[task_id] = result.message
            elif book:
                self.bookkeeping.append((task_id, book))
        except Exception:
            # One task's bad data must not stop the batch: log it, poll again later.
            logger.exception(
                "poll of task %s failed", task_id, extra={"task_id": task_id, "event": "poll_error"}
            )
        self.next_ticks.append(Tick(task_id, following))


def _log_lost(task_id: str, state: LiveState) -> None:
    """Say why a task fails as ``lost``; right after its create, the likely cause."""
    if state.seq <= 1:  # nothing announced since `started`: the first polls after the create
        logger.warning(
            "task %s failed as lost: the backend does not know %r right after creating it; "
            "any worker may poll any task, so an adapter must keep no task state in one "
            "process's memory (docs/backend.md, section 5)",
            task_id,
            state.ref,
            extra={"task_id": task_id, "event": "task_lost"},
        )
    else:
        logger.warning(
            "task %s failed as lost: the backend no longer knows %r",
            task_id,
            state.ref,
            extra={"task_id": task_id, "event": "task_lost"},
        )


async def _carry_out(worker: Worker, plan: PollPlan, times: PollTimes) -> None:
    """Announce a poll's changes, schedule its next ticks, record its ends, copy progress."""
    try:
        replies = await worker.store.apply_many(plan.changes, plan.bookkeeping)
        times.announced_ms = now_ms()
    finally:
        # Whatever happened above, every running task keeps its poll chain
        # and every end found in this batch is still recorded.
        try:
            await schedule_ticks(worker, plan.next_ticks)
        finally:
            if await run_endings(worker.store, plan.endings) and plan.endings:
                times.ended, times.ended_ms = len(plan.endings), now_ms()
    rows = []
    announced = 0
    for change, code in zip(plan.changes, replies, strict=True):
        announced += code > 0
        if code == UNKNOWN:
            await tasks.arebuild(change.task_id, worker.store)
        elif code > 0 and change.task_id in plan.db_due:
            rows.append(
                Task(
                    id=change.task_id,
                    progress=change.progress,
                    message=plan.db_due[change.task_id],
                    seq=code,
                )
            )
    if announced:
        metrics.UPDATES_ANNOUNCED.inc(announced)
    if rows:
        worker.progress_copy.write(rows)


async def run_endings(store: TaskStore, endings: list[tasks.Ending]) -> bool:
    """Record and announce the ends a poll found; the sweep retries what fails.

    False if that failed (logged)."""
    try:
        await tasks.afinish_many(endings, store)
    except UNAVAILABLE as exc:  # the next poll finds the end again
        await unavailable(exc)
        return False
    except Exception:
        logger.exception("ending %d tasks failed; the sweep will try again", len(endings))
        return False
    return True


def observe(
    task_id: str, state: LiveState, result: ServiceStatus, now: float
) -> tuple[Change | None, dict[str, Any]]:
    """What a running backend status changes: the announcement (if any) and bookkeeping."""
    book: dict[str, Any] = {}
    if state.fails:
        book.update({FAILS: "", FAIL_SINCE: ""})
    progress = max(state.progress, clamp_progress(result.progress))
    if progress == state.progress and (result.message or "") == state.message:
        return None, book
    est = estimate(
        progress=progress,
        now=now,
        last_progress=state.rate_progress,
        last_time=now if state.rate_time is None else state.rate_time,
        last_rate=state.rate,
    )
    book.update(
        {
            "message": result.message,
            "eta_s": est.eta_s,
            "rate": est.rate,
            RATE_PROGRESS: progress,
            RATE_TIME: now,
        }
    )
    msg = progress_message(task_id, progress, result.message, est.eta_s, est.rate)
    return Change(task_id, msg, Status.RUNNING, progress, book), book


def backend_trouble(
    task_id: str,
    state: LiveState,
    exc: ServiceError,
    now: float,
    endings: list[tasks.Ending],
) -> tuple[float, dict[str, Any]] | None:
    """Back off, or (once the failure budget is spent) queue the task's failure."""
    fails = state.fails + 1
    since = now if state.fail_since is None else state.fail_since
    if now - since >= progrock_settings.FAILURE_BUDGET:
        detail = (
            f"backend unusable for {now - since:.0f}s ({fails} failed polls); last error: {exc}"
        )
        endings.append(
            tasks.Ending(
                task_id,
                Status.FAILED,
                progress=state.progress,
                error=failure("backend_unreachable", detail),
                seq_hint=state.seq,
            )
        )
        return None
    delay = backoff(fails, RETRY_BASE, RETRY_MAX)
    logger.warning(
        "poll of %s failed (%s); attempt %d, retrying in %.1fs",
        task_id,
        exc,
        fails,
        delay,
        extra={"task_id": task_id, "event": "poll_failed"},
    )
    return delay, {FAILS: fails, FAIL_SINCE: since}


def ending_from_backend(
    task_id: str, progress: float, seq: int, result: ServiceStatus
) -> tasks.Ending:
    """The end of a task the backend reports as over (``progress`` and ``seq``: as last shown)."""
    progress = max(progress, clamp_progress(result.progress))
    if result.state == "succeeded":
        return tasks.Ending(task_id, Status.SUCCEEDED, 100, result.result, seq_hint=seq)
    if result.state == "failed":
        error = failure("backend_failed", result.error or "the task failed")
        return tasks.Ending(task_id, Status.FAILED, progress, error=error, seq_hint=seq)
    return tasks.Ending(task_id, Status.CANCELLED, progress, seq_hint=seq)
