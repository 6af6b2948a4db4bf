"""Progress of Celery tasks (the ``celery`` extra).

.. code-block:: python

    from celery import shared_task
    from progrock.celery import ProgressTask

    @shared_task(bind=True, base=ProgressTask)
    def export(self, rows):
        for i in range(rows):
            self.progress(100 * i / rows, f"row {i}")  # raises progrock.Cancelled when cancelled
        return {"rows": rows}  # the `complete` message's result

    task_id = progrock.celery.start(export, 500, owner=owner_for_request(request))

A job started with :func:`start` (or from a socket, for a kind that
``PROGROCK["KINDS"]`` maps to ``"celery:myapp.tasks.export"``) carries its
ProgRock task id in a message header, and has it as its Celery id too. Its
task is ``queued`` while the job waits in the broker (``PUSH_TIMEOUT`` does
not run yet) and moves to ``running`` (``started``) when a worker begins it. Its
outcome becomes the task's: the return value ``complete``; an exception
``failed`` (code ``task_failed``, the exception's type and message: no
traceback); a retry (``self.retry``, ``autoretry_for``) a progress message;
a revoke ``cancelled``. A cancel from the page revokes the job if it is
still queued, and otherwise raises :class:`~progrock.exceptions.Cancelled`
from the job's next ``self.progress`` that reaches ProgRock (the job then
ends without a Celery failure). The same task called without ProgRock
(``export.delay(5)``) runs as usual and reports nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any, Final

from progrock.exceptions import Cancelled, MissingExtra, TaskNotFound

try:
    from celery import Task as CeleryTask
    from celery import current_app
    from celery.exceptions import Ignore
    from celery.signals import task_revoked
except ImportError as exc:  # pragma: no cover - without the extra
    raise MissingExtra(
        f"progrock.celery needs Celery ({exc}): pip install 'django-progrock[celery]'"
    ) from exc

from django.utils.module_loading import import_string

from progrock import api, push
from progrock.protocol import Status
from progrock.queues import start as queue_start
from progrock.queues.bridges import QueuedTask, TargetError
from progrock.queues.targets import Target

__all__ = ["HEADER", "ProgressTask", "astart", "start"]

logger = logging.getLogger("progrock.celery")

#: The message header that carries a job's ProgRock task id.
HEADER: Final = "progrock_task_id"


def progrock_task_id(request: Any) -> str | None:
    """The ProgRock task id a Celery request carries, or None (not started by ProgRock)."""
    value = getattr(request, HEADER, None)
    if value is None:
        value = (getattr(request, "headers", None) or {}).get(HEADER)
    return value if isinstance(value, str) else None


class ProgressTask(CeleryTask):  # type: ignore[misc]
    """Base class of Celery tasks that report progress to ProgRock (``base=ProgressTask``)."""

    @property
    def progrock_task_id(self) -> str | None:
        """The ProgRock task this job reports to; None when started without ProgRock."""
        return progrock_task_id(self.request)

    def progress(self, progress: float, message: str | None = None) -> None:
        """Report ``progress`` (0-100) and an optional message.

        Raises :class:`~progrock.exceptions.Cancelled` once the user cancelled
        (let it propagate: the job ends quietly), ``ValueError`` for a progress
        outside 0-100. Does nothing for a job started without ProgRock.
        """
        task_id = self.progrock_task_id
        if task_id is None:
            return
        api.report_progress(task_id, progress, message)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        task_id = self.progrock_task_id
        if task_id is None:
            return super().__call__(*args, **kwargs)
        # The job begins: its task moves from queued to running (once: not on a
        # retry). Cancelled while queued (a revoke that did not reach this
        # worker): skip it.
        try:
            push.reporter().begin(task_id)
        except Cancelled:
            raise Ignore() from None
        try:
            return super().__call__(*args, **kwargs)
        except Cancelled:
            raise Ignore() from None

    def on_success(self, retval: Any, task_id: str, args: Any, kwargs: Any) -> None:
        progrock_id = self.progrock_task_id
        if progrock_id is not None:
            push.report_end(
                progrock_id, logger, progress=100, status=Status.SUCCEEDED, result=retval
            )
        super().on_success(retval, task_id, args, kwargs)

    def on_failure(
        self, exc: BaseException, task_id: str, args: Any, kwargs: Any, einfo: Any
    ) -> None:
        progrock_id = self.progrock_task_id
        if progrock_id is not None:
            push.report_end(
                progrock_id,
                logger,
                status=Status.FAILED,
                code="task_failed",
                error=f"{type(exc).__name__}: {exc}",
            )
        super().on_failure(exc, task_id, args, kwargs, einfo)

    def retry(
        self,
        args: Any = None,
        kwargs: Any = None,
        exc: BaseException | None = None,
        throw: bool = True,
        eta: Any = None,
        countdown: Any = None,
        max_retries: int | None = None,
        **options: Any,
    ) -> Any:
        """Celery's ``retry``, shown to the watchers as a progress message first (before
        the retry is queued: a quick retry must not end the task before the message)."""
        progrock_id = self.progrock_task_id
        limit = self.max_retries if max_retries is None else max_retries
        if progrock_id is not None and (limit is None or self.request.retries < limit):
            why = f": {type(exc).__name__}: {exc}" if exc is not None else ""
            try:
                api.report_progress(progrock_id, None, f"retry {self.request.retries + 1}{why}")
            except (Cancelled, TaskNotFound):
                raise Ignore() from None  # cancelled: no retry
            except Exception:
                logger.exception("could not report the retry of task %s", progrock_id)
        return super().retry(
            args, kwargs, exc, throw, eta, countdown, max_retries=max_retries, **options
        )


def _revoked(sender: Any = None, request: Any = None, **kwargs: Any) -> None:
    """A revoked job of a ProgressTask: its task is ``cancelled`` (the job's id is its id)."""
    if not isinstance(sender, ProgressTask) or request is None:
        return
    task_id = getattr(request, "id", None) or getattr(request, "task_id", None)
    if isinstance(task_id, str):
        push.report_end(task_id, logger, status=Status.CANCELLED)


task_revoked.connect(_revoked)


# -- starting ------------------------------------------------------------------------


def _enqueue(task: Any) -> Any:
    def enqueue(task_id: str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> None:
        task.apply_async(tuple(args), dict(kwargs), task_id=task_id, headers={HEADER: task_id})

    return enqueue


def _queued(task: Any, target: Target | None = None) -> QueuedTask:
    import inspect

    found = target or Target("celery", task.name)
    return QueuedTask(found, inspect.signature(task.run), _enqueue(task))


def queued_task(target: Target) -> QueuedTask:
    """The Celery task ``target`` names (for :mod:`progrock.queues.bridges`)."""
    try:
        task = import_string(target.path)
    except ImportError as exc:
        raise TargetError(f"{target} cannot be imported: {exc}") from None
    if not isinstance(task, CeleryTask):
        raise TargetError(f"{target} is not a Celery task, got {task!r}")
    if not isinstance(task, ProgressTask):
        raise TargetError(f"{target} is not a ProgressTask: declare it with base=ProgressTask")
    return _queued(task, target)


def revoke(job_id: str) -> None:
    """Revoke a queued job (for :mod:`progrock.queues.bridges`)."""
    current_app.control.revoke(job_id)


def start(task: Any, *args: Any, owner: str, **kwargs: Any) -> str:
    """Start a :class:`ProgressTask` job (args and kwargs as for the task) and return
    the ProgRock task id a page subscribes to. Raises ``TooManyTasks`` past the
    owner's limit (nothing is queued then)."""
    return queue_start.start(_queued(task), args, kwargs, owner=owner)


async def astart(task: Any, *args: Any, owner: str, **kwargs: Any) -> str:
    """:func:`start` for async code."""
    return await queue_start.astart(_queued(task), args, kwargs, owner=owner)
