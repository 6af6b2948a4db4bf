"""docs/howto-backend.md's adapter, run exactly as printed, against a real (private) Redis."""

from __future__ import annotations

import re
import types
from pathlib import Path
from typing import Any

import pytest
import redis

from progrock.exceptions import ServiceError, ServiceRejected
from progrock.services.base import ServiceStatus, TaskService

pytestmark = pytest.mark.redis

DOC = Path(__file__).resolve().parents[2] / "docs" / "howto-backend.md"
BLOCK = re.compile(r'```python title="myproject/progress_service.py"\n(.*?)\n```', re.DOTALL)
TASK = "6f1c2d3e-0000-4000-8000-000000000001"


def adapter_module() -> types.ModuleType:
    """The how-to's ``myproject/progress_service.py``, as a module."""
    (source,) = BLOCK.findall(DOC.read_text())
    module = types.ModuleType("progress_service")
    exec(compile(source, str(DOC), "exec"), module.__dict__)
    return module


def service(url: str) -> Any:
    return adapter_module().RedisJobService(url)


async def test_two_workers_see_the_job_the_runner_moves(redis_url: str) -> None:
    """One instance creates; another (a second worker) polls it as the runner writes it."""
    first, second = service(redis_url), service(redis_url)
    runner = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        assert isinstance(first, TaskService)
        created = await first.create("report", {"year": 2026}, key=TASK)
        assert created == ServiceStatus(TASK, "running", 0.0)
        assert runner.lrange("jobs:queue", 0, -1) == [TASK]
        runner.hset(f"jobs:{TASK}", mapping={"progress": 40, "message": "page 4 of 10"})
        seen = await second.status_many([TASK, "nobody"])
        assert seen == {TASK: ServiceStatus(TASK, "running", 40.0, "page 4 of 10"), "nobody": None}
        runner.hset(f"jobs:{TASK}", mapping={"state": "succeeded", "progress": 100, "result": "7"})
        assert (await first.status_many([TASK]))[TASK] == ServiceStatus(
            TASK, "succeeded", 100.0, "page 4 of 10", 7
        )
    finally:
        runner.close()
        await first.aclose()
        await second.aclose()


async def test_a_retried_create_finds_the_first_job(redis_url: str) -> None:
    """The same key twice makes one job, queued once."""
    adapter = service(redis_url)
    runner = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        await adapter.create("import", {}, key=TASK)
        runner.hset(f"jobs:{TASK}", "progress", 5)
        again = await adapter.create("import", {}, key=TASK)
        assert again.progress == 5.0
        assert runner.llen("jobs:queue") == 1
    finally:
        runner.close()
        await adapter.aclose()


async def test_cancel_marks_the_job_and_leaves_an_ended_one(redis_url: str) -> None:
    """cancel sets a running job cancelled, returns an ended one as it is, None if unknown."""
    adapter = service(redis_url)
    try:
        await adapter.create("report", {}, key=TASK)
        assert (await adapter.cancel(TASK)).state == "cancelled"
        assert (await adapter.cancel(TASK)).state == "cancelled"
        assert await adapter.cancel("nobody") is None
    finally:
        await adapter.aclose()


async def test_bad_input_is_rejected_or_reported_per_entry(redis_url: str) -> None:
    """An unknown kind is rejected for good; a garbled job is an error for that entry only."""
    adapter = service(redis_url)
    runner = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        with pytest.raises(ServiceRejected, match="unknown kind 'nope'"):
            await adapter.create("nope", {}, key=TASK)
        runner.hset("jobs:garbled", mapping={"state": "running", "progress": "lots"})
        runner.hset("jobs:fine", mapping={"state": "running", "progress": "3"})
        seen = await adapter.status_many(["garbled", "fine"])
        assert isinstance(seen["garbled"], ServiceError) and "garbled" in str(seen["garbled"])
        assert seen["fine"] == ServiceStatus("fine", "running", 3.0)
    finally:
        runner.close()
        await adapter.aclose()


async def test_an_unreachable_store_is_a_transient_error() -> None:
    """Nothing listening: create raises ServiceError (the worker retries), not RedisError."""
    adapter = service("redis://127.0.0.1:9/0")
    try:
        with pytest.raises(ServiceError, match="job store"):
            await adapter.create("report", {}, key=TASK)
    finally:
        await adapter.aclose()
