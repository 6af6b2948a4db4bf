"""The backend's raw HTTP API: status codes and JSON error bodies (docs/backend.md)."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from typing import Any

import aiohttp
import pytest

from progrock.local.backend.testing import BackendProcess, BackendStartError, start_backend


async def call(
    backend: BackendProcess, method: str, path: str, body: Any = None, raw: bytes | None = None
) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as session,
        session.request(
            method,
            backend.url + path,
            data=raw if raw is not None else (None if body is None else json.dumps(body)),
        ) as response,
    ):
        assert response.content_type == "application/json"
        return response.status, await response.json()


async def test_health(backend: BackendProcess) -> None:
    """GET /health answers ok."""
    status, body = await call(backend, "GET", "/health")
    assert status == 200 and body["ok"] is True


async def test_kinds_lists_params_with_defaults(backend: BackendProcess) -> None:
    """GET /kinds lists rock and hash with each param's default."""
    status, body = await call(backend, "GET", "/kinds")
    assert status == 200
    assert body["kinds"]["rock"]["step"]["default"] == 3
    assert body["kinds"]["rock"]["interval_ms"]["default"] == 200
    assert body["kinds"]["hash"]["mb"]["default"] == 32


async def test_create_answers_201_with_full_state(backend: BackendProcess) -> None:
    """POST /tasks answers 201 with every field of the task state object."""
    status, body = await call(backend, "POST", "/tasks", {"kind": "rock", "params": {}})
    assert status == 201
    assert set(body) == {
        "id",
        "kind",
        "state",
        "progress",
        "message",
        "result",
        "error",
        "created_at",
    }
    assert body["kind"] == "rock" and body["state"] == "running"
    assert isinstance(body["created_at"], float)


async def test_get_task_and_unknown_task(backend: BackendProcess) -> None:
    """GET /tasks/{id} answers the task, or 404 quoting an unknown id."""
    _, created = await call(backend, "POST", "/tasks", {"kind": "rock"})
    status, body = await call(backend, "GET", f"/tasks/{created['id']}")
    assert status == 200 and body["id"] == created["id"]
    status, body = await call(backend, "GET", "/tasks/nope")
    assert (status, body) == (404, {"error": "unknown task 'nope'"})


async def test_delete_answers_cancelled_then_409_for_finished(backend: BackendProcess) -> None:
    """DELETE cancels a running task (200) and answers 409 with the state of a finished one."""
    _, running = await call(backend, "POST", "/tasks", {"kind": "rock"})
    status, body = await call(backend, "DELETE", f"/tasks/{running['id']}")
    assert status == 200 and body["state"] == "cancelled"
    params = {"step": 100, "interval_ms": 1}
    _, done = await call(backend, "POST", "/tasks", {"kind": "rock", "params": params})
    deadline = time.monotonic() + 20
    while (await call(backend, "GET", f"/tasks/{done['id']}"))[1]["state"] == "running":
        assert time.monotonic() < deadline, "the 1 ms rock task did not finish in 20 s"
        await asyncio.sleep(0.01)
    status, body = await call(backend, "DELETE", f"/tasks/{done['id']}")
    assert status == 409
    assert body["task"]["state"] == "succeeded"
    assert "already succeeded" in body["error"]


async def test_batch_status_limits(backend: BackendProcess) -> None:
    """POST /tasks/status takes at most 1000 string ids and says so otherwise."""
    status, body = await call(backend, "POST", "/tasks/status", {"ids": ["a"] * 1000})
    assert status == 200 and body == {"tasks": {"a": None}}
    status, body = await call(backend, "POST", "/tasks/status", {"ids": ["a"] * 1001})
    assert (status, body) == (400, {"error": "at most 1000 ids per call, got 1001"})
    status, body = await call(backend, "POST", "/tasks/status", {"ids": [1]})
    assert (status, body) == (400, {"error": "ids must be strings, got int: 1"})
    status, body = await call(backend, "POST", "/tasks/status", ["a"])
    assert status == 400 and "got ['a']" in body["error"]


@pytest.mark.parametrize(
    ("body", "raw", "message"),
    [
        (None, b"{nope", "request body is not valid JSON"),
        ([], None, "body must be an object, got list: []"),
        ({"kind": 7}, None, "'kind' must be a string, got int: 7"),
        ({"kind": "rock", "params": [1]}, None, "'params' must be an object, got list: [1]"),
        ({"kind": "rock", "extra": 1}, None, "unknown fields ['extra']"),
    ],
)
async def test_create_400_quotes_the_bad_value(
    backend: BackendProcess, body: Any, raw: bytes | None, message: str
) -> None:
    """Malformed POST /tasks bodies answer 400 with a message quoting the problem."""
    status, answer = await call(backend, "POST", "/tasks", body, raw=raw)
    assert status == 400
    assert message in answer["error"]


async def test_unknown_route_and_method_answer_json(backend: BackendProcess) -> None:
    """Unknown routes (404) and methods (405) still answer JSON errors."""
    assert await call(backend, "GET", "/nowhere") == (404, {"error": "no route for GET '/nowhere'"})
    status, body = await call(backend, "PUT", "/tasks")
    assert status == 405 and body == {"error": "method PUT not allowed on '/tasks'"}


async def test_bad_faults_are_rejected(backend: BackendProcess) -> None:
    """POST /_faults validates its body and quotes bad values."""
    status, body = await call(backend, "POST", "/_faults", {"status": 200})
    assert (status, body) == (
        400,
        {"error": "fault 'status' must be null or an integer 400..599, got 200"},
    )
    status, body = await call(backend, "POST", "/_faults", {"routes": ["everything"]})
    assert status == 400 and "['everything']" in body["error"]


async def test_faults_endpoint_is_off_by_default() -> None:
    """Without --allow-faults, /_faults answers 404 and faults cannot be set."""
    backend = start_backend(allow_faults=False)
    try:
        status, body = await call(backend, "POST", "/_faults", {"status": 500})
        assert status == 404 and "--allow-faults" in body["error"]
    finally:
        backend.stop()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_exits_cleanly(signum: signal.Signals) -> None:
    """SIGTERM and SIGINT stop the process with exit code 0 and no traceback."""
    backend = start_backend()
    backend.process.send_signal(signum)
    try:
        assert backend.process.wait(15) == 0
        assert "Traceback" not in backend.stderr_text()
    finally:
        backend.stop()


def test_port_zero_reports_the_real_port() -> None:
    """--port 0 binds a free port and the readiness line names it."""
    backend = start_backend(port=0)
    try:
        assert backend.port > 0
        assert backend.url == f"http://127.0.0.1:{backend.port}"
    finally:
        backend.stop()


def test_bad_cli_argument_fails_to_start_with_stderr() -> None:
    """A bad flag makes start_backend raise with the process's stderr, and reaps it."""
    with pytest.raises(BackendStartError, match="--hash-workers must be >= 1, got 0"):
        start_backend(extra_args=["--hash-workers", "0"])


async def test_batch_create_answers_each_entry_as_a_single_create(
    backend: BackendProcess,
) -> None:
    """POST /tasks/batch: one entry per request, in order, with the status and the
    task state (or the error) that POST /tasks would have answered."""
    requests = [
        {"kind": "rock", "params": {}, "idempotency_key": "k-1"},
        {"kind": "nope"},
        {"kind": "rock", "params": {}, "idempotency_key": "k-1"},  # the same task again
        "junk",
    ]
    status, body = await call(backend, "POST", "/tasks/batch", {"tasks": requests})
    assert status == 200
    first, unknown, again, junk = body["tasks"]
    assert first["status"] == 201 and first["task"]["state"] == "running"
    assert unknown["status"] == 400 and "nope" in unknown["error"]
    assert again == {"status": 200, "task": first["task"]}
    assert junk["status"] == 400 and "body must be an object" in junk["error"]


async def test_batch_create_limits(backend: BackendProcess) -> None:
    """More than 1000 creates, or a body that is not {'tasks': [...]}, answer 400."""
    too_many = {"tasks": [{"kind": "rock"}] * 1001}
    status, body = await call(backend, "POST", "/tasks/batch", too_many)
    assert status == 400 and "at most 1000 tasks per call, got 1001" in body["error"]
    for bad in ([{"kind": "rock"}], {"tasks": "rock"}, {"tasks": [], "extra": 1}):
        status, body = await call(backend, "POST", "/tasks/batch", bad)
        assert status == 400 and "body must be {'tasks': [create requests]}" in body["error"]
