"""The Python API for server code.

* :func:`start_task` / :func:`astart_task` start a task from a view or a script
  and return its id, so a page can subscribe to it;
* :func:`report_progress` / :func:`areport_progress` publish progress of a
  task that runs somewhere else (a Celery task, a ``django.tasks`` task, a
  script) through the same delivery path, without a polling backend;
* :func:`owner_for_request` names the owner of a request's tasks.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import redis.asyncio as aioredis
from asgiref.sync import async_to_sync

from progrock.conf import progrock_settings
from progrock.exceptions import ProgRockError, TaskNotFound, TooManyTasks
from progrock.models import Task
from progrock.permissions import owner_for_request
from progrock.protocol import (
    TERMINAL,
    Status,
    clamp_progress,
    failure,
    progress_message,
    started_message,
)
from progrock.state.live import Change, TaskStore, get_redis
from progrock.state.tasks import afinish, arebuild, check_limit, live_fields
from progrock.tuning import DB_PROGRESS_INTERVAL
from progrock.values import find_problem
from progrock.web.forward import forward_start

__all__ = [
    "TooManyTasks",
    "areport_progress",
    "astart_task",
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
) -> str:
    """Start a task and return its id (see :func:`start_task`)."""
    kind = kind or progrock_settings.DEFAULT_KIND
    if not isinstance(owner, str) or not owner:
        raise ProgRockError(f"owner must be a non-empty string, got {owner!r}")
    problem = find_problem(dict(params or {}), "params")
    if problem is not None:  # it would fail in the channel layer, the database or the backend
        raise ProgRockError(f"{problem[0]} {problem[1]}")
    await check_limit(owner)
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

    ``owner`` is ``permissions.owner_for_request(request, create_session=True)`` in a
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
    if reply > 0 and now - _last_db_write.get(task_id, 0) >= DB_PROGRESS_INTERVAL:
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
            from progrock.state import live as store_module

            store_module._clients.pop(asyncio.get_running_loop(), None)

    return async_to_sync(runner)()
