"""Starting a queue-backed task: a push task first, then the queue's job.

The push task exists before the job is queued, so the job always finds it.
It stays ``queued`` (a backlog of minutes is normal for a task queue, and
``PUSH_TIMEOUT`` does not run yet) until the job begins: the job's wrapper
(:class:`progrock.celery.ProgressTask`, :func:`progrock.django_tasks.with_progress`)
moves it to ``running`` with ``started`` (:meth:`progrock.push.Reporter.begin`),
once, however often Celery retries the job. One that never begins fails
``lost`` after ``QUEUED_PUSH_TIMEOUT`` (:mod:`progrock.worker.sweep`). Its row keeps a link to
the job (``backend_ref``, :func:`~progrock.queues.bridges.link`) so a cancel
can revoke a job still queued. If queueing fails the task fails at once
(``not_started``) and the error reaches the caller.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from asgiref.sync import sync_to_async

from progrock import api
from progrock.models import Task
from progrock.protocol import Status
from progrock.queues.bridges import QueuedTask, link

logger = logging.getLogger("progrock.queues")


def kind_of(queued: QueuedTask) -> str:
    """The kind a task started from server code gets: its dotted path's last part."""
    return queued.target.path.rpartition(".")[2]


def _not_queued(task_id: str, exc: BaseException) -> dict[str, Any]:
    logger.error("could not queue task %s", task_id, exc_info=exc)
    return {
        "status": Status.FAILED,
        "code": "not_started",
        "error": f"the task could not be queued ({type(exc).__name__})",
    }


def start(
    queued: QueuedTask,
    args: Sequence[Any],
    kwargs: Mapping[str, Any],
    *,
    owner: str,
    kind: str | None = None,
) -> str:
    """Start ``queued`` from sync code; returns the ProgRock task id."""
    task_id = api.start_task(kind or kind_of(queued), owner=owner, push=True, queued=True)
    Task.objects.filter(pk=task_id).update(backend_ref=link(queued.target, task_id))
    try:
        queued.enqueue(task_id, args, kwargs)
    except Exception as exc:
        api.report_progress(task_id, **_not_queued(task_id, exc))
        raise
    return task_id


async def astart(
    queued: QueuedTask,
    args: Sequence[Any],
    kwargs: Mapping[str, Any],
    *,
    owner: str,
    kind: str | None = None,
    task_id: str | None = None,
    params: Mapping[str, Any] | None = None,
    before_enqueue: Callable[[str], Awaitable[None]] | None = None,
    raise_unqueued: bool = True,
) -> str:
    """Start ``queued`` from async code; returns the ProgRock task id.

    ``task_id`` names the new task (the socket listens before it exists);
    ``params`` are recorded on its row; ``before_enqueue(task_id)`` runs
    between the push task's creation and the job's. With ``raise_unqueued``
    false, a job that could not be queued only fails its task (whose
    watchers hear it), and the id is returned.
    """
    task_id = await api.astart_task(
        kind or kind_of(queued), params, owner=owner, push=True, task_id=task_id, queued=True
    )
    await Task.objects.filter(pk=task_id).aupdate(backend_ref=link(queued.target, task_id))
    if before_enqueue is not None:
        await before_enqueue(task_id)
    try:
        await sync_to_async(queued.enqueue, thread_sensitive=False)(task_id, args, kwargs)
    except Exception as exc:
        await api.areport_progress(task_id, **_not_queued(task_id, exc))
        if raise_unqueued:
            raise
    return task_id
