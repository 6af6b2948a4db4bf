"""The task-service interface ProgRock's worker talks to, and strict status parsing.

Pure: no I/O. An adapter (:class:`progrock.services.http.HttpTaskService`, or
your own) implements :class:`TaskService`; errors are
:class:`~progrock.exceptions.ServiceError` (transient: the worker retries with
backoff) or :class:`~progrock.exceptions.ServiceRejected` (permanent).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable

from progrock.exceptions import ServiceError

ServiceState = Literal["running", "succeeded", "failed", "cancelled"]
SERVICE_STATES: frozenset[str] = frozenset({"running", "succeeded", "failed", "cancelled"})
TERMINAL_STATES: frozenset[str] = frozenset({"succeeded", "failed", "cancelled"})


@dataclass(frozen=True, slots=True)
class ServiceStatus:
    """One task as the backend sees it."""

    ref: str
    """The backend's id for the task."""
    state: ServiceState
    progress: float
    """Percent done, 0..100."""
    message: str | None = None
    result: Any = None
    error: str | None = None

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL_STATES


CreateRequest = tuple[str, Mapping[str, Any], str | None]
"""One create of a batch: ``(kind, params, key)``, as :meth:`TaskService.create` takes them."""


@runtime_checkable
class TaskService(Protocol):
    """What the worker needs from a backend task service.

    Every method may raise :class:`~progrock.exceptions.ServiceError` when the
    backend cannot be reached or answers nonsense; the worker retries those.
    """

    async def create(
        self, kind: str, params: Mapping[str, Any], *, key: str | None = None
    ) -> ServiceStatus:
        """Start a task; raise ServiceRejected if the backend refuses it for good.

        ``key`` (ProgRock's task id) makes a retried create return the task
        the first attempt made, if that attempt reached the backend.
        """
        ...

    async def status_many(
        self, refs: Sequence[str]
    ) -> dict[str, ServiceStatus | ServiceError | None]:
        """Poll many tasks at once: one entry per ref.

        An entry is the task's status, ``None`` if the backend does not know
        the ref, or a ServiceError if only that entry was malformed. A failure
        of the whole call raises ServiceError.
        """
        ...

    async def cancel(self, ref: str) -> ServiceStatus | None:
        """Cancel a task and return its state (terminal if it had already ended).

        ``None`` if the backend does not know the ref.
        """
        ...

    async def aclose(self) -> None:
        """Release connections; the service may not be used afterwards."""
        ...


def parse_status(obj: object, *, expected_ref: str | None = None) -> ServiceStatus:
    """Validate one backend task object (``docs/backend.md``) into a ServiceStatus.

    Strict: each field must have its documented type and range, nothing is
    clamped; a bad field raises ServiceError quoting it. Extra fields are
    ignored. ``expected_ref``, if given, must equal the object's ``id``.
    """
    if not isinstance(obj, dict):
        raise ServiceError(f"task status must be an object, got {type(obj).__name__}: {obj!r:.200}")
    ref = obj.get("id")
    if not isinstance(ref, str) or not ref:
        raise ServiceError(f"task status 'id' must be a non-empty string, got {ref!r:.200}")
    if expected_ref is not None and ref != expected_ref:
        raise ServiceError(f"task status 'id' is {ref!r:.200}, expected {expected_ref!r}")
    state = obj.get("state")
    if not isinstance(state, str) or state not in SERVICE_STATES:
        raise ServiceError(
            f"task {ref!r} 'state' must be one of {sorted(SERVICE_STATES)}, got {state!r:.200}"
        )
    progress = obj.get("progress")
    if (
        isinstance(progress, bool)
        or not isinstance(progress, (int, float))
        or not math.isfinite(progress)
        or not 0 <= progress <= 100
    ):
        raise ServiceError(
            f"task {ref!r} 'progress' must be a number within 0..100, got {progress!r:.200}"
        )
    message = obj.get("message")
    if message is not None and not isinstance(message, str):
        raise ServiceError(f"task {ref!r} 'message' must be a string or null, got {message!r:.200}")
    error = obj.get("error")
    if error is not None and not isinstance(error, str):
        raise ServiceError(f"task {ref!r} 'error' must be a string or null, got {error!r:.200}")
    return ServiceStatus(
        ref=ref,
        state=state,  # type: ignore[arg-type]  # checked against SERVICE_STATES above
        progress=float(progress),
        message=_text(message),
        result=obj.get("result"),
        error=_text(error),
    )


def _text(value: str | None) -> str | None:
    """Text that encodes as UTF-8: JSON may carry lone surrogates ("\\udc80"),
    which Redis and the browsers' JSON cannot take; they become U+FFFD."""
    if value is None:
        return None
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return value.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return value
