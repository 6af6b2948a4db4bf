"""The sweep: repairs what crashes and lost messages leave behind.

The delay server sends ``{"type": "progrock.sweep"}`` to the worker channel
every ``SWEEP_INTERVAL`` seconds (one sweep per interval across all delay
servers); the worker that receives it

* re-arms running tasks whose poll chain was lost (a worker killed between
  a tick and the next, a flushed delay set): their next tick is overdue by
  more than ``SWEEP_INTERVAL`` seconds. The re-armed tick replaces the lost
  one: if the old tick turns up after all, it is stale and dropped;
* fails tasks stuck in ``queued`` (their start message was lost);
* fails push tasks whose producer was not heard from for ``PUSH_TIMEOUT``
  seconds (``lost``: it died, or its task never reached Redis), and queued
  push tasks (a task queue's job not begun) older than ``QUEUED_PUSH_TIMEOUT``
  (``lost``: the queue lost the job);
* announces ends that the database has but live state lacks (a crash
  between the database write and the announcement);
* with ``PROGROCK["RETENTION"]`` set, deletes the rows of tasks that ended
  longer ago than that, a bounded batch per sweep (:mod:`progrock.retention`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from datetime import UTC, datetime

from asgiref.sync import sync_to_async
from django.db.models import QuerySet

from progrock import metrics, retention
from progrock.conf import progrock_settings
from progrock.models import Task
from progrock.protocol import ACTIVE, TERMINAL, Status, failure
from progrock.state import tasks
from progrock.state.live import Change, TaskStore
from progrock.state.scripts import HEARD
from progrock.tuning import QUEUED_PUSH_TIMEOUT
from progrock.worker import start_watch
from progrock.worker.context import Worker
from progrock.worker.schedule import schedule_ticks
from progrock.worker.ticks import Tick, on_grid

logger = logging.getLogger("progrock.worker")


# -- sweep --------------------------------------------------------------


async def sweep(worker: Worker) -> int:
    """Repair what crashes and lost messages left behind; returns how many poll
    chains it re-armed."""
    stall = progrock_settings.SWEEP_INTERVAL
    now = time.time()
    active = Task.objects.filter(status__in=[s.value for s in ACTIVE], push=False)
    # One thread hop for the whole scan (async iteration hops per 100 rows).
    scan = active.values_list("id", "status", "backend_ref")[:10_000]
    found = await sync_to_async(lambda: list(scan))()
    rows = [(str(pk), status, ref) for pk, status, ref in found]
    running = [pk for pk, status, ref in rows if status == Status.RUNNING.value and ref]
    # A live chain keeps moving the task's next due tick ('nd') forward; one
    # overdue by more than SWEEP_INTERVAL was lost (or its worker died). A task
    # with no 'nd' yet (rebuilt) was due one interval after its last poll.
    # Checked in Redis: at thousands of running tasks, decoding every task's
    # fields here cost a worker about 0.1 s of CPU per sweep, held up polls.
    now_ms = now * 1000
    missing, stalled = await worker.store.overdue(
        running, now_ms - stall * 1000, worker.cadence.interval_ms
    )
    rearm: list[Tick] = []
    due = on_grid(now_ms, worker.cadence.grid_ms)  # every re-armed chain's new tick
    try:
        for task_id, expected in [*missing.items(), *stalled.items()]:
            try:
                if task_id in missing:
                    # Rebuilt from the row; 'nd' (if any) stays, and is what
                    # the re-arm must find.
                    await tasks.arebuild(task_id, worker.store)
                if await worker.store.rearm(task_id, expected, due):
                    rearm.append(Tick(task_id, due))
            except Exception:
                # One task must not stop the repair of the others.
                logger.exception("sweep could not repair the poll chain of %s", task_id)
    finally:
        # Every chain moved on above gets its tick, whatever happened after.
        await schedule_ticks(worker, rearm)
    if rearm:
        metrics.SWEEP_REPAIRS.labels("rearmed").inc(len(rearm))
        logger.warning(
            "sweep re-armed %d stalled poll chains",
            len(rearm),
            extra={"event": "sweep_rearmed", "count": len(rearm)},
        )
    await _sweep_queued(worker, rows, now)
    await sweep_push(worker.store, now)
    await _sweep_unannounced(worker, now)
    await sweep_retention(progrock_settings.RETENTION)
    return len(rearm)


async def sweep_retention(seconds: float | None, limit: int = retention.SWEEP_BATCH) -> int:
    """Delete up to ``limit`` rows of tasks that ended more than ``seconds`` ago
    (``PROGROCK["RETENTION"]``; None keeps every row); the next sweep goes on."""
    if seconds is None:
        return 0
    try:
        deleted = await sync_to_async(retention.delete_ended)(seconds, limit=limit)
    except Exception:  # the repairs above matter more: log it, try again next sweep
        logger.exception("sweep could not delete old task rows")
        return 0
    if deleted:
        metrics.SWEEP_REPAIRS.labels("retention_deleted").inc(deleted)
        logger.info(
            "sweep deleted %d rows of tasks that ended long ago",
            deleted,
            extra={"event": "sweep_retention", "count": deleted},
        )
    return deleted


async def _sweep_queued(
    worker: Worker, rows: Sequence[tuple[str, str, str | None]], now: float
) -> None:
    """Fail tasks stuck in ``queued``: their start was lost (expired, or a worker died).

    Only a task that this worker's sweeps have found without a start watchdog
    for at least ``SWEEP_INTERVAL`` seconds (two sweeps, however closely a
    backed-up channel delivered them): a watchdog that has just fired is on
    its way through the worker channel (not in the delay store) until a worker
    takes and re-arms it. And only while its row is still queued: one
    started meanwhile is left alone.
    """
    stuck_after = progrock_settings.FAILURE_BUDGET + progrock_settings.SWEEP_INTERVAL
    queued = [pk for pk, status, _ in rows if status == Status.QUEUED.value]
    cutoff = datetime.fromtimestamp(now - stuck_after, UTC)
    stuck = [
        t async for t in Task.objects.filter(pk__in=queued, created_at__lt=cutoff).only("id", "seq")
    ]
    unwatched: dict[str, float] = {}
    for task in stuck:
        if not await worker.delay.has_pending(start_watch.watch_key(str(task.pk))):
            unwatched[str(task.pk)] = worker.unwatched.get(str(task.pk), now)
    patience = progrock_settings.SWEEP_INTERVAL
    lost = [t for t in stuck if now - unwatched.get(str(t.pk), now) >= patience]
    for task in lost:
        unwatched.pop(str(task.pk))
    worker.unwatched.clear()  # what this sweep found is what the next one compares with
    worker.unwatched.update(unwatched)
    if not lost:
        return
    metrics.SWEEP_REPAIRS.labels("not_started").inc(len(lost))
    for task in lost:
        logger.warning(
            "task %s never started; failing it",
            task.pk,
            extra={"task_id": str(task.pk), "event": "sweep_not_started"},
        )
    await tasks.afinish_many(
        [
            tasks.Ending(
                str(task.pk),
                Status.FAILED,
                seq_hint=task.seq,
                error=failure("not_started", f"the task did not start within {stuck_after:.0f}s"),
            )
            for task in lost
        ],
        worker.store,
        from_statuses=(Status.QUEUED,),
    )


async def sweep_push(
    store: TaskStore, now: float, queued_timeout: float = QUEUED_PUSH_TIMEOUT
) -> list[str]:
    """Fail running push tasks not heard from for ``PUSH_TIMEOUT`` seconds (``lost``),
    and push tasks still ``queued`` (their job never began) ``queued_timeout``
    seconds after they were created.

    A task's producer is heard from at its start and at each report or
    keep-alive (live-state field ``hb``). A task without live state that never
    reached Redis (row ``seq`` 0: its start met a Redis outage) counts from its
    start; one whose live state Redis lost is rebuilt and given a new
    ``PUSH_TIMEOUT`` (its producer may be alive, and rebuilds on its next
    report). Returns the ids of the tasks it failed.
    """
    never = await _sweep_never_started(store, now, queued_timeout)
    timeout = progrock_settings.PUSH_TIMEOUT
    scan = Task.objects.filter(status=Status.RUNNING.value, push=True).values_list(
        "id", "seq", "started_at", "created_at"
    )[:10_000]
    rows = await sync_to_async(lambda: list(scan))()
    if not rows:
        return never
    live = await store.load_fields([str(r[0]) for r in rows], ["status", HEARD, "progress", "seq"])
    lost: list[tasks.Ending] = []
    for pk, seq, started, created in rows:
        task_id, shown_seq = str(pk), int(seq)
        began = (started or created).timestamp()
        fields = live.get(task_id)
        if fields is None or "status" not in fields:
            if seq:  # Redis lost it: rebuild, and wait for the producer's next word
                await tasks.arebuild(task_id, store)
                await store.init(task_id, {HEARD: now})
                continue
            heard, progress = began, 0.0
        else:
            heard = _float(fields.get(HEARD)) or began
            progress, shown_seq = _float(fields.get("progress")) or 0.0, int(fields.get("seq") or 0)
        if now - heard >= timeout:
            detail = f"the task's producer sent nothing for {now - heard:.0f}s (PUSH_TIMEOUT)"
            lost.append(
                tasks.Ending(
                    task_id,
                    Status.FAILED,
                    progress,
                    error=failure("lost", detail),
                    seq_hint=max(seq, shown_seq),
                )
            )
    if lost:
        logger.warning("failing %d push tasks not heard from in %.0fs", len(lost), timeout)
        await tasks.afinish_many(lost, store, from_statuses=(Status.RUNNING,))
    return never + [e.task_id for e in lost]


async def _sweep_never_started(store: TaskStore, now: float, timeout: float) -> list[str]:
    """Fail push tasks queued for ``timeout`` seconds (``lost``: their job never began)."""
    cutoff = datetime.fromtimestamp(now - timeout, UTC)
    scan = Task.objects.filter(
        status=Status.QUEUED.value, push=True, created_at__lt=cutoff
    ).values_list("id", "seq")[:10_000]
    rows = await sync_to_async(lambda: list(scan))()
    if not rows:
        return []
    detail = f"the task's job never started: it was queued for more than {timeout:.0f}s"
    endings = [
        tasks.Ending(str(pk), Status.FAILED, error=failure("lost", detail), seq_hint=seq)
        for pk, seq in rows
    ]
    logger.warning("failing %d push tasks whose job never started", len(endings))
    done = await tasks.afinish_many(endings, store, from_statuses=(Status.QUEUED,))
    return [e.task_id for e, ok in zip(endings, done, strict=True) if ok]


def _float(text: str | None) -> float | None:
    try:
        return float(text) if text else None
    except ValueError:
        return None


def recently_finished(since: float, limit: int = 1000) -> QuerySet[Task]:
    """Tasks ended since ``since`` (epoch seconds), newest first: a range of the
    ``finished_at`` index, however many ended tasks the table has kept."""
    return Task.objects.filter(
        finished_at__gte=datetime.fromtimestamp(since, UTC),
        status__in=[s.value for s in TERMINAL],
    ).order_by("-finished_at")[:limit]


async def _sweep_unannounced(worker: Worker, now: float) -> None:
    """Announce recent ends that the database has but live state lacks (a crash
    between the two); APPLY refuses anything a second time."""
    finished = [t async for t in recently_finished(now - 600)]
    # Per task whose live status is not its row's: whether it has live state at all.
    differ = await worker.store.status_differs([(str(t.pk), t.status) for t in finished])
    for task in finished:
        has_state = differ.get(str(task.pk))
        if has_state is None:
            continue
        view = task.view()
        message = view.terminal()
        if message is None:  # pragma: no cover - filtered on terminal statuses
            continue
        message.pop("seq", None)
        if not has_state:
            before = tasks.live_fields(task, rebuilt=True)
            before["status"] = Status.RUNNING.value
            if not await worker.store.init_if_absent(str(task.pk), before):
                continue  # someone rebuilt it meanwhile
        await worker.store.apply(
            Change(
                str(task.pk),
                message,
                view.status,
                view.progress,
                {
                    "finished_at": view.finished_at,
                    "result": task.result,
                    "error": task.error,
                },
            )
        )
        metrics.SWEEP_REPAIRS.labels("unannounced").inc()
        extra = {"task_id": str(task.pk), "event": "sweep_unannounced"}
        if not has_state:
            # Routine: live state expires, and a new or flushed Redis has none.
            logger.info(
                "task %s ended (%s) but Redis had no live state for it (expired, or Redis "
                "restarted empty): rebuilt from its row; nothing was lost",
                task.pk,
                view.status,
                extra=extra,
            )
        else:
            logger.warning(
                "task %s ended (%s) in the database but Redis still showed it active "
                "(a process stopped between the two writes): its end is now sent to the "
                "pages watching it; nothing was lost",
                task.pk,
                view.status,
                extra=extra,
            )
