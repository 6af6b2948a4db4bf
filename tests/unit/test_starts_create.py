"""How a start batch's creates reach the service (progrock.worker.starts._create), I/O-free."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from progrock.exceptions import ServiceError, ServiceRejected
from progrock.services.base import ServiceStatus
from progrock.worker.starts import StartRequest, _create


def request(n: int) -> StartRequest:
    return StartRequest(f"task-{n}", "rock", {}, "owner", {})


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


class _Engine:
    def __init__(self, service: object) -> None:
        self.service = service


async def test_one_call_for_the_batch_where_the_service_has_create_many() -> None:
    service = _Service()
    results = await _create(_Engine(service), [request(0), request(1)])  # type: ignore[arg-type]
    assert [r.ref for r in results if isinstance(r, ServiceStatus)] == ["b-task-0", "b-task-1"]
    assert service.many == [2] and service.single == []


async def test_a_failed_batch_call_is_a_transient_error_for_each_start() -> None:
    service = _Service(ServiceError("backend down"))
    results = await _create(_Engine(service), [request(0), request(2)])  # type: ignore[arg-type]
    assert all(isinstance(r, ServiceError) and "backend down" in str(r) for r in results)
    assert service.single == []


async def test_a_broken_create_many_falls_back_to_one_create_per_start() -> None:
    """A bug (not a ServiceError), or an answer of the wrong length, must not fail
    the whole batch: each start goes through create and keeps its own outcome."""
    for batch in (TypeError("bug"), "short"):
        service = _Service(batch)
        results = await _create(
            _Engine(service),  # type: ignore[arg-type]
            [request(0), request(1), request(2)],
        )
        assert service.single == ["task-0", "task-1", "task-2"]
        assert isinstance(results[0], ServiceStatus) and results[0].ref == "b-task-0"
        assert isinstance(results[1], ServiceRejected)
        assert isinstance(results[2], ServiceStatus)


async def test_a_service_without_create_many_gets_one_create_per_start() -> None:
    class Plain:
        create = _Service.create

        def __init__(self) -> None:
            self.single: list[str | None] = []

    service = Plain()
    results = await _create(_Engine(service), [request(0), request(1)])  # type: ignore[arg-type]
    assert service.single == ["task-0", "task-1"]
    assert isinstance(results[0], ServiceStatus) and isinstance(results[1], ServiceRejected)
