"""Task operations shared by the consumer, the worker, the HTTP API and user code.

The Python API for server code lives here too:

* :func:`start_task` / :func:`astart_task` start a task from a view or a script
  and return its id, so a page can subscribe to it;
* :func:`report_progress` / :func:`areport_progress` publish progress of a
  task that runs somewhere else (a Celery task, a ``django.tasks`` task, a
  script) through the same delivery path, without a polling backend.
"""

from __future__ import annotations

import asyncio
import bisect
import time
import uuid
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import redis.asyncio as aioredis
from asgiref.sync import async_to_sync, sync_to_async
from django.db import IntegrityError, transaction
from django.http import HttpRequest

from progrock.conf import progrock_settings
from progrock.exceptions import InvalidTransition, ProgRockError, TaskNotFound
from progrock.forward import forward_start
from progrock.models import Task
from progrock.permissions import can_access
from progrock.protocol import (
    ACTIVE,
    LIST_LIMIT,
    TERMINAL,
    Status,
    TaskView,
    canonical_task_id,
    clamp_progress,
    failure,
    progress_message,
    started_message,
    terminal_message,
)
from progrock.rows import ended_statuses, update_each, write_alias
from progrock.store import UNKNOWN, Change, TaskStore, get_redis, view_from_hash


class TooManyTasks(ProgRockError):
    """The owner already runs ``PROGROCK["MAX_RUNNING_PER_OWNER"]`` tasks."""


# -- owners --------------------------------------------------------------------


def owner_for_user_or_session(user: Any, session_key: str | None) -> str | None:
    if user is not None and getattr(user, "is_authenticated", False):
        return f"user:{user.pk}"
    if session_key:
        return f"session:{session_key}"
    return None


def owner_for_scope(scope: Mapping[str, Any], channel_name: str) -> str:
    """Owner string of a socket: its user, else its session, else the socket itself."""
    session = scope.get("session")
    session_key = getattr(session, "session_key", None) if session is not None else None
    owner = owner_for_user_or_session(scope.get("user"), session_key)
    return owner or f"socket:{channel_name}"


def owner_for_request(request: HttpRequest, *, create_session: bool = False) -> str | None:
    """Owner string of an HTTP request (creating its session if asked)."""
    session = getattr(request, "session", None)
    if session is not None and not session.session_key and create_session:
        session.save()
    key = session.session_key if session is not None else None
    return owner_for_user_or_session(getattr(request, "user", None), key)


async def amay_access(requester: str, task_owner: str, task_id: str) -> bool:
    """True if ``requester`` may see the task; the hook may use the ORM, so it runs in a thread."""
    if requester == task_owner:
        return True  # the default rule needs no thread hop
    return await sync_to_async(can_access)(requester, task_owner, task_id)


# -- reading -----------------------------------------------------------------


async def aget_view_and_owner(
    task_id: str, store: TaskStore | None = None
) -> tuple[TaskView, str] | None:
    """The task's current view and owner: live state from Redis, else the database."""
    store = store or TaskStore.from_settings()
    raw = await store.redis.hgetall(f"{progrock_settings.KEY_PREFIX}t:{task_id}")  # type: ignore[misc]
    if raw:
        fields = {k.decode(): v.decode() for k, v in raw.items()}
        if fields.get("owner"):
            return view_from_hash(task_id, fields), fields["owner"]
    task = await Task.objects.filter(pk=task_id).afirst()
    if task is None:
        return None
    return task.view(), task.owner


async def alist_views(owner: str, limit: int = LIST_LIMIT) -> list[TaskView]:
    """The owner's tasks, newest first, with live state where there is some."""
    rows = [t async for t in Task.objects.filter(owner=owner).order_by("-created_at")[:limit]]
    active = [str(t.id) for t in rows if t.status in ACTIVE]
    live = await TaskStore.from_settings().load(active) if active else {}
    views = []
    for task in rows:
        fields = live.get(str(task.id))
        views.append(view_from_hash(str(task.id), fields) if fields else task.view())
    return views


# -- state changes shared by worker and push API ------------------------------------


# The database copies seq only now and then; a rebuilt live state starts this
# far ahead so its messages are not taken for old ones by sockets that saw more.
REBUILD_SEQ_MARGIN = 1000


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
    """Write ends to rows still in ``from_statuses`` (by default: active), in one
    transaction; which rows moved.

    One conditional UPDATE sent once per row with ``executemany``
    (:func:`progrock.rows.update_each`), then one plain SELECT per 200 rows
    (:func:`progrock.rows.ended_statuses`).
    """
    active = [s.value for s in from_statuses]
    moved: set[str] = set()
    with transaction.atomic(using=write_alias()):
        update_each(
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
                )
                for e in endings
            ),
            status_in=active,
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


async def afinish_many(
    endings: Sequence[Ending], store: TaskStore, *, from_statuses: Collection[Status] = ACTIVE
) -> list[bool]:
    """Move tasks to terminal states: database first (one transaction), then announce
    (one Redis call). Returns, per ending, False if its task was already over (or,
    with ``from_statuses``, in a status not listed: a failed start passes
    ``(Status.QUEUED,)``, so it never ends a task another attempt has started)."""
    for e in endings:
        if e.status not in TERMINAL:
            raise InvalidTransition(f"{e.status.value!r} is not a terminal status")
    if not endings:
        return []
    endings = [
        replace(e, progress=100.0 if e.status == Status.SUCCEEDED else clamp_progress(e.progress))
        for e in endings
    ]
    finished = datetime.now(UTC)
    written = await sync_to_async(_write_endings)(endings, finished, from_statuses)
    changes = [
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
    replies = await store.apply_many(changes)
    for change, reply in zip(changes, replies, strict=True):
        if reply == UNKNOWN:
            # Live state lost: rebuild it as it was before this end, then announce
            # the end, so watchers get it and snapshots show it. Only if nobody
            # rebuilt it meanwhile (that would reopen a finished task).
            task = await Task.objects.aget(pk=change.task_id)
            before = live_fields(task, rebuilt=True)
            before["status"] = Status.RUNNING.value
            if await store.init_if_absent(change.task_id, before):
                await store.apply(change)
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
    ``executemany`` (:func:`progrock.rows.update_each`), then one SELECT per
    200 rows (starts come in bursts: a per-row ORM UPDATE cost about
    0.2 ms each, and one UPDATE with each row's ref by CASE about 0.1 ms per
    row to build).
    """
    found: dict[str, tuple[str, datetime | None, str | None]] = {}
    with transaction.atomic(using=write_alias()):
        update_each(
            ("status", "started_at", "seq", "backend_ref"),
            ((task_id, (Status.RUNNING.value, at, 1, str(ref))) for task_id, ref in started),
            status_in=(Status.QUEUED.value,),
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


async def _check_limit(owner: str) -> None:
    """Raise TooManyTasks if ``owner`` already has the limit of active tasks."""
    limit = progrock_settings.MAX_RUNNING_PER_OWNER
    if limit is None:
        return
    running = await Task.objects.filter(owner=owner, status__in=[s.value for s in ACTIVE]).acount()
    if running >= limit:
        raise TooManyTasks(f"owner {owner!r} already runs {running} tasks (limit {limit})")


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
                    f"owner {row.owner!r} already runs {ahead} tasks (limit {limit})"
                )
        if refused:
            Task.objects.filter(pk__in=list(refused), status=Status.QUEUED.value).delete()
    return [refused.get(task_id) or rows.get(task_id) or existing[task_id] for task_id in ids]


async def astart_task(
    kind: str | None = None,
    params: Mapping[str, Any] | None = None,
    *,
    owner: str,
    push: bool = False,
) -> str:
    """Start a task and return its id (see :func:`start_task`)."""
    kind = kind or progrock_settings.DEFAULT_KIND
    if not isinstance(owner, str) or not owner:
        raise ProgRockError(f"owner must be a non-empty string, got {owner!r}")
    await _check_limit(owner)
    task_id = str(uuid.uuid4())
    now = datetime.now(UTC)
    task = await Task.objects.acreate(
        id=task_id,
        owner=owner,
        kind=kind,
        params=dict(params or {}),
        push=push,
        status=(Status.RUNNING if push else Status.QUEUED).value,
        started_at=now if push else None,
    )
    if push:
        store = TaskStore.from_settings()
        fields = live_fields(task)
        fields["status"] = Status.QUEUED.value  # APPLY moves it to running with `started`
        await store.init(task_id, fields)
        await store.apply(
            Change(
                task_id,
                started_message(task_id, kind),
                Status.RUNNING,
                0,
                {"started_at": now.isoformat()},
            )
        )
        await Task.objects.filter(pk=task_id).aupdate(seq=1)
    else:
        await forward_start(
            task_id=task_id, kind=kind, params=task.params, owner=owner, reply_channel=None
        )
    return task_id


def start_task(
    kind: str | None = None,
    params: Mapping[str, Any] | None = None,
    *,
    owner: str,
    push: bool = False,
) -> str:
    """Start a task from sync code (a view, a script) and return its id.

    ``owner`` is ``tasks.owner_for_request(request, create_session=True)`` in a
    view. With ``push=True`` no backend is polled: report its progress with
    :func:`report_progress`. Raises :class:`TooManyTasks` past the owner's limit.
    """
    return str(_run_with_fresh_redis(astart_task, kind, params, owner=owner, push=push))


async def areport_progress(
    task_id: str,
    progress: float | None = None,
    message: str | None = None,
    *,
    status: Status | str | None = None,
    result: Any = None,
    error: str | None = None,
) -> int:
    """Publish a push task's progress or end; returns the message's ``seq`` (0 if dropped)."""
    store = TaskStore.from_settings()
    found = await store.view(task_id)
    if found is None:
        task = await arebuild(task_id, store)
        if task is None:
            raise TaskNotFound(f"no task {task_id}")
        found = task.view()
    new_status = Status(status) if status is not None else Status.RUNNING
    value = found.progress if progress is None else float(progress)
    if not 0 <= value <= 100:
        raise ValueError(f"progress must be between 0 and 100, got {progress!r}")
    if new_status in TERMINAL:
        err = (
            failure("backend_failed", error or "the task failed")
            if new_status == Status.FAILED
            else None
        )
        _last_db_write.pop(task_id, None)
        done = await afinish(
            task_id, new_status, store, progress=value, result=result, error=err, seq_hint=found.seq
        )
        return found.seq + 1 if done else 0
    now = time.time()
    msg = progress_message(task_id, value, message)
    reply = await store.apply(Change(task_id, msg, Status.RUNNING, value, {"message": message}))
    if reply > 0 and now - _last_db_write.get(task_id, 0) >= progrock_settings.DB_PROGRESS_INTERVAL:
        _last_db_write[task_id] = now
        await Task.objects.filter(pk=task_id, status=Status.RUNNING.value).aupdate(
            progress=clamp_progress(value), message=message, seq=reply
        )
    return max(reply, 0)


_last_db_write: dict[str, float] = {}


def report_progress(
    task_id: str,
    progress: float | None = None,
    message: str | None = None,
    *,
    status: Status | str | None = None,
    result: Any = None,
    error: str | None = None,
) -> int:
    """Sync :func:`areport_progress`, for code running outside an event loop."""
    return int(
        _run_with_fresh_redis(
            areport_progress, task_id, progress, message, status=status, result=result, error=error
        )
    )


def _run_with_fresh_redis(func: Any, *args: Any, **kwargs: Any) -> Any:
    async def runner() -> Any:
        try:
            return await func(*args, **kwargs)
        finally:
            client: aioredis.Redis = get_redis()
            await client.aclose()
            from progrock import store as store_module

            store_module._clients.pop(asyncio.get_running_loop(), None)

    return async_to_sync(runner)()
