"""Backend faults end to end: refusing, 500, garbage and slow backends.

A fault that ends within ``FAILURE_BUDGET`` costs no task; one that lasts
longer fails the tasks it touches (``backend_unreachable``) just after the
budget, and no others: tasks beside it complete. The backend is the reference
one with its task file, so "refusing" is the process killed and started again
on the same port. Run alone with ``pytest -m fault``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from progrock.local.stack import Stack
from tests.conftest import NewDatabase
from tests.e2e.conftest import ECHO
from tests.e2e.faultbackend import FAULTS, Backend
from tests.e2e.wsclient import TERMINAL, Client

pytestmark = [pytest.mark.e2e, pytest.mark.fault, pytest.mark.timeout(180)]

BUDGET = 2.0  # FAILURE_BUDGET of the stack below
SERVICE_TIMEOUT = 5.0  # HttpTaskService's default timeout (the demo sets none)
# A failure comes at the first failed attempt after the budget: at most one backoff
# (RETRY_MAX, 5 s) later, plus a slow backend's timeout, plus time to tell the socket.
FAILS_WITHIN = BUDGET + 5.0 + 3.0
TASK = {"kind": "rock", "params": {"step": 20, "interval_ms": 300}}  # 1.5 s


@pytest.fixture(scope="module")
def backend(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Backend]:
    backend = Backend(tmp_path_factory.mktemp("backend") / "backend.sqlite3")
    try:
        yield backend
    finally:
        backend.close()


@pytest.fixture(scope="module")
def faulty(
    backend: Backend, tmp_path_factory: pytest.TempPathFactory, new_database: NewDatabase
) -> Iterator[Stack]:
    """A stack on ``backend`` with a 2 s failure budget."""
    stack = Stack(
        data_dir=tmp_path_factory.mktemp("backend-faults"),
        backend_url=backend.url,
        database_url=new_database(),
        echo=ECHO,
        env={"PROGROCK_FAILURE_BUDGET": str(BUDGET)},
    )
    stack.start(timeout=90)
    try:
        yield stack
    finally:
        stack.stop()


async def ends(client: Client, task_ids: list[str], timeout: float = 60) -> dict[str, Any]:
    """Each task's terminal message and when it came (loop time), as they arrive."""
    loop = asyncio.get_running_loop()
    found: dict[str, Any] = {}
    deadline = loop.time() + timeout
    while len(found) < len(task_ids):
        message = await client.recv(max(0.01, deadline - loop.time()))
        if message.get("task_id") in task_ids and message.get("type") in TERMINAL:
            found[message["task_id"]] = (message, loop.time())
    return found


async def start_running(client: Client, count: int) -> list[str]:
    """Start ``count`` tasks and wait until the first shows progress."""
    task_ids = [await client.start(**TASK) for _ in range(count)]
    await client.recv_type("progress")
    return task_ids


@pytest.mark.parametrize("kind", list(FAULTS))
async def test_a_fault_within_the_budget_costs_no_task(
    faulty: Stack, backend: Backend, kind: str
) -> None:
    """A fault that ends within FAILURE_BUDGET (half of it): every task running through
    it completes (for "refusing": the backend restarted on its task file)."""
    client = await Client.connect(faulty.url)
    task_ids = await start_running(client, 4)
    await asyncio.to_thread(backend.fault, kind)
    await asyncio.sleep(BUDGET / 2)
    await asyncio.to_thread(backend.heal, kind)
    found = await ends(client, task_ids)
    assert [m["type"] for m, _ in found.values()] == ["complete"] * 4, found
    await client.close()


@pytest.mark.parametrize("kind", list(FAULTS))
async def test_a_fault_beyond_the_budget_fails_its_tasks_just_after_it(
    faulty: Stack, backend: Backend, kind: str
) -> None:
    """A fault of the polls lasting longer than FAILURE_BUDGET: each running task fails
    `backend_unreachable`, no sooner than the budget and soon after it."""
    client = await Client.connect(faulty.url)
    task_ids = await start_running(client, 4)
    loop = asyncio.get_running_loop()
    began = loop.time()
    await asyncio.to_thread(backend.fault, kind, ["status", "get"])
    try:
        found = await ends(client, task_ids)
    finally:
        await asyncio.to_thread(backend.heal, kind)
    for message, at in found.values():
        assert message["type"] == "failed", message
        assert message["error"]["code"] == "backend_unreachable", message
        assert BUDGET <= at - began <= FAILS_WITHIN + (SERVICE_TIMEOUT if kind == "slow" else 0)
    await client.close()


@pytest.mark.parametrize("kind", ["http-500", "garbage"])
async def test_a_fault_of_the_creates_fails_those_tasks_only(
    faulty: Stack, backend: Backend, kind: str
) -> None:
    """Creates faulted beyond the budget: the tasks started meanwhile fail
    `backend_unreachable`; the tasks running beside them complete."""
    client = await Client.connect(faulty.url)
    running = await start_running(client, 3)
    await asyncio.to_thread(backend.fault, kind, ["create"])
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 60
    refs = {f"doomed-{i}" for i in range(3)}
    answers: dict[str, dict[str, Any]] = {}
    ended: dict[str, str] = {}
    try:
        for ref in sorted(refs):
            await client.send({"action": "start", **TASK, "ref": ref})
        while len(answers) < len(refs) or len(ended) < len(running):
            message = await client.recv(max(0.01, deadline - loop.time()))
            if message.get("ref") in refs:
                answers[message["ref"]] = message
            elif message.get("task_id") in running and message.get("type") in TERMINAL:
                ended[message["task_id"]] = message["type"]
    finally:
        await asyncio.to_thread(backend.heal, kind)
    assert ended == dict.fromkeys(running, "complete"), ended
    for message in answers.values():
        assert message["type"] == "failed", message
        assert message["error"]["code"] == "backend_unreachable", message
    await client.close()
