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
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from asgiref.sync import sync_to_async

from progrock import exceptions
from progrock.conf import progrock_settings
from progrock.delay.store import now_ms
from progrock.exceptions import ServiceError, ServiceRejected
from progrock.models import Task
from progrock.protocol import Status, backoff, failure, started_message
from progrock.services.base import ServiceStatus
from progrock.state import tasks
from progrock.state.live import UNKNOWN, Change
from progrock.worker import start_watch
from progrock.worker.phase import first_due

if TYPE_CHECKING:
    from progrock.worker.engine import Engine

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


async def start_many(engine: Engine, messages: Sequence[Mapping[str, Any]]) -> None:
    """Start the tasks of a batch of ``progrock.start`` messages."""
    began = now_ms()  # how long the batch takes to prepare is learnt (progrock.worker.phase)
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
    async with engine.store.redis.pipeline(transaction=False) as pipe:
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
        await start_watch.disarm(engine.delay, refused)
    if not batch:
        return
    # From now on this worker carries the starts: their watchdogs restart.
    await start_watch.arm(engine.delay, [r.message for r in batch])
    settled: list[str] = []  # task ids whose watchdog can go
    try:
        await _start_batch(engine, batch, settled, began)
    finally:
        if settled:
            await start_watch.disarm(engine.delay, settled)


async def _start_batch(
    engine: Engine, batch: list[StartRequest], settled: list[str], began: float
) -> None:
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
    if refused:
        settled.extend(r.task_id for r, _ in refused)
        # Marked before the client hears of it: no later attempt may start it.
        async with engine.store.redis.pipeline(transaction=False) as pipe:
            for r, _ in refused:
                pipe.set(
                    start_watch.refused_key(progrock_settings.KEY_PREFIX, r.task_id), b"1", ex=3600
                )
            await pipe.execute()
        for r, exc in refused:
            await engine.reply_error(
                r.reply, "too_many_tasks", str(exc), action="start", task_id=r.task_id, ref=r.ref
            )
    if expired:
        # Another attempt may have started the task meanwhile: fail only rows
        # still queued (their live state too may be theirs: only if absent).
        still = await _still_queued([r.task_id for r, _ in expired])
        settled.extend(r.task_id for r, _ in expired)
        expired = [(r, task) for r, task in expired if r.task_id in still]
        for r, task in expired:
            await engine.store.init_if_absent(r.task_id, tasks.live_fields(task))
        await tasks.afinish_many(
            [
                tasks.Ending(
                    r.task_id,
                    Status.FAILED,
                    error=failure(
                        "not_started",
                        f"no worker started the task in {r.attempt} attempts over "
                        f"{progrock_settings.FAILURE_BUDGET:g}s",
                    ),
                )
                for r, _ in expired
            ],
            engine.store,
            from_statuses=(Status.QUEUED,),
        )
    if not queued:
        return
    # Not over a live state that another attempt of this start has moved on.
    await engine.store.init_queued({r.task_id: tasks.live_fields(task) for r, task in queued})

    # Under light load, just before a point of the start grid, so the first
    # polls come right after the backend's first steps (see progrock.worker.phase).
    # Not under heavy load: batches sent at the same instants would crowd a
    # few phases. The latencies count from the planned send time, so that
    # they include how late the event loop wakes up.
    planned = now_ms()
    prepared = planned - began
    engine.prep_lead.record(planned, [prepared])
    grid = engine.start_grid_ms(planned)
    fine = engine.tick_grid_ms
    wait = engine.create_wait_ms(planned, grid)
    # How far before its grid point a create sent in time is answered.
    slack = 0.0 if wait is None else engine.create_lead.lead_ms(planned)
    if wait:
        planned += wait
        await asyncio.sleep(wait / 1000)
    results = await _create(engine, [r for r, _ in queued])
    answered = now_ms()  # the backend's own clock for the tasks had started by then
    if any(isinstance(result, ServiceStatus) for result in results):
        # (A call that created nothing tells nothing of how long creates take.)
        engine.create_lead.record(answered, [answered - planned])
    due = first_due(answered, engine.interval_ms, grid, fine, slack, engine.tick_align_ms)
    if logger.isEnabledFor(logging.DEBUG):
        aimed = (
            "not aimed"
            if wait is None
            else f"answered {planned + slack - answered:.1f} ms before the point it aimed at"
        )
        logger.debug(
            "start batch of %d: prepared in %.1f ms, created in %.1f ms, %s; "
            "first tick %.1f ms after the answer",
            len(queued),
            prepared,
            answered - planned,
            aimed,
            due - answered,
        )
    created: list[tuple[StartRequest, ServiceStatus, float]] = []
    endings: list[tasks.Ending] = []
    retries: list[dict[str, Any]] = []
    for (r, _), result in zip(queued, results, strict=True):
        if isinstance(result, ServiceStatus):
            created.append((r, result, due))
        elif isinstance(result, ServiceRejected):
            settled.append(r.task_id)
            endings.append(
                tasks.Ending(
                    r.task_id, Status.FAILED, error=failure("backend_rejected", result.detail)
                )
            )
        elif isinstance(result, ServiceError):
            first = float(r.message.get("first_failure") or time.time())
            if time.time() - first > progrock_settings.FAILURE_BUDGET:
                settled.append(r.task_id)
                endings.append(
                    tasks.Ending(
                        r.task_id, Status.FAILED, error=failure("backend_unreachable", str(result))
                    )
                )
                continue
            delay = backoff(
                r.attempt + 1, progrock_settings.RETRY_BASE, progrock_settings.RETRY_MAX
            )
            logger.warning("start of %s failed (%s); retrying in %.1fs", r.task_id, result, delay)
            retries.append(
                {
                    "channel": progrock_settings.WORKER_CHANNEL,
                    "content": {
                        **r.message,
                        "attempt": r.attempt + 1,
                        "first_failure": first,
                        "nonce": start_watch.nonce(),
                    },
                    "delay": delay * 1000,
                    "key": start_watch.watch_key(r.task_id),  # replaces the watchdog
                    "merge": False,
                }
            )
        else:
            # A bug in the service: the task stays queued; its watchdog tries again.
            logger.error("starting %s failed", r.task_id, exc_info=result)
    try:
        await _announce_started(engine, created)
        settled.extend(r.task_id for r, _, _ in created)
    finally:
        if retries:
            await engine.delay.schedule_many(retries)
        if endings:
            # Only rows still queued: a racing attempt may have started the task.
            await tasks.afinish_many(endings, engine.store, from_statuses=(Status.QUEUED,))


async def _create(
    engine: Engine, batch: Sequence[StartRequest]
) -> Sequence[ServiceStatus | BaseException]:
    """Create a batch's backend tasks: one entry per start, a status or what was raised.

    In one call where the service offers ``create_many`` (the HTTP service:
    ``POST /tasks/batch``), else one ``create`` per start, concurrently.
    """
    create_many = getattr(engine.service, "create_many", None)
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
        *(engine.service.create(r.kind, r.params, key=r.task_id) for r in batch),
        return_exceptions=True,
    )


async def _still_queued(task_ids: Sequence[str]) -> set[str]:
    rows = Task.objects.filter(pk__in=task_ids, status=Status.QUEUED.value)
    return {str(pk) async for pk in rows.values_list("pk", flat=True)}


async def _announce_started(
    engine: Engine, created: Sequence[tuple[StartRequest, ServiceStatus, float]]
) -> None:
    if not created:
        return
    started = datetime.now(UTC)
    updated = await sync_to_async(tasks.mark_running)(
        [(r.task_id, status.ref) for r, status, _ in created], started
    )
    # False: cancelled or ended while the backend was creating them (or another
    # attempt got a different backend task); None: another attempt of this
    # start already runs it with this very backend task.
    gone = [status.ref for (_, status, _), ok in zip(created, updated, strict=True) if ok is False]
    if gone:
        await asyncio.gather(*(engine.cancel_backend(ref) for ref in gone))
    from progrock.worker.polls import Tick

    now, clock_ms = time.time(), now_ms()
    first: list[Tick] = []
    changes: list[Change] = []
    for (r, status, due_ms), ok in zip(created, updated, strict=True):
        if ok is not True:
            continue
        # The first poll is one interval after the backend created the task,
        # in phase with a backend that steps on that interval (already due if
        # this start took longer than that; skipped ahead only past two).
        tick = Tick(r.task_id, engine.first_tick(due_ms, clock_ms))
        first.append(tick)
        changes.append(
            Change(
                r.task_id,
                started_message(r.task_id, r.kind),
                Status.RUNNING,
                0,
                {
                    "ref": status.ref,
                    "started_at": started.isoformat(),
                    "rp": 0.0,
                    "rt": now,
                    "lp": now,
                    "dbt": now,
                    "nd": tick.due_ms,
                },
            )
        )
    replies = await engine.store.apply_many(changes)
    for change, reply in zip(changes, replies, strict=True):
        if reply == UNKNOWN:
            await tasks.arebuild(change.task_id, engine.store)
    await engine.schedule_ticks(first)
