"""The Python API for server code.

* :func:`start_task` / :func:`astart_task` start a task from a view or a script
  and return its id, so a page can subscribe to it;
* :func:`report_progress` / :func:`areport_progress` publish progress of a
  task that runs somewhere else (a Celery task, a ``django.tasks`` task, a
  script) through the same delivery path, without a polling backend
  (:mod:`progrock.push`); :func:`keep_alive` / :func:`akeep_alive` keep a
  silent one from failing as ``lost``, :func:`is_cancelled` /
  :func:`ais_cancelled` tell its producer whether to stop;
* :func:`owner_for_request` names the owner of a request's tasks.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import redis.asyncio as aioredis
from asgiref.sync import async_to_sync, sync_to_async
from redis.exceptions import RedisError

from progrock import push
from progrock.conf import progrock_settings
from progrock.exceptions import (
    Cancelled,
    ProgRockError,
    RedisUnavailable,
    TaskNotFound,
    TooManyTasks,
)
from progrock.models import Task
from progrock.permissions import owner_for_request
from progrock.protocol import Status, started_message
from progrock.redact import redact
from progrock.state.live import Change, TaskStore, get_redis
from progrock.state.scripts import HEARD
from progrock.state.tasks import check_limit, live_fields
from progrock.values import find_problem
from progrock.web.forward import forward_start

__all__ = [
    "Cancelled",
    "TaskNotFound",
    "TooManyTasks",
    "ais_cancelled",
    "akeep_alive",
    "areport_progress",
    "astart_task",
    "is_cancelled",
    "keep_alive",
    "owner_for_request",
    "report_progress",
    "start_task",
]


async def astart_task(
    kind: str | None = None,
    params: Mapping[str, Any] | None = None,
    *,
    owner: str,
    push: bool = False,
    task_id: str | None = None,
    queued: bool = False,
) -> str:
    """Start a task and return its id (see :func:`start_task`).

    ``task_id`` (a new UUID string) names the task, for a caller that listens
    for its messages before it exists (the socket of a queue-backed kind).
    """
    kind = kind or progrock_settings.DEFAULT_KIND
    if queued and not push:
        raise ProgRockError("queued=True is for push tasks: pass push=True too")
    if not isinstance(owner, str) or not owner:
        raise ProgRockError(f"owner must be a non-empty string, got {owner!r}")
    problem = find_problem(dict(params or {}), "params")
    if problem is not None:  # it would fail in the channel layer, the database or the backend
        raise ProgRockError(f"{problem[0]} {problem[1]}")
    await check_limit(owner)
    task_id = str(uuid.UUID(task_id)) if task_id is not None else str(uuid.uuid4())
    now = datetime.now(UTC)
    task = await Task.objects.acreate(
        id=task_id,
        owner=owner,
        kind=kind,
        params=dict(params or {}),
        push=push,
        status=(Status.RUNNING if push and not queued else Status.QUEUED).value,
        started_at=now if push and not queued else None,
    )
    if push:
        try:
            await _announce_push_start(task, now, queued=queued)
        except BaseException as exc:
            # Nobody has the task's id: a row left running would hold one of the
            # owner's slots until the sweep fails it (PUSH_TIMEOUT).
            await Task.objects.filter(pk=task_id).adelete()
            if isinstance(exc, RedisError):
                raise RedisUnavailable(
                    f"could not start push task: Redis {redact(str(exc))}"
                ) from exc
            raise
    else:
        await forward_start(
            task_id=task_id, kind=kind, params=task.params, owner=owner, reply_channel=None
        )
    return task_id


async def _announce_push_start(task: Task, now: datetime, *, queued: bool) -> None:
    store = TaskStore.from_settings()
    fields = live_fields(task)
    fields["status"] = Status.QUEUED.value  # APPLY moves it to running with `started`
    fields[HEARD] = now.timestamp()  # its PUSH_TIMEOUT runs from here
    await store.init(str(task.pk), fields)
    if queued:  # its producer moves it to running when it begins (push.Reporter.begin)
        return
    await store.apply(
        Change(
            str(task.pk),
            started_message(str(task.pk), task.kind),
            Status.RUNNING,
            0,
            {"started_at": now.isoformat()},
        )
    )
    await Task.objects.filter(pk=task.pk).aupdate(seq=1)


def start_task(
    kind: str | None = None,
    params: Mapping[str, Any] | None = None,
    *,
    owner: str,
    push: bool = False,
    queued: bool = False,
) -> str:
    """Start a task from sync code (a view, a script) and return its id.

    ``owner`` is ``permissions.owner_for_request(request, create_session=True)`` in a
    view. With ``push=True`` no backend is polled: report its progress with
    :func:`report_progress`. With ``queued=True`` too, the push task stays
    ``queued`` (its ``PUSH_TIMEOUT`` not yet running) until its first report,
    which announces ``started`` first: for work that waits its turn somewhere.
    Raises :class:`TooManyTasks` past the owner's limit.
    """
    return str(
        _run_with_fresh_redis(astart_task, kind, params, owner=owner, push=push, queued=queued)
    )


async def areport_progress(
    task_id: str,
    progress: float | None = None,
    message: str | None = None,
    *,
    status: Status | str | None = None,
    result: Any = None,
    error: str | None = None,
    code: str | None = None,
) -> int:
    """:func:`report_progress` for async code (a held report costs no thread hop)."""
    done = push.reporter().prepare(task_id, progress, message, status, result, error, code)
    if isinstance(done, int):
        return done
    return int(await sync_to_async(done, thread_sensitive=False)())


def report_progress(
    task_id: str,
    progress: float | None = None,
    message: str | None = None,
    *,
    status: Status | str | None = None,
    result: Any = None,
    error: str | None = None,
    code: str | None = None,
) -> int:
    """Publish a push task's progress (0-100, and a message) or its end.

    ``status`` is ``"running"`` (the default), or an end: ``"complete"`` (with
    ``result``, any JSON value), ``"failed"`` (with ``error``, a text, and
    ``code``, a failure code: ``"task_failed"`` by default) or ``"cancelled"``.
    Reports closer together than ``POLL_INTERVAL`` are coalesced (the newest
    value is published when the cadence allows); an end is recorded at once.
    Returns the published message's ``seq``, 0 when the report was held for
    the cadence or the task is over. Raises :class:`~progrock.exceptions.Cancelled`
    once the task was cancelled, :class:`TaskNotFound` for an unknown task,
    ``ValueError`` for bad input (nothing is published; a result that is not JSON
    fails the task with ``bad_result``), and
    :class:`~progrock.exceptions.RedisUnavailable` when Redis does not answer.
    Sync: from async code, use :func:`areport_progress`.
    """
    return push.reporter().report(
        task_id, progress, message, status=status, result=result, error=error, code=code
    )


def keep_alive(task_id: str) -> None:
    """Tell ProgRock a push task's producer is alive (no progress is published):
    a push task not heard from for ``PUSH_TIMEOUT`` seconds fails as ``lost``."""
    push.reporter().keep_alive(task_id)


async def akeep_alive(task_id: str) -> None:
    """:func:`keep_alive` for async code."""
    await sync_to_async(keep_alive, thread_sensitive=False)(task_id)


def is_cancelled(task_id: str) -> bool:
    """Whether the task was cancelled (by its user or an admin), without reporting."""
    return push.reporter().is_cancelled(task_id)


async def ais_cancelled(task_id: str) -> bool:
    """:func:`is_cancelled` for async code."""
    return bool(await sync_to_async(is_cancelled, thread_sensitive=False)(task_id))


def _run_with_fresh_redis(func: Any, *args: Any, **kwargs: Any) -> Any:
    async def runner() -> Any:
        try:
            return await func(*args, **kwargs)
        finally:
            client: aioredis.Redis = get_redis()
            await client.aclose()
            from progrock.state import live as store_module

            store_module._clients.pop(asyncio.get_running_loop(), None)

    return async_to_sync(runner)()
