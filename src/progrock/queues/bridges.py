"""A queue target's task, imported: what it accepts and how to queue it.

Each scheme's module (``celery`` -> :mod:`progrock.celery`, ``tasks`` ->
:mod:`progrock.django_tasks`) turns a dotted path into a :class:`QueuedTask`
and can revoke a queued job. Importing a scheme's module without its extra
raises :class:`~progrock.exceptions.MissingExtra`, which names the extra.
"""

from __future__ import annotations

import importlib
import inspect
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol, cast

from progrock.queues.targets import Target

logger = logging.getLogger("progrock.queues")

#: Scheme -> the module that bridges it.
MODULES: Final[Mapping[str, str]] = {
    "celery": "progrock.celery",
    "tasks": "progrock.django_tasks",
}

#: ``enqueue(progrock_task_id, args, kwargs)``: queue one job (blocking I/O: call it in a thread).
Enqueue = Callable[[str, Sequence[Any], Mapping[str, Any]], None]


class TargetError(LookupError):
    """A target that cannot be used: not importable, or not a task of its queue."""


@dataclass(frozen=True, slots=True)
class QueuedTask:
    """A queue's task, ready to start: its target, the parameters it accepts
    (its signature without ProgRock's own first parameter), how to queue it."""

    target: Target
    signature: inspect.Signature
    enqueue: Enqueue


class _Scheme(Protocol):
    def queued_task(self, target: Target) -> QueuedTask: ...
    def revoke(self, job_id: str) -> None: ...


def _scheme(name: str) -> _Scheme:
    return cast(_Scheme, importlib.import_module(MODULES[name]))


def resolve(target: Target) -> QueuedTask:
    """Import ``target``'s task; raises :class:`TargetError` (naming it) if it is not one,
    :class:`~progrock.exceptions.MissingExtra` if its queue is not installed."""
    return _scheme(target.scheme).queued_task(target)


def params_problem(queued: QueuedTask, params: Mapping[str, Any]) -> str | None:
    """Why ``params`` are not keyword arguments ``queued`` accepts, or None if they are."""
    try:
        queued.signature.bind(**params)
    except TypeError as exc:
        return f"params {sorted(params)} do not fit {queued.target}{queued.signature}: {exc}"
    return None


def link(target: Target, task_id: str) -> str:
    """What a push task's row keeps (``backend_ref``) to revoke its queued job later."""
    return f"{target.scheme}:{task_id}"


def revoke(ref: str) -> None:
    """Revoke the job a :func:`link` names, where its queue can (blocking: call it in a
    thread). Best effort: a job that runs anyway sees the cancel when it starts."""
    scheme, _, job_id = ref.partition(":")
    if scheme not in MODULES or not job_id:
        return
    try:
        _scheme(scheme).revoke(job_id)
    except Exception as exc:
        logger.warning("could not revoke %s: %r", ref, exc)


def signature_without_first(func: Callable[..., Any]) -> inspect.Signature:
    """``func``'s signature less its first parameter (``self``, ``progress``)."""
    signature = inspect.signature(func)
    params = list(signature.parameters.values())[1:]
    return signature.replace(parameters=params)
