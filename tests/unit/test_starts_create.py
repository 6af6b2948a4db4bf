"""How a start batch's creates reach the service and what their answers lead to, I/O-free.

(progrock.worker.starts: _create and CreateOutcome.)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from progrock.exceptions import ServiceError, ServiceRejected
from progrock.services.base import ServiceStatus
from progrock.worker.starts import CreateOutcome, StartRequest, _create


def request(n: int, **message: Any) -> StartRequest:
    return StartRequest(f"task-{n}", "rock", {}, "owner", {"task_id": f"task-{n}", **message})


class _Service:
    """create() answers per task; create_many() does what ``batch`` says."""

    def __init__(self, batch: Any = "ok") -> None:
        self.batch = batch
        self.single: list[str | None] = []
        self.many: list[int] = []

    async def create(
        self, kind: str, params: Mapping[str, Any], *, key: str | None = None
    ) -> ServiceStatus:
        self.single.append(key)
        if key == "task-1":
            raise ServiceRejected("no", 400)
        return ServiceStatus(ref=f"b-{key}", state="running", progress=0)

    async def create_many(
        self, requests: Sequence[tuple[str, Mapping[str, Any], str | None]]
    ) -> list[Any]:
        self.many.append(len(requests))
        if isinstance(self.batch, BaseException):
            raise self.batch
        if self.batch == "short":
            return [ServiceStatus(ref="b-x", state="running", progress=0)]
        return [ServiceStatus(ref=f"b-{key}", state="running", progress=0) for *_, key in requests]


async def test_one_call_for_the_batch_where_the_service_has_create_many() -> None:
    """A service with create_many gets the whole batch in one call."""
    service = _Service()
    results = await _create(service, [request(0), request(1)])  # type: ignore[arg-type]
    assert [r.ref for r in results if isinstance(r, ServiceStatus)] == ["b-task-0", "b-task-1"]
    assert service.many == [2] and service.single == []


async def test_a_failed_batch_call_is_a_transient_error_for_each_start() -> None:
    """A ServiceError from create_many is each start's transient error (retried), no fallback."""
    service = _Service(ServiceError("backend down"))
    results = await _create(service, [request(0), request(2)])  # type: ignore[arg-type]
    assert all(isinstance(r, ServiceError) and "backend down" in str(r) for r in results)
    assert service.single == []


async def test_a_broken_create_many_falls_back_to_one_create_per_start() -> None:
    """A bug (not a ServiceError), or an answer of the wrong length, must not fail
    the whole batch: each start goes through create and keeps its own outcome."""
    for batch in (TypeError("bug"), "short"):
        service = _Service(batch)
        results = await _create(
            service,  # type: ignore[arg-type]
            [request(0), request(1), request(2)],
        )
        assert service.single == ["task-0", "task-1", "task-2"]
        assert isinstance(results[0], ServiceStatus) and results[0].ref == "b-task-0"
        assert isinstance(results[1], ServiceRejected)
        assert isinstance(results[2], ServiceStatus)


async def test_a_service_without_create_many_gets_one_create_per_start() -> None:
    """A service with create only gets one create per start, each with its own outcome."""

    class Plain:
        create = _Service.create

        def __init__(self) -> None:
            self.single: list[str | None] = []

    service = Plain()
    results = await _create(service, [request(0), request(1)])  # type: ignore[arg-type]
    assert service.single == ["task-0", "task-1"]
    assert isinstance(results[0], ServiceStatus) and isinstance(results[1], ServiceRejected)


def test_answers_sort_into_created_failed_retried_and_left_to_the_watchdog() -> None:
    """Created; rejected (failed for good); a transient error (retried with backoff, under the
    start's watchdog key); a bug in the service (left queued for the watchdog)."""
    created = ServiceStatus(ref="b-0", state="running", progress=0)
    out = CreateOutcome.sort(
        [request(0), request(1), request(2), request(3)],
        [created, ServiceRejected("bad kind", 400), ServiceError("down"), TypeError("bug")],
        1000.0,
    )
    assert [(r.task_id, s) for r, s in out.created] == [("task-0", created)]
    [ending] = out.endings
    assert ending.task_id == "task-1" and ending.status.value == "failed"
    assert ending.error == {"code": "backend_rejected", "detail": "bad kind"}
    [retry] = out.retries
    assert retry["key"] == "start:task-2" and retry["merge"] is False
    assert retry["content"]["attempt"] == 1 and retry["content"]["first_failure"] == 1000.0
    assert retry["delay"] > 0
    assert out.settled == ["task-1"]  # task-2 keeps its retry, task-3 its watchdog


def test_a_transient_error_past_the_failure_budget_fails_the_start() -> None:
    """Creates failing for longer than FAILURE_BUDGET fail the start: backend_unreachable."""
    out = CreateOutcome.sort(
        [request(0, first_failure=1000.0), request(1, first_failure=990.0)],
        [ServiceError("down"), ServiceError("down")],
        1025.0,  # 25 s after the first one's first failure, 35 s after the second's
    )
    assert [r["content"]["task_id"] for r in out.retries] == ["task-0"]
    assert out.retries[0]["content"]["first_failure"] == 1000.0  # kept across attempts
    [ending] = out.endings
    assert ending.task_id == "task-1" and ending.error is not None
    assert ending.error["code"] == "backend_unreachable"
    assert out.settled == ["task-1"]
