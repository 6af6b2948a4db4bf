"""Task state changes that write the database row and the live state together.

Admitting new tasks under the owner's limit, marking them running, and
recording their ends; used by the worker and by the Python API.
"""

from __future__ import annotations

import bisect
import uuid
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Final

from asgiref.sync import sync_to_async
from django.db import IntegrityError, transaction

from progrock import metrics
from progrock.conf import progrock_settings
from progrock.exceptions import InvalidTransition, TooManyTasks
from progrock.models import Task
from progrock.protocol import (
    ACTIVE,
    TERMINAL,
    Status,
    canonical_task_id,
    clamp_progress,
    terminal_message,
)
from progrock.state.live import UNKNOWN, Change, TaskStore
from progrock.state.rows import ended_statuses, update_each, update_each_guarded, write_alias
from progrock.state.sync_store import SyncTaskStore
from progrock.tuning import REBUILD_SEQ_MARGIN

# -- state changes shared by worker and push API ------------------------------------

# The status moves of task rows, as the SQL guards below enforce them: from
# which statuses a row may be marked running, and ended with each terminal
# status. They are the moves progrock.protocol.TRANSITIONS allows
# (tests/unit/test_transitions.py holds them to it).
RUN_FROM: Final = frozenset({Status.QUEUED})
END_FROM: Final[Mapping[Status, frozenset[Status]]] = {
    Status.SUCCEEDED: frozenset({Status.RUNNING}),  # a task succeeds only once it ran
    Status.FAILED: frozenset({Status.QUEUED, Status.RUNNING}),
    Status.CANCELLED: frozenset({Status.QUEUED, Status.RUNNING}),
}


def live_fields(task: Task, *, rebuilt: bool = False) -> dict[str, Any]:
    """The live-state hash of a task from its row (``rebuilt``: after live state was lost)."""
    view = task.view()
    return {
        "status": task.status,
        "kind": task.kind,
        "owner": task.owner,
        "ref": task.backend_ref or "",
        "push": task.push,
        "progress": clamp_progress(task.progress),
        "seq": task.seq + REBUILD_SEQ_MARGIN if rebuilt else task.seq,
        "message": task.message,
        "result": task.result,
        "error": task.error,
        "created_at": view.created_at,
        "started_at": view.started_at,
        "finished_at": view.finished_at,
    }


async def arebuild(task_id: str, store: TaskStore) -> Task | None:
    """Recreate a task's live state from the database (after a Redis loss)."""
    task = await Task.objects.filter(pk=task_id).afirst()
    if task is not None:
        await store.init(task_id, live_fields(task, rebuilt=True))
    return task


@dataclass(frozen=True, slots=True)
class Ending:
    """A task's move to a terminal state, as :func:`afinish_many` records it."""

    task_id: str
    status: Status
    progress: float = 0
    result: Any = None
    error: Mapping[str, str] | None = None
    seq_hint: int = 0  # the seq the caller last saw (the database copy is set past it)


def _write_endings(
    endings: Sequence[Ending], finished: datetime, from_statuses: Collection[Status] = ACTIVE
) -> list[bool]:
    """Write ends to rows still in ``from_statuses`` (by default: active) from which
    their end may follow (:data:`END_FROM`), in one transaction; which rows moved.

    One conditional UPDATE sent once per row with ``executemany``
    (:func:`progrock.state.rows.update_each_guarded`), then one plain SELECT per
    200 rows (:func:`progrock.state.rows.ended_statuses`).
    """
    guards = {
        status: [s.value for s in sorted(sources & set(from_statuses))]
        for status, sources in END_FROM.items()
    }
    moved: set[str] = set()
    with transaction.atomic(using=write_alias()):
        update_each_guarded(
            ("status", "progress", "result", "error", "finished_at", "seq"),
            (
                (
                    e.task_id,
                    (
                        e.status.value,
                        e.progress,
                        e.result,
                        dict(e.error) if e.error else None,
                        finished,
                        e.seq_hint + 1,
                    ),
                    guards[e.status],
                )
                for e in endings
                if guards[e.status]  # else no row may move: none is written
            ),
        )
        for i in range(0, len(endings), _ROWS_PER_STATEMENT):
            chunk = endings[i : i + _ROWS_PER_STATEMENT]
            statuses = ended_statuses([e.task_id for e in chunk], finished)
            for e in chunk:
                key = canonical_task_id(e.task_id) or e.task_id
                if statuses.get(key) == e.status.value:
                    moved.add(key)
    # As the database gives ids back (report_progress may get any UUID form).
    return [(canonical_task_id(e.task_id) or e.task_id) in moved for e in endings]


def _checked(endings: Sequence[Ending]) -> list[Ending]:
    """Endings as recorded: terminal only, progress 100 for a success, else clamped."""
    for e in endings:
        if e.status not in TERMINAL:
            raise InvalidTransition(f"{e.status.value!r} is not a terminal status")
    return [
        replace(e, progress=100.0 if e.status == Status.SUCCEEDED else clamp_progress(e.progress))
        for e in endings
    ]


def _end_changes(
    endings: Sequence[Ending], written: Sequence[bool], finished: datetime
) -> list[Change]:
    """The announcements of the endings whose rows moved."""
    return [
        Change(
            e.task_id,
            terminal_message(
                e.task_id, e.status, progress=e.progress, result=e.result, error=e.error
            ),
            e.status,
            e.progress,
            {
                "finished_at": finished.isoformat(),
                "result": e.result,
                "error": dict(e.error) if e.error else None,
                "eta_s": None,
                "rate": None,
            },
        )
        for e, ok in zip(endings, written, strict=True)
        if ok
    ]


def _count_ends(endings: Sequence[Ending], written: Sequence[bool]) -> None:
    for e, ok in zip(endings, written, strict=True):
        if ok:
            metrics.TASKS_ENDED.labels(e.status.value, metrics.error_label(e.error)).inc()


def _before_end(task: Task) -> dict[str, Any]:
    """Live state rebuilt as it was before a task's end (so that the end is announced)."""
    before = live_fields(task, rebuilt=True)
    before["status"] = Status.RUNNING.value
    return before


async def afinish_many(
    endings: Sequence[Ending], store: TaskStore, *, from_statuses: Collection[Status] = ACTIVE
) -> list[bool]:
    """Move tasks to terminal states: database first (one transaction), then announce
    (one Redis call). Returns, per ending, False if its task was already over, or in
    a status its end may not follow (:data:`END_FROM`: only a running task
    succeeds), or, with ``from_statuses``, in a status not listed (a failed start
    passes ``(Status.QUEUED,)``, so it never ends a task another attempt started)."""
    endings = _checked(endings)
    if not endings:
        return []
    finished = datetime.now(UTC)
    written = await sync_to_async(_write_endings)(endings, finished, from_statuses)
    _count_ends(endings, written)
    changes = _end_changes(endings, written, finished)
    replies = await store.apply_many(changes)
    for change, reply in zip(changes, replies, strict=True):
        if reply == UNKNOWN:
            # Live state lost: rebuild it as it was before this end, then announce
            # the end, so watchers get it and snapshots show it. Only if nobody
            # rebuilt it meanwhile (that would reopen a finished task).
            task = await Task.objects.aget(pk=change.task_id)
            if await store.init_if_absent(change.task_id, _before_end(task)):
                await store.apply(change)
    return written


def finish_many(
    endings: Sequence[Ending], store: SyncTaskStore, *, from_statuses: Collection[Status] = ACTIVE
) -> list[bool]:
    """:func:`afinish_many` for sync code (a push task's producer), on a sync store."""
    endings = _checked(endings)
    if not endings:
        return []
    finished = datetime.now(UTC)
    written = _write_endings(endings, finished, from_statuses)
    _count_ends(endings, written)
    changes = _end_changes(endings, written, finished)
    replies = store.apply_many(changes)
    for change, reply in zip(changes, replies, strict=True):
        if reply == UNKNOWN:  # as in afinish_many
            task = Task.objects.get(pk=change.task_id)
            if store.init_if_absent(change.task_id, _before_end(task)):
                store.apply_many([change])
    return written


async def afinish(
    task_id: str,
    status: Status,
    store: TaskStore,
    *,
    progress: float,
    result: Any = None,
    error: Mapping[str, str] | None = None,
    seq_hint: int = 0,
) -> bool:
    """Move a task to a terminal state: database first, then announce. False if it was over."""
    ending = Ending(task_id, status, progress, result, error, seq_hint)
    return (await afinish_many([ending], store))[0]


def mark_running(started: Sequence[tuple[str, str]], at: datetime) -> list[bool | None]:
    """Move queued rows ``(task_id, backend_ref)`` to running, in one transaction.

    Per row: True if this call moved it; None if it is already active with
    the same ref (another attempt of the same start got there first: nothing
    to do); False if it is no longer queued otherwise (cancelled or ended
    while the backend created it, or running with another ref), so the
    caller's backend task is surplus.

    One conditional UPDATE, prepared once and sent for every row with
    ``executemany`` (:func:`progrock.state.rows.update_each`), then one SELECT per
    200 rows (starts come in bursts: a per-row ORM UPDATE cost about
    0.2 ms each, and one UPDATE with each row's ref by CASE about 0.1 ms per
    row to build).
    """
    found: dict[str, tuple[str, datetime | None, str | None]] = {}
    with transaction.atomic(using=write_alias()):
        update_each(
            ("status", "started_at", "seq", "backend_ref"),
            ((task_id, (Status.RUNNING.value, at, 1, str(ref))) for task_id, ref in started),
            status_in=[s.value for s in RUN_FROM],
        )
        for i in range(0, len(started), _ROWS_PER_STATEMENT):
            ids = [task_id for task_id, _ in started[i : i + _ROWS_PER_STATEMENT]]
            rows = (
                Task.objects.using(write_alias())  # read back where it was written
                .filter(pk__in=ids)
                .values_list("pk", "status", "started_at", "backend_ref")
            )
            found.update((str(pk), (status, when, ref)) for pk, status, when, ref in rows)
    active = {s.value for s in ACTIVE}
    out: list[bool | None] = []
    for task_id, ref in started:
        status, when, row_ref = found.get(canonical_task_id(task_id) or task_id, ("", None, None))
        # The column holds text: compare as text (a custom service may return an int).
        same_ref = row_ref is not None and row_ref == str(ref)
        if status == Status.RUNNING.value and when == at and same_ref:
            out.append(True)
        elif status in active and same_ref:
            out.append(None)
        else:
            out.append(False)
    return out


# Rows per statement in bulk writes (SQLite allows 999 parameters before 3.32).
_ROWS_PER_STATEMENT = 200


# -- Python API ----------------------------------------------------------------


async def check_limit(owner: str) -> None:
    """Raise TooManyTasks if ``owner`` already has the limit of active tasks."""
    limit = progrock_settings.MAX_RUNNING_PER_OWNER
    if limit is None:
        return
    running = await Task.objects.filter(owner=owner, status__in=[s.value for s in ACTIVE]).acount()
    if running >= limit:
        # Not the owner string: it holds the session key, and details reach browsers.
        raise TooManyTasks(f"this owner already runs {running} tasks (limit {limit})")


def admit_many(
    starts: Sequence[tuple[str, str, str, Mapping[str, Any]]],
) -> list[Task | TooManyTasks]:
    """Create the rows of socket-started tasks ``(task_id, owner, kind, params)`` and
    apply the owner limit; sync, a few queries for the whole batch.

    Returns per start its row, or the :class:`TooManyTasks` it was refused
    with. A row that already exists (made by :func:`start_task`, or a second
    delivery of the start) is returned as it is, unchecked. The limit is
    checked after the rows are written and counts only tasks created before
    each one, so of concurrent starts of one owner (in this batch, another
    batch or another worker) the earliest win; a refused start's row is
    deleted again.
    """
    ids = [start[0] for start in starts]
    existing = {str(t.pk): t for t in Task.objects.filter(pk__in=ids)}
    rows = {
        task_id: Task(id=task_id, owner=owner, kind=kind, params=dict(params))
        for task_id, owner, kind, params in starts
        if task_id not in existing
    }
    try:
        with transaction.atomic(using=write_alias()):
            Task.objects.bulk_create(rows.values())
    except IntegrityError:
        if len(starts) == 1:
            found = Task.objects.filter(pk=ids[0]).first()
            if found is None:
                raise
            return [found]
        return [admit_many([start])[0] for start in starts]  # one was created meanwhile
    refused: dict[str, TooManyTasks] = {}
    limit = progrock_settings.MAX_RUNNING_PER_OWNER
    if limit is not None and rows:
        # Every active task of these owners, ordered as the limit ranks them.
        ranked: dict[str, list[tuple[datetime, uuid.UUID]]] = {}
        for owner, pk, created in Task.objects.filter(
            owner__in={row.owner for row in rows.values()},
            status__in=[s.value for s in ACTIVE],
        ).values_list("owner", "id", "created_at"):
            ranked.setdefault(owner, []).append((created, pk))
        for order in ranked.values():
            order.sort()
        for task_id, row in rows.items():
            ahead = bisect.bisect_left(
                ranked.get(row.owner, []), (row.created_at, uuid.UUID(task_id))
            )
            if ahead >= limit:
                refused[task_id] = TooManyTasks(
                    f"this owner already runs {ahead} tasks (limit {limit})"
                )
        if refused:
            Task.objects.filter(pk__in=list(refused), status=Status.QUEUED.value).delete()
    return [refused.get(task_id) or rows.get(task_id) or existing[task_id] for task_id in ids]
