"""The producer's side of a push task: report progress, keep alive, learn of a cancel.

A push task's work runs outside ProgRock (a Celery task, a ``django.tasks``
task, a script) and reports its own progress through
:func:`progrock.report_progress`, which is :meth:`Reporter.report` on this
process's :class:`Reporter` (a forked child gets its own). It costs one
Redis round trip over a connection the process keeps (redis-py's sync
client, :mod:`progrock.state.sync_store`), at most once per task and
``POLL_INTERVAL`` (the cadence watchers see polled tasks at):

* a report that comes sooner (less than ``PUSH_HOLD_FRACTION`` of it: a
  producer reporting at the cadence with some jitter is not held) after the
  task's last published one is
  *held*: it replaces the task's pending value, and a background thread
  publishes the newest pending value when the cadence allows, so the last
  value always gets through, however the calls are spaced;
* an end (``complete``, ``failed``, ``cancelled``) is never held: it drops
  the pending value and is recorded at once (database first, then announced);
* every published report and every :meth:`Reporter.keep_alive` refreshes the
  task's deadline (:data:`~progrock.state.scripts.HEARD`): a push task not
  heard from for ``PUSH_TIMEOUT`` seconds fails as ``lost``
  (:mod:`progrock.worker.sweep`);
* once the task is cancelled, the next report that reaches Redis raises
  :class:`~progrock.exceptions.Cancelled`, and so does every later one.

A push task started ``queued`` (a task queue's job: :mod:`progrock.queues`)
waits in ``queued``, its ``PUSH_TIMEOUT`` not running, until
:meth:`Reporter.begin` (the job's start) or its first report moves it to
``running`` with ``started``: the row first (the SQL guard lets exactly one
call move it, whatever retries or twin calls do), then live state through
the same script as every change.

ETA and rate come from the same estimate as polled tasks'
(:func:`progrock.protocol.estimate`). Progress is copied to the task's row at
most every ``DB_PROGRESS_INTERVAL`` seconds per task, as for polled tasks.
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

import redis

from progrock.conf import progrock_settings
from progrock.exceptions import Cancelled, RedisUnavailable, TaskNotFound
from progrock.models import Task
from progrock.protocol import (
    FAILURE_CODES,
    Status,
    canonical_task_id,
    clamp_progress,
    estimate,
    failure,
    progress_message,
    started_message,
)
from progrock.redact import redact
from progrock.state import tasks
from progrock.state.live import ALREADY_TERMINAL, UNKNOWN, Change
from progrock.state.scripts import HEARD, RATE_PROGRESS, RATE_TIME
from progrock.state.sync_store import SyncTaskStore, store_for_process
from progrock.tuning import DB_PROGRESS_INTERVAL, PUSH_HOLD_FRACTION
from progrock.values import find_problem, string_problem

logger = logging.getLogger("progrock.push")

#: What ``status=`` accepts: the wire's names of the ends, and the task statuses.
STATUSES: Final = {
    "running": Status.RUNNING,
    "complete": Status.SUCCEEDED,
    "succeeded": Status.SUCCEEDED,
    "failed": Status.FAILED,
    "cancelled": Status.CANCELLED,
}

# Seconds a task may go without a report before this process forgets what it
# knows of it (its rate estimate, its pending value is long published by then).
_FORGET_AFTER: Final = 3600.0


# -- pure checks -----------------------------------------------------------------


def check_progress(progress: object) -> float | None:
    """``progress`` as a float, or None; raise ValueError naming a bad one."""
    if progress is None:
        return None
    if (
        isinstance(progress, bool)
        or not isinstance(progress, (int, float))
        or not math.isfinite(progress)
        or not 0 <= progress <= 100
    ):
        raise ValueError(f"progress must be a number between 0 and 100, got {progress!r}")
    return float(progress)


def check_message(message: object) -> str | None:
    if message is None:
        return None
    if not isinstance(message, str):
        raise ValueError(f"message must be a string or None, got {type(message).__name__}")
    problem = string_problem(message)
    if problem is not None:
        raise ValueError(f"message {problem}")
    return message


def check_status(status: object, code: object) -> tuple[Status, str | None]:
    """The status a report moves to, and the failure code of a ``failed`` one."""
    found = STATUSES.get(str(status)) if isinstance(status, str) else None
    if status is None:
        found = Status.RUNNING
    if found is None or found is Status.QUEUED:
        raise ValueError(
            f"status must be one of 'running', 'complete', 'failed', 'cancelled', got {status!r}"
        )
    if code is not None and found is not Status.FAILED:
        raise ValueError(f"code is for status='failed' only, got code={code!r} with {status!r}")
    if found is Status.FAILED:
        code = "task_failed" if code is None else code
        if code not in FAILURE_CODES:
            raise ValueError(f"code must be one of {sorted(FAILURE_CODES)}, got {code!r}")
        return found, str(code)
    return found, None


def result_problem(result: Any) -> str | None:
    """Why ``result`` cannot be a task's result (JSON in Redis, the database, browsers)."""
    try:
        value = json.loads(json.dumps(result, allow_nan=False))  # tuples become lists
    except (TypeError, ValueError) as exc:
        return f"result must be JSON-serialisable, got {type(result).__name__}: {exc}"
    problem = find_problem(value, "result")
    return None if problem is None else f"{problem[0]} {problem[1]}"


def should_hold(last_sent: float, now: float, window: float) -> bool:
    """Whether a report at ``now`` waits: the task published less than ``window`` ago
    (``PUSH_HOLD_FRACTION`` of ``POLL_INTERVAL``)."""
    return now - last_sent < window


# -- the reporter ----------------------------------------------------------------


@dataclass(slots=True)
class _Known:
    """What this process knows of one push task."""

    sent: float = -math.inf  # monotonic time of the last published report
    seq: int = 0  # its seq
    shown: float = 0.0  # the progress it showed
    pending: tuple[float | None, str | None] | None = None  # held: (progress, message)
    due: float = 0.0  # monotonic time the pending value may be published
    seeded: bool = False  # rate state read from live state
    rate_progress: float = 0.0
    rate_time: float = 0.0  # epoch s
    rate: float | None = None
    db_written: float = 0.0  # epoch s
    cancelled: bool = False
    used: float = 0.0  # monotonic time of the last call


class Reporter:
    """Reports of the push tasks of one process (see the module's docstring)."""

    def __init__(
        self,
        store: Callable[[], SyncTaskStore],
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._clock = clock
        self._wall = wall
        self._known: dict[str, _Known] = {}
        self._due: dict[str, float] = {}  # tasks with a pending value, and when it is due
        self._cond = threading.Condition()
        self._flusher: threading.Thread | None = None
        self._forgotten_at = clock()

    # -- public ------------------------------------------------------------------

    def report(
        self,
        task_id: str,
        progress: float | None = None,
        message: str | None = None,
        *,
        status: Status | str | None = None,
        result: Any = None,
        error: str | None = None,
        code: str | None = None,
    ) -> int:
        """Report a push task's progress or end; the published message's seq, 0 if
        held for the cadence (published later) or the task is already over."""
        done = self.prepare(task_id, progress, message, status, result, error, code)
        return done if isinstance(done, int) else done()

    def prepare(
        self,
        task_id: str,
        progress: float | None,
        message: str | None,
        status: Status | str | None,
        result: Any,
        error: str | None,
        code: str | None,
    ) -> int | Callable[[], int]:
        """Check a report and, if the cadence holds it, hold it (returns 0); else
        return the call that publishes it (blocking I/O: run it in a thread from
        async code)."""
        value = check_progress(progress)
        message = check_message(message)
        new_status, code = check_status(status, code)
        if result is not None and new_status is not Status.SUCCEEDED:
            raise ValueError(f"result is for status='complete' only, got it with {status!r}")
        if error is not None and new_status is not Status.FAILED:
            raise ValueError(f"error is for status='failed' only, got it with {status!r}")
        task_id = self._task_id(task_id)
        if new_status.terminal:
            return lambda: self._end(task_id, new_status, value, result, error, code)
        now = self._clock()
        with self._cond:
            known = self._known.get(task_id)
            if known is None:
                known = self._known[task_id] = _Known()
            if known.cancelled:
                raise Cancelled(f"task {task_id} was cancelled")
            known.used = now
            window = progrock_settings.POLL_INTERVAL * PUSH_HOLD_FRACTION
            if should_hold(known.sent, now, window):
                if known.pending is not None and value is None:
                    value = known.pending[0]  # a message-only report keeps held progress
                known.pending = (value, message)
                known.due = known.sent + window
                self._due[task_id] = known.due
                self._wake()
                return 0
            known.sent, known.pending = now, None
            self._due.pop(task_id, None)
        return lambda: self._publish(task_id, known, value, message)

    def begin(self, task_id: str) -> bool:
        """Move a ``queued`` push task to ``running`` and announce ``started``, once
        (True for the call that did it). Raises
        :class:`~progrock.exceptions.Cancelled` if the task was cancelled,
        :class:`TaskNotFound` if there is none; False for a task already running
        or over (a retried job, a second call)."""
        task_id = self._task_id(task_id)
        row = Task.objects.filter(pk=task_id).values_list("status", "backend_ref", "kind").first()
        if row is None:
            raise TaskNotFound(f"no task {task_id}")
        status: str | None = row[0]
        if status == Status.QUEUED.value:
            at = datetime.now(UTC)
            if tasks.mark_running([(task_id, row[1] or "")], at)[0] is True:
                self._announce_started(task_id, row[2], at)
                return True
            status = Task.objects.filter(pk=task_id).values_list("status", flat=True).first()
        if status == Status.CANCELLED.value:
            self._mark_cancelled(task_id)
            raise Cancelled(f"task {task_id} was cancelled")
        return False

    def _announce_started(self, task_id: str, kind: str, at: datetime) -> None:
        """Live state's half of :meth:`begin` (its row is running already)."""
        store, now = self._store(), at.timestamp()
        fields = {"started_at": at.isoformat(), RATE_PROGRESS: 0.0, RATE_TIME: now, HEARD: now}
        change = Change(task_id, started_message(task_id, kind), Status.RUNNING, 0, fields)
        for _ in range(2):  # a second time after rebuilding lost live state
            try:
                reply = store.apply_many([change])[0]
            except redis.RedisError as exc:
                raise _unavailable(exc) from exc
            if reply != UNKNOWN:
                break
            self._rebuild(task_id, store)
        with self._cond:
            known = self._known.get(task_id)
            if known is not None:
                known.seeded = False  # read the running task's state afresh
        # Cancelled meanwhile (its end was announced first): APPLY refused `started`.
        cancelled = Status.CANCELLED.value
        if reply == ALREADY_TERMINAL and self._fields(store, task_id, ["status"])[0] == cancelled:
            self._mark_cancelled(task_id)
            raise Cancelled(f"task {task_id} was cancelled")

    def keep_alive(self, task_id: str) -> None:
        """Refresh a push task's deadline (``PUSH_TIMEOUT``) without publishing anything."""
        task_id = self._task_id(task_id)
        store = self._store()
        status = self._heard(task_id, store, self._wall())
        if status is None:
            self._rebuild(task_id, store)
        elif status == Status.CANCELLED.value:
            self._mark_cancelled(task_id)

    def is_cancelled(self, task_id: str) -> bool:
        """Whether the task was cancelled, without reporting anything."""
        task_id = self._task_id(task_id)
        with self._cond:
            known = self._known.get(task_id)
            if known is not None and known.cancelled:
                return True
        store = self._store()
        status = self._fields(store, task_id, ["status"])[0]
        if status is None:
            row = Task.objects.filter(pk=task_id).values_list("status", flat=True).first()
            if row is None:
                raise TaskNotFound(f"no task {task_id}")
            status = row
        if status == Status.CANCELLED.value:
            self._mark_cancelled(task_id)
            return True
        return False

    def flush(self) -> None:
        """Publish every pending value now (the flusher does it when they are due)."""
        with self._cond:
            due = list(self._due)
        self._flush(due)

    # -- inside ------------------------------------------------------------------

    def _task_id(self, task_id: object) -> str:
        found = canonical_task_id(task_id) if isinstance(task_id, str) else None
        if found is None:
            raise TaskNotFound(f"no task {task_id!r}: a task id is a UUID string")
        return found

    def _publish(
        self, task_id: str, known: _Known, value: float | None, message: str | None
    ) -> int:
        store = self._store()
        for _ in range(2):  # a second time after rebuilding lost live state
            if not known.seeded:
                self._seed(task_id, known, store)
            if value is None:
                value = known.shown
            now = self._wall()
            est = estimate(
                progress=value,
                now=now,
                last_progress=known.rate_progress,
                last_time=known.rate_time,
                last_rate=known.rate,
            )
            fields = {
                "message": message,
                "eta_s": est.eta_s,
                "rate": est.rate,
                RATE_PROGRESS: value,
                RATE_TIME: now,
                HEARD: now,
            }
            change = Change(
                task_id,
                progress_message(task_id, value, message, est.eta_s, est.rate),
                Status.RUNNING,
                value,
                fields,
            )
            try:
                reply = store.apply_many([change])[0]
            except redis.RedisError as exc:
                raise _unavailable(exc) from exc
            if reply == UNKNOWN:
                self._rebuild(task_id, store)
                known.seeded = False
                continue
            if reply == ALREADY_TERMINAL:
                if self._fields(store, task_id, ["status"])[0] == Status.CANCELLED.value:
                    self._mark_cancelled(task_id)
                    raise Cancelled(f"task {task_id} was cancelled")
                return 0
            if reply <= 0:  # stale: progress would go backwards, or nothing changed
                self._heard(task_id, store, now)  # yet the producer is alive
                return 0
            known.seq, known.shown = reply, max(known.shown, value)
            if value >= known.rate_progress:
                known.rate_progress, known.rate_time, known.rate = value, now, est.rate
            if now - known.db_written >= DB_PROGRESS_INTERVAL:
                known.db_written = now
                Task.objects.filter(pk=task_id, status=Status.RUNNING.value).update(
                    progress=clamp_progress(value), message=message, seq=reply
                )
            return reply
        raise TaskNotFound(f"no live state for task {task_id} after rebuilding it")

    def _seed(self, task_id: str, known: _Known, store: SyncTaskStore) -> None:
        """Read the task's rate state (left by another process, or its start)."""
        names = ["status", RATE_PROGRESS, RATE_TIME, "rate", "started_at", "seq", "progress"]
        status, rp, rt, rate, started, seq, shown = self._fields(store, task_id, names)
        if status is None:
            self._rebuild(task_id, store)
            status, rp, rt, rate, started, seq, shown = self._fields(store, task_id, names)
        if status == Status.QUEUED.value:  # its first report: it began
            self.begin(task_id)
            status, rp, rt, rate, started, seq, shown = self._fields(store, task_id, names)
        if status == Status.CANCELLED.value:
            self._mark_cancelled(task_id)
            raise Cancelled(f"task {task_id} was cancelled")
        known.seq, known.shown = int(seq or 0), float(shown or 0)
        known.rate_progress = float(rp or 0)
        known.rate_time = float(rt) if rt else _epoch(started) or self._wall()
        known.rate = float(rate) if rate else None
        known.seeded = True

    def _heard(self, task_id: str, store: SyncTaskStore, now: float) -> str | None:
        """Refresh the task's deadline; its live status (None: no live state)."""
        try:
            return store.heard(task_id, now)
        except redis.RedisError as exc:
            raise _unavailable(exc) from exc

    def _rebuild(self, task_id: str, store: SyncTaskStore) -> None:
        """Recreate lost live state from the task's row (TaskNotFound without one)."""
        task = Task.objects.filter(pk=task_id).first()
        if task is None:
            raise TaskNotFound(f"no task {task_id}")
        try:
            store.init(task_id, {**tasks.live_fields(task, rebuilt=True), HEARD: self._wall()})
        except redis.RedisError as exc:
            raise _unavailable(exc) from exc

    def _fields(self, store: SyncTaskStore, task_id: str, names: list[str]) -> list[str | None]:
        try:
            return store.fields(task_id, names)
        except redis.RedisError as exc:
            raise _unavailable(exc) from exc

    def _mark_cancelled(self, task_id: str) -> None:
        with self._cond:
            known = self._known.setdefault(task_id, _Known(used=self._clock()))
            known.cancelled, known.pending = True, None
            self._due.pop(task_id, None)

    def _end(
        self,
        task_id: str,
        status: Status,
        value: float | None,
        result: Any,
        error: str | None,
        code: str | None,
    ) -> int:
        with self._cond:
            known = self._known.pop(task_id, None)
            self._due.pop(task_id, None)
        if known is not None and known.cancelled:
            raise Cancelled(f"task {task_id} was cancelled")
        if value is None and known is not None and known.pending is not None:
            value = known.pending[0]
        store = self._store()
        live_status, progress, seq = self._fields(store, task_id, ["status", "progress", "seq"])
        if live_status is None:
            self._rebuild(task_id, store)
            live_status, progress, seq = self._fields(store, task_id, ["status", "progress", "seq"])
        if live_status == Status.QUEUED.value and status is Status.SUCCEEDED:
            self.begin(task_id)  # a task succeeds only once it ran (it may fail unbegun)
            live_status, progress, seq = self._fields(store, task_id, ["status", "progress", "seq"])
        if live_status == Status.CANCELLED.value:
            raise Cancelled(f"task {task_id} was cancelled")
        bad = result_problem(result) if status is Status.SUCCEEDED else None
        err = None
        if bad is not None:
            status, result, err = Status.FAILED, None, failure("bad_result", bad)
        elif status is Status.FAILED:
            err = failure(code or "task_failed", error or "the task failed")
        shown = float(progress or 0)
        ending = tasks.Ending(
            task_id,
            status,
            max(shown, value) if value is not None else shown,
            result,
            err,
            seq_hint=int(seq or 0),
        )
        try:
            done = tasks.finish_many([ending], store)[0]
        except redis.RedisError as exc:
            raise _unavailable(exc) from exc
        if bad is not None:
            raise ValueError(f"{bad}; the task failed with code 'bad_result'")
        if not done:
            if self._fields(store, task_id, ["status"])[0] == Status.CANCELLED.value:
                raise Cancelled(f"task {task_id} was cancelled")
            return 0
        return int(seq or 0) + 1

    # -- the flusher thread ------------------------------------------------------

    def _wake(self) -> None:
        """Have the flusher publish pending values when due (called holding the lock)."""
        if self._flusher is None or not self._flusher.is_alive():
            self._flusher = threading.Thread(
                target=self._run, name="progrock-push-flusher", daemon=True
            )
            self._flusher.start()
        self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while True:
                    now = self._clock()
                    if self._due:
                        first = min(self._due.values())
                        if first <= now:
                            break
                        self._cond.wait(first - now)
                    else:
                        self._forget(now)
                        self._cond.wait(60)
                due = [task_id for task_id, when in self._due.items() if when <= now]
            self._flush(due)

    def _flush(self, task_ids: list[str]) -> None:
        for task_id in task_ids:
            with self._cond:
                known = self._known.get(task_id)
                self._due.pop(task_id, None)
                if known is None or known.pending is None:
                    continue
                (value, message), known.pending = known.pending, None
                known.sent = self._clock()
            try:
                self._publish(task_id, known, value, message)
            except Cancelled:
                pass  # the task's next report raises it
            except Exception:  # the next report tries again
                logger.exception("publishing the held progress of push task %s failed", task_id)

    def _forget(self, now: float) -> None:
        """Drop what is known of tasks not reported for long (called holding the lock)."""
        if now - self._forgotten_at < 60:
            return
        self._forgotten_at = now
        for task_id in [t for t, k in self._known.items() if now - k.used > _FORGET_AFTER]:
            if task_id not in self._due:
                del self._known[task_id]


def _epoch(iso: str | None) -> float | None:
    if not iso:
        return None
    try:
        return datetime.fromisoformat(iso).timestamp()
    except ValueError:
        return None


def _unavailable(exc: redis.RedisError) -> RedisUnavailable:
    return RedisUnavailable(f"Redis did not answer the producer: {redact(str(exc))}")


# -- one reporter per process ----------------------------------------------------

_reporters: dict[int, Reporter] = {}


def reporter() -> Reporter:
    """This process's reporter (a forked child makes its own: threads and sockets
    do not survive a fork)."""
    pid = os.getpid()
    found = _reporters.get(pid)
    if found is None:
        found = _reporters.setdefault(
            pid, Reporter(lambda: store_for_process(progrock_settings.REDIS_URL))
        )
    return found


os.register_at_fork(after_in_child=_reporters.clear)


def report_end(task_id: str, log: logging.Logger, **report: Any) -> None:
    """Report the end of a task queue's job (for the bridges); a task already over
    (cancelled, lost) keeps its end, and a report that fails is logged on ``log``:
    the job's own outcome stands, and the task fails ``lost`` after PUSH_TIMEOUT."""
    try:
        reporter().report(task_id, **report)
    except (Cancelled, TaskNotFound):
        pass
    except Exception:
        log.exception("could not report the end of task %s", task_id)
