"""The reference backend's task lifecycle, driven through HttpTaskService."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from aiohttp import web

from progrock.exceptions import ServiceError, ServiceRejected
from progrock.local.backend.kinds import generate_stream
from progrock.local.backend.testing import start_backend
from progrock.services.base import ServiceStatus
from progrock.services.http import HttpTaskService

DEADLINE = 20.0


async def poll_until(
    service: HttpTaskService,
    ref: str,
    done: Callable[[ServiceStatus], bool],
    seen: list[ServiceStatus] | None = None,
    timeout: float = DEADLINE,
) -> ServiceStatus:
    """Poll ``ref`` every 10 ms until ``done(status)``; fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        status = (await service.status_many([ref]))[ref]
        assert isinstance(status, ServiceStatus), f"unexpected entry {status!r}"
        if seen is not None:
            seen.append(status)
        if done(status):
            return status
        if time.monotonic() > deadline:
            pytest.fail(f"task {ref} not done within {timeout} s; last status {status!r}")
        await asyncio.sleep(0.01)


async def wait_for(check: Callable[[], Awaitable[bool]], what: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while not await check():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} did not happen within {DEADLINE} s")
        await asyncio.sleep(0.02)


async def test_create_rock_starts_running(service: HttpTaskService) -> None:
    """Creating a rock task answers a running status at 0 % with the backend's ref."""
    status = await service.create("rock", {"interval_ms": 1000})
    assert status.state == "running"
    assert status.progress == 0
    assert status.message == "rocking 0%"
    assert status.ref


async def test_rock_progresses_monotonically_to_success(service: HttpTaskService) -> None:
    """A rock task's progress only rises, in steps, and ends succeeded at 100 with a result."""
    created = await service.create("rock", {"interval_ms": 20, "step": 10})
    seen: list[ServiceStatus] = []
    final = await poll_until(service, created.ref, lambda s: s.terminal, seen)
    assert final.state == "succeeded"
    assert final.progress == 100
    assert final.result == {"riffs": 10}
    assert final.error is None
    progresses = [s.progress for s in seen]
    assert progresses == sorted(progresses)
    assert all(p % 10 == 0 for p in progresses)


async def test_rock_default_step_reaches_exactly_100(service: HttpTaskService) -> None:
    """With the default 3 % step the last step is capped at 100, not 102."""
    created = await service.create("rock", {"interval_ms": 5})
    final = await poll_until(service, created.ref, lambda s: s.terminal)
    assert (final.state, final.progress, final.result) == ("succeeded", 100, {"riffs": 34})


async def test_rock_fail_at_fails_with_error(service: HttpTaskService) -> None:
    """A rock task with fail_at fails once progress reaches it, with an error naming it."""
    created = await service.create("rock", {"interval_ms": 10, "step": 10, "fail_at": 35})
    final = await poll_until(service, created.ref, lambda s: s.terminal)
    assert final.state == "failed"
    assert final.progress == 40
    assert final.error is not None and "fail_at=35" in final.error
    assert final.result is None


async def test_hash_result_matches_hashlib(service: HttpTaskService) -> None:
    """A hash task's result is SHA-256 of generate_stream over the same size."""
    created = await service.create("hash", {"mb": 3})
    final = await poll_until(service, created.ref, lambda s: s.terminal)
    expected = hashlib.sha256(b"".join(generate_stream(3))).hexdigest()
    assert final.state == "succeeded"
    assert final.result == {"sha256": expected, "bytes": 3 * 1024 * 1024}
    assert final.message == "hashed 3 of 3 MiB"


async def test_cancel_running_rock_is_idempotent(service: HttpTaskService) -> None:
    """Cancelling a running task freezes it as cancelled; cancelling again answers the same."""
    created = await service.create("rock", {"interval_ms": 10, "step": 1})
    await poll_until(service, created.ref, lambda s: s.progress > 0)
    first = await service.cancel(created.ref)
    assert first is not None and first.state == "cancelled"
    again = await service.cancel(created.ref)
    assert again == first
    polled = (await service.status_many([created.ref]))[created.ref]
    assert polled == first


async def test_cancel_finished_task_returns_its_terminal_state(service: HttpTaskService) -> None:
    """Cancelling a task that already succeeded returns its succeeded status (409 path)."""
    created = await service.create("rock", {"interval_ms": 1, "step": 50})
    await poll_until(service, created.ref, lambda s: s.terminal)
    status = await service.cancel(created.ref)
    assert status is not None and status.state == "succeeded"


async def test_cancel_unknown_ref_returns_none(service: HttpTaskService) -> None:
    """Cancelling a ref the backend never issued answers None."""
    assert await service.cancel("no-such-task/../x") is None


async def test_status_many_reports_unknown_refs_as_none(
    backend_url_service: HttpTaskService,
) -> None:
    """A batch poll returns one entry per ref, None for unknown ones, across several chunks."""
    service = backend_url_service
    refs = [(await service.create("rock", {"interval_ms": 1000})).ref for _ in range(5)]
    asked = [refs[0], "unknown-1", *refs[1:], "unknown-2"]
    answer = await service.status_many(asked)
    assert list(answer) == asked
    assert answer["unknown-1"] is None and answer["unknown-2"] is None
    for ref in refs:
        entry = answer[ref]
        assert isinstance(entry, ServiceStatus) and entry.ref == ref


async def test_status_many_of_nothing_is_empty(service: HttpTaskService) -> None:
    """Polling no refs answers an empty dict."""
    assert await service.status_many([]) == {}


async def test_unknown_kind_is_rejected_with_reason(service: HttpTaskService) -> None:
    """Creating an unknown kind raises ServiceRejected(400) with the backend's reason only."""
    with pytest.raises(ServiceRejected) as info:
        await service.create("jazz", {})
    assert info.value.status == 400
    assert info.value.detail == "unknown kind 'jazz'; expected one of ['hash', 'rock']"
    assert str(info.value) == info.value.detail


@pytest.mark.parametrize(
    ("kind", "params", "quoted"),
    [
        ("rock", {"step": 0}, "'step' must be > 0, got 0"),
        ("rock", {"interval_ms": "fast"}, "'interval_ms' must be a finite number, got 'fast'"),
        ("rock", {"fail_at": 120}, "'fail_at' must be within 0..100, got 120.0"),
        ("rock", {"tempo": 1}, "unknown params ['tempo']"),
        ("hash", {"mb": 5000}, "'mb' must be an integer within 1..4096, got 5000"),
        ("hash", {"mb": 1.5}, "got 1.5"),
        ("hash", {"rate_mb_s": -1}, "'rate_mb_s' must be > 0, got -1"),
    ],
)
async def test_bad_params_are_rejected_with_reason(
    service: HttpTaskService, kind: str, params: dict[str, object], quoted: str
) -> None:
    """Bad params raise ServiceRejected(400) whose detail quotes the bad value."""
    with pytest.raises(ServiceRejected) as info:
        await service.create(kind, params)
    assert info.value.status == 400
    assert quoted in info.value.detail


async def test_hash_pool_is_bounded_and_cancel_frees_it() -> None:
    """With one hash worker a second task waits "queued"; cancelling the first lets it run."""
    backend = start_backend(extra_args=["--hash-workers", "1"])
    service = HttpTaskService(backend.url)
    try:
        slow = await service.create("hash", {"mb": 4096, "rate_mb_s": 1})
        await poll_until(service, slow.ref, lambda s: s.progress > 0)
        waiting = await service.create("hash", {"mb": 1})
        queued = (await service.status_many([waiting.ref]))[waiting.ref]
        assert isinstance(queued, ServiceStatus)
        assert (queued.state, queued.progress, queued.message) == ("running", 0, "queued")
        cancelled = await service.cancel(slow.ref)
        assert cancelled is not None and cancelled.state == "cancelled"
        final = await poll_until(service, waiting.ref, lambda s: s.terminal)
        assert final.state == "succeeded"
        after = (await service.status_many([slow.ref]))[slow.ref]
        assert isinstance(after, ServiceStatus)
        assert after.state == "cancelled"
    finally:
        await service.aclose()
        assert backend.stop() == 0


async def test_cancel_queued_hash_never_runs() -> None:
    """A hash task cancelled while queued ends cancelled at 0 % without running."""
    backend = start_backend(extra_args=["--hash-workers", "1"])
    service = HttpTaskService(backend.url)
    try:
        slow = await service.create("hash", {"mb": 4096, "rate_mb_s": 1})
        queued = await service.create("hash", {"mb": 1})
        cancelled = await service.cancel(queued.ref)
        assert cancelled is not None
        assert (cancelled.state, cancelled.progress) == ("cancelled", 0)
        await service.cancel(slow.ref)
        later = (await service.status_many([queued.ref]))[queued.ref]
        assert isinstance(later, ServiceStatus) and later.state == "cancelled"
    finally:
        await service.aclose()
        assert backend.stop() == 0


async def test_finished_tasks_are_forgotten_after_ttl() -> None:
    """A finished task disappears (status None) once the TTL has passed."""
    backend = start_backend(extra_args=["--ttl", "0.2"])
    service = HttpTaskService(backend.url)
    try:
        running = await service.create("rock", {"interval_ms": 60_000})
        done = await service.create("rock", {"interval_ms": 1, "step": 100})

        async def forgotten() -> bool:
            return (await service.status_many([done.ref]))[done.ref] is None

        await wait_for(forgotten, "forgetting the finished task")
        still = (await service.status_many([running.ref]))[running.ref]
        assert isinstance(still, ServiceStatus) and still.state == "running"
    finally:
        await service.aclose()
        assert backend.stop() == 0


async def test_a_retried_create_with_the_same_key_returns_the_same_task(
    service: HttpTaskService,
) -> None:
    """POST /tasks twice with one idempotency key makes one task (a retry after a timeout)."""
    first = await service.create("rock", {"interval_ms": 1000}, key="task-abc")
    again = await service.create("rock", {"interval_ms": 1000}, key="task-abc")
    other = await service.create("rock", {"interval_ms": 1000}, key="task-xyz")
    assert again.ref == first.ref
    assert other.ref != first.ref


async def test_create_many_answers_each_create_in_order(service: HttpTaskService) -> None:
    """create_many: one POST /tasks/batch; per entry a status, or the ServiceRejected
    that create would have raised; the same key gives the same task."""
    answers = await service.create_many(
        [
            ("rock", {"interval_ms": 1000}, "key-a"),
            ("rock", {"step": "many"}, "key-b"),
            ("rock", {"interval_ms": 1000}, "key-a"),
            ("rock", {"interval_ms": 1000}, None),
        ]
    )
    first, bad, again, keyless = answers
    assert isinstance(first, ServiceStatus) and first.state == "running"
    assert isinstance(bad, ServiceRejected) and bad.status == 400 and "step" in bad.detail
    assert isinstance(again, ServiceStatus) and again.ref == first.ref
    assert isinstance(keyless, ServiceStatus) and keyless.ref != first.ref


@contextlib.asynccontextmanager
async def batch_refusing_backend(status: int, seen: list[str]) -> AsyncIterator[HttpTaskService]:
    """A backend whose POST /tasks works and whose POST /tasks/batch answers
    ``status`` with an HTML page (what a proxy or a framework's default sends)."""
    from aiohttp import web

    async def create(request: web.Request) -> web.Response:
        body = await request.json()
        seen.append(request.path)
        task = {"id": f"t-{body['idempotency_key']}", "state": "running", "progress": 0}
        return web.json_response(task, status=201)

    async def refuse(request: web.Request) -> web.Response:
        seen.append(request.path)
        return web.Response(status=status, text="<html>no</html>", content_type="text/html")

    app = web.Application()
    app.router.add_post("/tasks", create)
    app.router.add_post("/tasks/batch", refuse)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    service = HttpTaskService(f"http://127.0.0.1:{port}")
    try:
        yield service
    finally:
        await service.aclose()
        await runner.cleanup()


@pytest.mark.parametrize("status", [404, 405, 413])
async def test_create_many_falls_back_to_single_creates_when_the_batch_is_refused(
    status: int,
) -> None:
    """No batch route (404, 405), or the batch refused as a whole (a proxy's 413),
    even as HTML: one create per task, and no batch call for BATCH_RETRY_S."""
    seen: list[str] = []
    async with batch_refusing_backend(status, seen) as service:
        first = await service.create_many([("rock", {}, "a"), ("rock", {}, "b")])
        second = await service.create_many([("rock", {}, "c")])
        service._no_batch_until = time.monotonic() - 1  # BATCH_RETRY_S later: asked again
        third = await service.create_many([("rock", {}, "d")])
    assert [s.ref for s in first if isinstance(s, ServiceStatus)] == ["t-a", "t-b"]
    assert [s.ref for s in second if isinstance(s, ServiceStatus)] == ["t-c"]
    assert [s.ref for s in third if isinstance(s, ServiceStatus)] == ["t-d"]
    assert seen == ["/tasks/batch", "/tasks", "/tasks", "/tasks", "/tasks/batch", "/tasks"]


@pytest.mark.parametrize("status", [408, 429])
async def test_a_busy_answer_to_a_batch_is_transient_for_each_create(status: int) -> None:
    """A 408 or 429 says nothing about the route or the tasks: each create gets
    a ServiceError (the worker retries), no single creates are sent, and the
    batch route stays in use."""
    seen: list[str] = []
    async with batch_refusing_backend(status, seen) as service:
        answers = await service.create_many([("rock", {}, "a"), ("rock", {}, "b")])
        assert service._no_batch_until == 0.0
    assert all(isinstance(a, ServiceError) and f"answered {status}" in str(a) for a in answers)
    assert seen == ["/tasks/batch"]


@contextlib.asynccontextmanager
async def stub_backend() -> AsyncIterator[tuple[str, list[object]]]:
    """A tiny HTTP server answering POST /tasks/status (it knows no task); yields its URL
    and the client address of each request."""
    peers: list[object] = []

    async def statuses(request: web.Request) -> web.Response:
        peers.append(request.transport.get_extra_info("peername") if request.transport else None)
        ids = (await request.json())["ids"]
        return web.json_response({"tasks": dict.fromkeys(ids)})

    app = web.Application()
    app.router.add_post("/tasks/status", statuses)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}", peers
    finally:
        await runner.cleanup()


async def test_calls_one_after_another_reuse_one_connection() -> None:
    """The service keeps its connection open: a later call goes out on the same one."""
    async with stub_backend() as (url, peers):
        svc = HttpTaskService(url)
        try:
            assert await svc.status_many(["a"]) == {"a": None}
            assert await svc.status_many(["b"]) == {"b": None}
        finally:
            await svc.aclose()
    assert len(peers) == 2 and peers[0] == peers[1]  # the same client port: one connection
