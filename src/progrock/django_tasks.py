"""Progress of ``django.tasks`` tasks (Django 6; on 5.2 the ``tasks`` extra, the backport).

.. code-block:: python

    from django.tasks import task  # Django 6; on 5.2: from django_tasks import task
    from progrock.django_tasks import Progress, with_progress

    @task
    @with_progress
    def export(progress: Progress, rows: int) -> dict:
        for i in range(rows):
            progress(100 * i / rows, f"row {i}")  # raises progrock.Cancelled when cancelled
        return {"rows": rows}  # the `complete` message's result

    task_id = progrock.django_tasks.start(export, rows=500, owner=owner_for_request(request))

:func:`with_progress` gives the function a reporter as its first argument
and makes its outcome the ProgRock task's: the return value ``complete``, an
exception ``failed`` (code ``task_failed``, type and message), a cancel
:class:`~progrock.exceptions.Cancelled` at the next report (the job then
returns None). The framework has no revoke: a job cancelled while queued
is skipped when a worker takes it (it returns None at once). The task is
``queued`` while the job waits (``PUSH_TIMEOUT`` does not run yet) and moves
to ``running`` (``started``) when a worker begins it. The job
carries its ProgRock task id as the keyword argument ``progrock_task_id``,
which the wrapper takes off; called without it, the reporter does nothing.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

from django.utils.module_loading import import_string

from progrock import api, push
from progrock.exceptions import Cancelled, MissingExtra
from progrock.protocol import Status
from progrock.queues import start as queue_start
from progrock.queues.bridges import QueuedTask, TargetError, signature_without_first
from progrock.queues.targets import Target


def _task_classes() -> tuple[type, ...]:
    """Django 6's Task class and the backport's, whichever are installed."""
    found: list[type] = []
    for path in ("django.tasks.base.Task", "django_tasks.base.Task"):
        with contextlib.suppress(ImportError):
            found.append(import_string(path))
    if not found:
        raise MissingExtra(
            "progrock.django_tasks needs django.tasks (Django 6) or its backport: "
            "pip install 'django-progrock[tasks]'"
        )
    return tuple(found)


TASK_CLASSES: Final = _task_classes()


__all__ = ["KWARG", "Progress", "astart", "start", "with_progress"]

logger = logging.getLogger("progrock.django_tasks")

#: The keyword argument that carries a job's ProgRock task id.
KWARG: Final = "progrock_task_id"
_WRAPPED: Final = "__progrock_with_progress__"


class Progress:
    """A job's progress reporter: ``progress(pct, message=None)``."""

    __slots__ = ("task_id",)

    def __init__(self, task_id: str | None) -> None:
        self.task_id = task_id

    def __call__(self, progress: float, message: str | None = None) -> None:
        """Report ``progress`` (0-100); raises :class:`~progrock.exceptions.Cancelled`
        once the user cancelled. Does nothing for a job started without ProgRock."""
        if self.task_id is not None:
            api.report_progress(self.task_id, progress, message)

    def cancelled(self) -> bool:
        """Whether the user cancelled (without reporting anything)."""
        return self.task_id is not None and api.is_cancelled(self.task_id)


def with_progress(func: Callable[..., Any]) -> Callable[..., Any]:
    """Decorate a task function (under ``@task``): it gets a :class:`Progress` first."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        task_id = kwargs.pop(KWARG, None)
        if not isinstance(task_id, str):
            return func(Progress(None), *args, **kwargs)
        try:
            push.reporter().begin(task_id)  # queued -> running, `started` (once)
        except Cancelled:
            return None  # cancelled while queued: no revoke in this framework
        try:
            result = func(Progress(task_id), *args, **kwargs)
        except Cancelled:
            return None
        except Exception as exc:
            push.report_end(
                task_id,
                logger,
                status=Status.FAILED,
                code="task_failed",
                error=f"{type(exc).__name__}: {exc}",
            )
            raise
        push.report_end(task_id, logger, progress=100, status=Status.SUCCEEDED, result=result)
        return result

    setattr(wrapper, _WRAPPED, func)
    return wrapper


def _queued(task: Any, target: Target | None = None) -> QueuedTask:
    func = getattr(task.func, _WRAPPED, None)
    if func is None:
        where = target or task.module_path
        raise TargetError(f"{where} is not decorated with progrock.django_tasks.with_progress")

    def enqueue(task_id: str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> None:
        task.enqueue(*args, **{**kwargs, KWARG: task_id})

    return QueuedTask(
        target or Target("tasks", task.module_path), signature_without_first(func), enqueue
    )


def queued_task(target: Target) -> QueuedTask:
    """The django.tasks task ``target`` names (for :mod:`progrock.queues.bridges`)."""
    try:
        task = import_string(target.path)
    except ImportError as exc:
        raise TargetError(f"{target} cannot be imported: {exc}") from None
    if not isinstance(task, TASK_CLASSES):
        raise TargetError(f"{target} is not a django.tasks task, got {task!r}")
    return _queued(task, target)


def revoke(job_id: str) -> None:
    """Nothing: ``django.tasks`` has no revoke (the job skips itself when it starts)."""


def start(task: Any, *args: Any, owner: str, **kwargs: Any) -> str:
    """Enqueue a :func:`with_progress` task and return the ProgRock task id."""
    return queue_start.start(_queued(task), args, kwargs, owner=owner)


async def astart(task: Any, *args: Any, owner: str, **kwargs: Any) -> str:
    """:func:`start` for async code."""
    return await queue_start.astart(_queued(task), args, kwargs, owner=owner)
