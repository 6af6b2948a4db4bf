"""A task service that times its calls and counts their errors (:mod:`progrock.metrics`).

The worker wraps the configured service in :class:`MeteredService`: every
call's duration goes to ``progrock_backend_seconds{call}``, every failure to
``progrock_backend_errors_total{call, error}``. Without ``prometheus-client``
the metrics are no-ops and the wrapper costs two clock reads per call.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from progrock import metrics
from progrock.exceptions import ServiceError, ServiceRejected
from progrock.services.base import CreateRequest, ServiceStatus, TaskService


def error_kind(exc: BaseException) -> str:
    """What ``progrock_backend_errors_total``'s ``error`` label calls an exception."""
    if isinstance(exc, ServiceRejected):
        return "rejected"
    if isinstance(exc, ServiceError):
        return "unavailable"
    return "exception"


class _Timed:
    """Observes one call's duration, and its error if it raised."""

    __slots__ = ("began", "call")

    def __init__(self, call: str) -> None:
        self.call = call
        self.began = 0.0

    def __enter__(self) -> None:
        self.began = time.perf_counter()

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        metrics.BACKEND_SECONDS.labels(self.call).observe(time.perf_counter() - self.began)
        if exc is not None and isinstance(exc, Exception):
            metrics.BACKEND_ERRORS.labels(self.call, error_kind(exc)).inc()


class MeteredService:
    """``service``, timed and counted; anything else it has is reached through."""

    def __init__(self, service: TaskService) -> None:
        self.service = service
        if callable(getattr(service, "create_many", None)):
            # Only where the service has one: the worker checks for it.
            self.create_many = self._create_many

    def __getattr__(self, name: str) -> Any:
        return getattr(self.service, name)

    async def create(
        self, kind: str, params: Mapping[str, Any], *, key: str | None = None
    ) -> ServiceStatus:
        with _Timed("create"):
            return await self.service.create(kind, params, key=key)

    async def _create_many(
        self, requests: Sequence[CreateRequest]
    ) -> Sequence[ServiceStatus | BaseException]:
        with _Timed("create"):
            answers: Sequence[ServiceStatus | BaseException] = await self.service.create_many(  # type: ignore[attr-defined]
                requests
            )
        for answer in answers:
            if isinstance(answer, BaseException):
                metrics.BACKEND_ERRORS.labels("create", error_kind(answer)).inc()
        return answers

    async def status_many(
        self, refs: Sequence[str]
    ) -> dict[str, ServiceStatus | ServiceError | None]:
        with _Timed("status"):
            answers = await self.service.status_many(refs)
        unknown = sum(1 for answer in answers.values() if answer is None)
        bad = sum(1 for answer in answers.values() if isinstance(answer, ServiceError))
        if unknown:
            metrics.BACKEND_ERRORS.labels("status", "unknown_ref").inc(unknown)
        if bad:
            metrics.BACKEND_ERRORS.labels("status", "bad_entry").inc(bad)
        return answers

    async def cancel(self, ref: str) -> ServiceStatus | None:
        with _Timed("cancel"):
            return await self.service.cancel(ref)

    async def aclose(self) -> None:
        await self.service.aclose()
