"""Starting tasks: what a worker does with ``progrock.start`` messages, in batches.

A burst of starts (a page opened by many users at once) is handled as a
batch: one Redis round trip claims them, one thread hop writes their rows and
applies the owner limit, the backend creates them in one call (the service's
``create_many``, where it has one; else concurrent ``create`` calls), one
transaction marks them running and one Redis call announces ``started`` for
all of them. A batch of one behaves exactly like a single start.

Each start's watchdog (:mod:`progrock.worker.start_watch`) is re-armed when the
batch is taken and dropped once its task runs, has ended or was refused, so a
start lost with a killed worker is forwarded again.

A new task's first poll tick is due one ``POLL_INTERVAL`` after the backend
answered its create, rounded up to the tick grid
(:func:`progrock.worker.ticks.first_due`).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from asgiref.sync import sync_to_async

from progrock import exceptions, metrics
from progrock.conf import progrock_settings
from progrock.delay.store import now_ms
from progrock.exceptions import ServiceError, ServiceRejected
from progrock.models import Task
from progrock.protocol import WORKER_CHANNEL, Status, backoff, failure, started_message
from progrock.services.base import ServiceStatus, TaskService
from progrock.state import tasks
from progrock.state.live import UNKNOWN, Change
from progrock.state.scripts import DB_WRITTEN, LAST_POLL, NEXT_DUE, RATE_PROGRESS, RATE_TIME
from progrock.tuning import RETRY_BASE, RETRY_MAX
from progrock.worker import start_watch
from progrock.worker.cancel import cancel_backend
from progrock.worker.context import Worker
from progrock.worker.reply import reply_error
from progrock.worker.schedule import schedule_ticks
from progrock.worker.ticks import Tick, first_due

logger = logging.getLogger("progrock.worker")


@dataclass(frozen=True, slots=True)
class StartRequest:
    """A validated ``progrock.start`` message."""

    task_id: str
    kind: str
    params: dict[str, Any]
    owner: str
    message: Mapping[str, Any]

    @property
    def reply(self) -> object:
        return self.message.get("reply_channel")

    @property
    def ref(self) -> object:
        return self.message.get("ref")

    @property
    def attempt(self) -> int:
        return int(self.message.get("attempt") or 0)

    @property
    def claim_id(self) -> str:
        """What a worker claims this message by (its nonce; older messages: the attempt)."""
        return str(self.message.get("nonce") or self.attempt)


def parse_start(message: Mapping[str, Any]) -> StartRequest | None:
    """The start request, or None (logged) if the message is malformed."""
    try:
        task_id = str(uuid.UUID(str(message["task_id"])))
        kind, params, owner = message["kind"], message.get("params") or {}, message["owner"]
        if not (isinstance(kind, str) and isinstance(params, dict) and isinstance(owner, str)):
            raise TypeError("kind, params, owner must be str, dict, str")
        int(message.get("attempt") or 0)
        float(message.get("first_failure") or 0)
        float(message.get("lost_since") or 0)
    except (KeyError, ValueError, TypeError) as exc:
        logger.error("dropping malformed start message %.300r: %s", message, exc)
        return None
    return StartRequest(task_id, kind, params, owner, message)


async def start_many(worker: Worker, messages: Sequence[Mapping[str, Any]]) -> None:
    """Start the tasks of a batch of ``progrock.start`` messages."""
    requests: dict[str, StartRequest] = {}
    for message in messages:
        request = parse_start(message)
        if request is not None:
            requests.setdefault(request.task_id, request)
    if not requests:
        return
    # channels_redis's own layer may hand one message to two workers (its backup
    # queue is shared by every consumer of a channel; progrock.contrib.layer has none,
    # but a deployment may mix them): only the first one may start it.
    # A start refused for the owner's limit stays refused (later attempts).
    prefix = progrock_settings.KEY_PREFIX
    async with worker.store.redis.pipeline(transaction=False) as pipe:
        for r in requests.values():
            pipe.set(start_watch.claim_key(prefix, r.task_id, r.claim_id), b"1", nx=True, ex=3600)
            pipe.exists(start_watch.refused_key(prefix, r.task_id))
        replies = await pipe.execute()
    batch: list[StartRequest] = []
    refused: list[str] = []
    for i, r in enumerate(requests.values()):
        if replies[2 * i] and replies[2 * i + 1]:
            refused.append(r.task_id)
        elif replies[2 * i]:
            batch.append(r)
    if refused:
        await start_watch.disarm(worker.delay, refused)
    if not batch:
        return
    # From now on this worker carries the starts: their watchdogs restart.
    await start_watch.arm(worker.delay, [r.message for r in batch])
    settled: list[str] = []  # task ids whose watchdog can go
    try:
        await _start_batch(worker, batch, settled)
    finally:
        if settled:
            await start_watch.disarm(worker.delay, settled)


async def _start_batch(worker: Worker, batch: list[StartRequest], settled: list[str]) -> None:
    """Admit a batch's rows, create their backend tasks and announce them; ``settled``
    gets the task ids whose watchdog can go."""
    admitted = await sync_to_async(tasks.admit_many)(
        [(r.task_id, r.owner, r.kind, r.params) for r in batch]
    )
    queued: list[tuple[StartRequest, Task]] = []
    expired: list[tuple[StartRequest, Task]] = []
    refused: list[tuple[StartRequest, exceptions.TooManyTasks]] = []
    now = time.time()
    for r, found in zip(batch, admitted, strict=True):
        if isinstance(found, exceptions.TooManyTasks):
            refused.append((r, found))
        elif found.status != Status.QUEUED.value:
            settled.append(r.task_id)  # a duplicate start: the task is under way or over
        elif start_watch.budget_spent(r.message, now):
            expired.append((r, found))  # earlier attempts were lost or failed for too long
        else:
            queued.append((r, found))
    settled.extend(r.task_id for r, _ in refused)
    await _refuse(worker, refused)
    await _fail_expired(worker, expired, settled)
    if not queued:
        return
    # Not over a live state that another attempt of this start has moved on.
    await worker.store.init_queued({r.task_id: tasks.live_fields(task) for r, task in queued})
    asked = now_ms()
    results = await _create(worker.service, [r for r, _ in queued])
    answered = now_ms()  # the backend's own clock for the tasks had started by then
    outcome = CreateOutcome.sort([r for r, _ in queued], results, time.time())
    settled.extend(outcome.settled)
    if logger.isEnabledFor(logging.DEBUG):
        logger.debug(
            "start batch of %d: created %d in %.1f ms",
            len(queued),
            len(outcome.created),
            answered - asked,
        )
    try:
        await _announce_started(worker, outcome.created, answered)
        settled.extend(r.task_id for r, _ in outcome.created)
    finally:
        if outcome.retries:
            await worker.delay.schedule_many(outcome.retries)
        if outcome.endings:
            # Only rows still queued: a racing attempt may have started the task.
            await tasks.afinish_many(outcome.endings, worker.store, from_statuses=(Status.QUEUED,))


async def _refuse(
    worker: Worker, refused: Sequence[tuple[StartRequest, exceptions.TooManyTasks]]
) -> None:
    """Mark starts refused for the owner's limit, then tell their sockets."""
    if not refused:
        return
    # Marked before the client hears of it: no later attempt may start it.
    async with worker.store.redis.pipeline(transaction=False) as pipe:
        for r, _ in refused:
            pipe.set(
                start_watch.refused_key(progrock_settings.KEY_PREFIX, r.task_id), b"1", ex=3600
            )
        await pipe.execute()
    for r, exc in refused:
        await reply_error(
            r.reply, "too_many_tasks", str(exc), action="start", task_id=r.task_id, ref=r.ref
        )


async def _fail_expired(
    worker: Worker, expired: Sequence[tuple[StartRequest, Task]], settled: list[str]
) -> None:
    """Fail the tasks of starts lost for longer than the failure budget: ``not_started``."""
    if not expired:
        return
    # Another attempt may have started the task meanwhile: fail only rows
    # still queued (their live state too may be theirs: only if absent).
    still = await _still_queued([r.task_id for r, _ in expired])
    settled.extend(r.task_id for r, _ in expired)
    expired = [(r, task) for r, task in expired if r.task_id in still]
    for r, task in expired:
        await worker.store.init_if_absent(r.task_id, tasks.live_fields(task))
    budget = progrock_settings.FAILURE_BUDGET
    await tasks.afinish_many(
        [
            tasks.Ending(
                r.task_id,
                Status.FAILED,
                error=failure(
                    "not_started",
                    f"no worker started the task in {r.attempt} attempts over {budget:g}s",
                ),
            )
            for r, _ in expired
        ],
        worker.store,
        from_statuses=(Status.QUEUED,),
    )


@dataclass(slots=True)
class CreateOutcome:
    """What the backend's answers to a batch's creates lead to (decided without I/O)."""

    created: list[tuple[StartRequest, ServiceStatus]] = field(default_factory=list)
    endings: list[tasks.Ending] = field(default_factory=list)  # failed for good
    retries: list[dict[str, Any]] = field(default_factory=list)  # delay-store envelopes
    settled: list[str] = field(default_factory=list)  # task ids whose watchdog can go

    @classmethod
    def sort(
        cls,
        requests: Sequence[StartRequest],
        results: Sequence[ServiceStatus | BaseException],
        now: float,
    ) -> CreateOutcome:
        """Created, failed for good (rejected, or unreachable past the failure budget),
        to retry with backoff, or left to the watchdog (a bug in the service, logged)."""
        out = cls()
        for r, result in zip(requests, results, strict=True):
            if isinstance(result, ServiceStatus):
                out.created.append((r, result))
            elif isinstance(result, ServiceRejected):
                out.settled.append(r.task_id)
                error = failure("backend_rejected", result.detail)
                out.endings.append(tasks.Ending(r.task_id, Status.FAILED, error=error))
            elif isinstance(result, ServiceError):
                first = float(r.message.get("first_failure") or now)
                if now - first > progrock_settings.FAILURE_BUDGET:
                    out.settled.append(r.task_id)
                    error = failure("backend_unreachable", str(result))
                    out.endings.append(tasks.Ending(r.task_id, Status.FAILED, error=error))
                else:
                    out.retries.append(_retry(r, result, first))
            else:
                # A bug in the service: the task stays queued; its watchdog tries again.
                logger.error(
                    "starting %s failed",
                    r.task_id,
                    exc_info=result,
                    extra={"task_id": r.task_id, "event": "start_error"},
                )
        return out


def _retry(r: StartRequest, error: ServiceError, first_failure: float) -> dict[str, Any]:
    """The delayed next attempt of a start whose create failed transiently."""
    delay = backoff(r.attempt + 1, RETRY_BASE, RETRY_MAX)
    logger.warning(
        "start of %s failed (%s); retrying in %.1fs",
        r.task_id,
        error,
        delay,
        extra={"task_id": r.task_id, "event": "start_retry"},
    )
    return {
        "channel": WORKER_CHANNEL,
        "content": {
            **r.message,
            "attempt": r.attempt + 1,
            "first_failure": first_failure,
            "nonce": start_watch.nonce(),
        },
        "delay": delay * 1000,
        "key": start_watch.watch_key(r.task_id),  # replaces the watchdog
        "merge": False,
    }


async def _create(
    service: TaskService, batch: Sequence[StartRequest]
) -> Sequence[ServiceStatus | BaseException]:
    """Create a batch's backend tasks: one entry per start, a status or what was raised.

    In one call where the service offers ``create_many`` (the HTTP service:
    ``POST /tasks/batch``), else one ``create`` per start, concurrently.
    """
    create_many = getattr(service, "create_many", None)
    if create_many is not None:
        try:
            answers = await create_many([(r.kind, r.params, r.task_id) for r in batch])
        except ServiceError as exc:  # the whole call failed, transiently: retried
            return [exc] * len(batch)
        except Exception:
            # A bug in the service's create_many must not fail every start of
            # the batch: each one goes through create, which keeps it to its own.
            logger.exception("create_many of %d tasks failed; creating them one by one", len(batch))
        else:
            if len(answers) == len(batch):
                return list(answers)
            logger.error(
                "create_many answered %d entries for %d creates; creating them one by one",
                len(answers),
                len(batch),
            )
    # The task ids are the idempotency keys: a create the failed call made is found again.
    return await asyncio.gather(
        *(service.create(r.kind, r.params, key=r.task_id) for r in batch),
        return_exceptions=True,
    )


async def _still_queued(task_ids: Sequence[str]) -> set[str]:
    rows = Task.objects.filter(pk__in=task_ids, status=Status.QUEUED.value)
    return {str(pk) async for pk in rows.values_list("pk", flat=True)}


async def _announce_started(
    worker: Worker, created: Sequence[tuple[StartRequest, ServiceStatus]], answered_ms: float
) -> None:
    """Mark created tasks running, announce ``started`` and schedule their first ticks."""
    if not created:
        return
    started = datetime.now(UTC)
    updated = await sync_to_async(tasks.mark_running)(
        [(r.task_id, status.ref) for r, status in created], started
    )
    # False: cancelled or ended while the backend was creating them (or another
    # attempt got a different backend task); None: another attempt of this
    # start already runs it with this very backend task.
    gone = [status.ref for (_, status), ok in zip(created, updated, strict=True) if ok is False]
    if gone:
        await asyncio.gather(*(cancel_backend(worker.service, ref) for ref in gone))
    # The first poll is one interval after the backend created the tasks, in
    # phase with a backend that steps on that interval (already due if this
    # start took longer than that; skipped ahead only past two).
    cadence = worker.cadence
    now, due = time.time(), first_due(answered_ms, now_ms(), cadence.interval_ms, cadence.grid_ms)
    first: list[Tick] = []
    changes: list[Change] = []
    for (r, status), ok in zip(created, updated, strict=True):
        if ok is not True:
            continue
        metrics.TASKS_STARTED.labels(metrics.kind_label(r.kind)).inc()
        first.append(Tick(r.task_id, due))
        changes.append(
            Change(
                r.task_id,
                started_message(r.task_id, r.kind),
                Status.RUNNING,
                0,
                {
                    "ref": status.ref,
                    "started_at": started.isoformat(),
                    RATE_PROGRESS: 0.0,
                    RATE_TIME: now,
                    LAST_POLL: now,
                    DB_WRITTEN: now,
                    NEXT_DUE: due,
                },
            )
        )
    replies = await worker.store.apply_many(changes)
    for change, reply in zip(changes, replies, strict=True):
        if reply == UNKNOWN:
            await tasks.arebuild(change.task_id, worker.store)
    await schedule_ticks(worker, first)
