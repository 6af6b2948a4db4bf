"""Where a socket's start goes: the backend service, or a task queue's task.

The decision is made before anything is created or queued: a kind whose
target cannot run (not importable, not a progress task, its queue not
installed) is ``unknown_kind``, params its task does not accept
``invalid_field``, each naming the kind and the parameter.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping
from typing import Any

from progrock.conf import progrock_settings
from progrock.exceptions import MissingExtra, ProtocolError, TooManyTasks
from progrock.queues import bridges
from progrock.queues import start as queue_start
from progrock.queues.bridges import QueuedTask, TargetError
from progrock.queues.targets import Target

logger = logging.getLogger("progrock.queues")


@functools.lru_cache(maxsize=256)
def _resolve(target: Target) -> QueuedTask:
    return bridges.resolve(target)


def queued_for(
    kind: str, params: Mapping[str, Any], *, ref: str | int | None = None
) -> QueuedTask | None:
    """The queue task that starts ``kind``; None when the backend service runs it.

    Raises :class:`~progrock.exceptions.ProtocolError` ``unknown_kind`` or
    ``invalid_field`` (see the module's docstring).
    """
    target = progrock_settings.KIND_TARGETS.get(kind)
    if target is None:
        return None
    try:
        queued = _resolve(target)
    except (TargetError, MissingExtra) as exc:
        logger.error("kind %r cannot start: %s", kind, exc)
        raise ProtocolError(
            "unknown_kind",
            f"kind {kind!r} has no task to run ({target}): {exc}",
            action="start",
            ref=ref,
        ) from None
    problem = bridges.params_problem(queued, params)
    if problem is not None:
        raise ProtocolError("invalid_field", problem, action="start", ref=ref)
    return queued


async def astart(
    queued: QueuedTask,
    *,
    kind: str,
    params: Mapping[str, Any],
    owner: str,
    task_id: str,
    ref: str | int | None = None,
) -> None:
    """Start a socket's queue-backed task under the id it already listens to."""
    try:
        await queue_start.astart(
            queued,
            (),
            params,
            owner=owner,
            kind=kind,
            task_id=task_id,
            params=params,
            raise_unqueued=False,  # the socket hears the task fail `not_started`
        )
    except TooManyTasks as exc:
        raise ProtocolError("too_many_tasks", str(exc), action="start", ref=ref) from None
