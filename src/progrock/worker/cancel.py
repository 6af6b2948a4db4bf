"""Cancelling: what a worker does with a ``progrock.cancel`` message.

The backend is told first (if the task runs there); if it answers that the
task has already finished, the task ends as the backend says. Otherwise the
task is recorded ``cancelled`` (database first, then announced). A task
cancelled before it started loses its start watchdog, so no later attempt
starts it. A task queue's job (:mod:`progrock.queues`) is revoked once its
task is recorded cancelled.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Mapping
from typing import Any

from progrock.conf import progrock_settings
from progrock.exceptions import ServiceError, ServiceRejected
from progrock.models import Task
from progrock.protocol import ACTIVE, Status
from progrock.queues import bridges
from progrock.services.base import ServiceStatus, TaskService
from progrock.state import tasks
from progrock.worker import start_watch
from progrock.worker.context import Worker
from progrock.worker.polls import ending_from_backend
from progrock.worker.reply import reply_error

logger = logging.getLogger("progrock.worker")

#: Seconds a queue's revoke may take (a broker unreachable from this worker).
REVOKE_TIMEOUT = 5.0


async def cancel(worker: Worker, message: Mapping[str, Any]) -> None:
    """Cancel the task a ``progrock.cancel`` message names; refusals go to its reply channel."""
    try:
        task_id = str(uuid.UUID(str(message["task_id"])))
    except (KeyError, ValueError) as exc:
        logger.error("dropping malformed cancel message %.300r: %s", message, exc)
        return
    reply = message.get("reply_channel")
    request = str(message.get("request_id") or "")
    claim = f"{progrock_settings.KEY_PREFIX}cancel:{task_id}:{request}"
    if request and not await worker.store.redis.set(claim, b"1", nx=True, ex=60):
        return  # a second delivery of the same cancel request (see starts)
    task = await Task.objects.filter(pk=task_id).afirst()
    if task is None or task.status not in ACTIVE:
        state = task.status if task else "unknown"
        await _refuse(reply, task_id, f"task {task_id} is {state}")
        return
    ended = None
    if task.backend_ref and not task.push:
        ended = await cancel_backend(worker.service, task.backend_ref)
    view = await worker.store.view(task_id)
    progress = view.progress if view else task.progress
    seq = view.seq if view else task.seq
    if ended is not None and ended.state in ("succeeded", "failed"):
        # The backend finished first: the task ends as the backend says.
        await tasks.afinish_many([ending_from_backend(task_id, progress, seq, ended)], worker.store)
        await _refuse(reply, task_id, f"task {task_id} finished before the cancel")
        return
    done = await tasks.afinish(
        task_id, Status.CANCELLED, worker.store, progress=progress, seq_hint=seq
    )
    if done and task.push and task.backend_ref:
        # A task queue's job: revoked if still queued (best effort: a job that
        # runs anyway sees the cancel when it starts). After the end is
        # recorded: the queue's own revoke report then finds the task over.
        await _revoke(task.backend_ref)
    if done and task.status == Status.QUEUED.value:
        # Cancelled before it started: its start watchdog has nothing to do.
        await start_watch.disarm(worker.delay, [task_id])
    if not done:
        await _refuse(reply, task_id, f"task {task_id} is already over")


async def _revoke(ref: str) -> None:
    try:
        async with asyncio.timeout(REVOKE_TIMEOUT):
            await asyncio.to_thread(bridges.revoke, ref)
    except TimeoutError:
        logger.warning(
            "revoking %s took longer than %.0f s; the job skips itself", ref, REVOKE_TIMEOUT
        )


async def _refuse(reply: object, task_id: str, detail: str) -> None:
    await reply_error(reply, "not_cancellable", detail, action="cancel", task_id=task_id)


async def cancel_backend(service: TaskService, ref: str) -> ServiceStatus | None:
    """Tell the backend; returns its state of the task when it answers."""
    try:
        return await service.cancel(ref)
    except (ServiceError, ServiceRejected) as exc:
        logger.warning("backend did not cancel %s: %s", ref, exc)
        return None
