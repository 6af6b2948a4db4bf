"""HttpTaskService turns every way a backend can misbehave into a precise ServiceError."""

from __future__ import annotations

import time

import pytest

from progrock.exceptions import ServiceError, ServiceRejected
from progrock.local.backend.testing import BackendProcess, start_backend
from progrock.local.redis_server import free_port
from progrock.services.base import ServiceStatus
from progrock.services.http import HttpTaskService


async def test_500_on_status_raises_service_error(
    backend: BackendProcess, service: HttpTaskService
) -> None:
    """A 500 to the batch poll raises ServiceError naming the URL, status and route."""
    ref = (await service.create("rock", {"interval_ms": 1000})).ref
    backend.set_faults(status=500)
    with pytest.raises(ServiceError) as info:
        await service.status_many([ref])
    assert str(info.value).startswith(f"backend {backend.url} answered 500 to POST /tasks/status:")
    assert "injected fault" in str(info.value)


async def test_503_on_create_is_transient(
    backend: BackendProcess, service: HttpTaskService
) -> None:
    """A 5xx to create raises ServiceError (retry), not ServiceRejected."""
    backend.set_faults(status=503, routes=["create"])
    with pytest.raises(ServiceError, match="answered 503 to POST /tasks"):
        await service.create("rock", {})


async def test_delay_beyond_timeout_raises_service_error(backend: BackendProcess) -> None:
    """A backend slower than the adapter's timeout raises ServiceError saying it timed out."""
    service = HttpTaskService(backend.url, timeout=0.2)
    try:
        backend.set_faults(delay_s=3.0, routes=["status"])
        with pytest.raises(ServiceError) as info:
            await service.status_many(["x"])
        assert str(info.value) == (
            f"backend {backend.url} timed out after 0.2 s on POST /tasks/status"
        )
    finally:
        await service.aclose()


async def test_garbage_raises_service_error(
    backend: BackendProcess, service: HttpTaskService
) -> None:
    """A 200 that is not JSON raises ServiceError quoting the body."""
    backend.set_faults(garbage=True)
    with pytest.raises(ServiceError) as info:
        await service.status_many(["x"])
    assert "answered 200 with non-JSON to POST /tasks/status" in str(info.value)
    assert "injected garbage" in str(info.value)


async def test_garbage_on_cancel_raises_service_error(
    backend: BackendProcess, service: HttpTaskService
) -> None:
    """Cancel also maps a non-JSON answer to ServiceError."""
    backend.set_faults(garbage=True, routes=["cancel"])
    with pytest.raises(ServiceError, match="non-JSON to DELETE /tasks/abc"):
        await service.cancel("abc")


async def test_fault_count_heals_after_n_requests(
    backend: BackendProcess, service: HttpTaskService
) -> None:
    """With count=2 the first two polls fail and the third succeeds: retries can recover."""
    ref = (await service.create("rock", {"interval_ms": 1000})).ref
    backend.set_faults(status=500, count=2)
    for _ in range(2):
        with pytest.raises(ServiceError):
            await service.status_many([ref])
    answer = await service.status_many([ref])
    assert isinstance(answer[ref], ServiceStatus)


async def test_refused_connection_raises_service_error() -> None:
    """Nothing listening on the port raises ServiceError saying the backend is unreachable."""
    url = f"http://127.0.0.1:{free_port()}"
    service = HttpTaskService(url, timeout=2.0)
    try:
        with pytest.raises(ServiceError, match=f"backend {url} unreachable on POST /tasks:"):
            await service.create("rock", {})
        with pytest.raises(ServiceError, match="unreachable on DELETE /tasks/x"):
            await service.cancel("x")
    finally:
        await service.aclose()


async def test_cli_faults_apply_from_the_start() -> None:
    """--fault-status makes the process answer that status from its first request."""
    backend = start_backend(extra_args=["--fault-status", "502"], allow_faults=False)
    service = HttpTaskService(backend.url)
    try:
        with pytest.raises(ServiceError, match="answered 502 to POST /tasks/status"):
            await service.status_many(["x"])
    finally:
        await service.aclose()
        assert backend.stop() == 0


async def test_closed_service_refuses_calls(backend: BackendProcess) -> None:
    """After aclose the adapter raises ServiceError instead of reopening a session."""
    service = HttpTaskService(backend.url)
    await service.aclose()
    with pytest.raises(ServiceError, match="is closed"):
        await service.status_many(["x"])


async def test_a_failed_batch_create_is_transient_for_every_entry(
    backend: BackendProcess, service: HttpTaskService
) -> None:
    """A 503 to POST /tasks/batch gives each create a ServiceError (the worker
    retries them), and a garbage answer likewise."""
    backend.set_faults(status=503, routes=["create"], count=1)
    answers = await service.create_many([("rock", {}, "k1"), ("rock", {}, "k2")])
    assert len(answers) == 2
    for answer in answers:
        assert isinstance(answer, ServiceError)
        assert "answered 503 to POST /tasks/batch" in str(answer)
    backend.set_faults(garbage=True, routes=["create"], count=1)
    answers = await service.create_many([("rock", {}, "k3")])
    assert isinstance(answers[0], ServiceError) and "non-JSON" in str(answers[0])
    answers = await service.create_many([("rock", {}, "k4")])  # healed
    assert isinstance(answers[0], ServiceStatus)


async def test_a_batch_refused_as_a_whole_is_created_one_by_one(
    backend: BackendProcess, service: HttpTaskService
) -> None:
    """A 4xx to POST /tasks/batch itself (here a JSON 413) is no verdict on the
    tasks: they are created one POST /tasks each, each keeping its own answer,
    and creates go one by one for a while (BATCH_RETRY_S)."""
    backend.set_faults(status=413, routes=["create"], count=1)
    answers = await service.create_many([("rock", {}, "k5"), ("nope", {}, "k6")])
    assert isinstance(answers[0], ServiceStatus) and answers[0].state == "running"
    assert isinstance(answers[1], ServiceRejected) and "nope" in answers[1].detail
    assert service._no_batch_until > time.monotonic()
