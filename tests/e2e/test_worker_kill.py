"""A killed worker's in-flight work is repaired within a stated time.

A worker SIGKILLed while it polls and starts tasks loses what it held: the
ticks it was polling (their poll chains stop) and the starts it was creating.
With the other worker still running and the default settings, the sweep
re-arms each lost poll chain within twice ``SWEEP_INTERVAL`` (10 s)
and each lost start's watchdog forwards it again after ``START_TIMEOUT``
(10 s); docs/reliability.md states these bounds. Run alone with
``pytest -m fault``.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterator
from typing import Any

import pytest

from progrock.local.stack import Stack
from tests.conftest import NewDatabase
from tests.e2e.conftest import ECHO
from tests.e2e.faultbackend import Backend
from tests.e2e.wsclient import TERMINAL, Client

pytestmark = [pytest.mark.e2e, pytest.mark.fault, pytest.mark.timeout(180)]

SWEEP_INTERVAL = 5.0  # the default; a poll this overdue is lost
START_TIMEOUT = 10.0
POLL_INTERVAL = 0.2
SLOW_BACKEND = 1.5  # seconds each status and create call takes meanwhile
SLACK = 4.0  # a loaded test machine
# The longest a running task may go without a message: its lost tick's poll, then
# the first sweep more than SWEEP_INTERVAL after it, then the re-armed poll.
CHAIN_BOUND = SLOW_BACKEND + 2 * SWEEP_INTERVAL + 2 * POLL_INTERVAL + SLACK
# The longest a start may wait for `started`: its watchdog, then a create.
START_BOUND = START_TIMEOUT + 2 * SLOW_BACKEND + SLACK
TASK = {"kind": "rock", "params": {"step": 4, "interval_ms": 800}}  # about 20 s
LATE = {"kind": "rock", "params": {"step": 25, "interval_ms": 800}}  # about 3 s


@pytest.fixture
def backend(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Backend]:
    backend = Backend(tmp_path_factory.mktemp("backend") / "backend.sqlite3")
    try:
        yield backend
    finally:
        backend.close()


@pytest.fixture
def two_workers(
    backend: Backend, tmp_path_factory: pytest.TempPathFactory, new_database: NewDatabase
) -> Iterator[Stack]:
    """A stack with 2 workers on ``backend`` and the default timing settings."""
    stack = Stack(
        data_dir=tmp_path_factory.mktemp("worker-kill"),
        backend_url=backend.url,
        database_url=new_database(),
        echo=ECHO,
        workers=2,
    )
    stack.start(timeout=90)
    try:
        yield stack
    finally:
        stack.stop()


async def read(client: Client, log: list[tuple[float, dict[str, Any]]]) -> None:
    """Record every message of ``client`` with its arrival (loop time) until cancelled."""
    loop = asyncio.get_running_loop()
    while True:
        message = await client.recv(timeout=3600)
        log.append((loop.time(), message))


def longest_silence(log: list[tuple[float, dict[str, Any]]], task_id: str, since: float) -> float:
    """The longest time after ``since`` between two messages of the task (to its end)."""
    times = [since, *(at for at, m in log if m.get("task_id") == task_id and at > since)]
    ends = [at for at, m in log if m.get("task_id") == task_id and m.get("type") in TERMINAL]
    times = [t for t in times if not ends or t <= ends[0]]
    return max((b - a for a, b in itertools.pairwise(times)), default=0.0)


async def first_answer(client: Client) -> tuple[dict[str, Any], float]:
    """The answer to the start ``client`` sent, and when it came (loop time)."""
    answer = await client.recv_type("started", "failed", "error", timeout=60)
    return answer, asyncio.get_running_loop().time()


async def test_a_killed_worker_s_polls_and_starts_are_repaired_in_bounded_time(
    two_workers: Stack, backend: Backend
) -> None:
    """SIGKILL one of two workers while it polls running tasks and creates new ones
    (the backend slowed to 1.5 s a call, so it surely holds both): every running task
    hears again within twice SWEEP_INTERVAL (and slack), every start is
    answered within START_TIMEOUT (and slack), and every task completes."""
    stack = two_workers
    watcher = await Client.connect(stack.url)
    running = [await watcher.start(**TASK) for _ in range(20)]
    log: list[tuple[float, dict[str, Any]]] = []
    reader = asyncio.create_task(read(watcher, log))
    loop = asyncio.get_running_loop()
    await asyncio.to_thread(
        backend.process.set_faults, delay_s=SLOW_BACKEND, routes=["status", "create"]
    )
    starters = [await Client.connect(stack.url) for _ in range(10)]
    sent: list[float] = []
    for i, starter in enumerate(starters):  # one message each: spread over both workers
        await starter.send({"action": "start", **LATE, "ref": f"late-{i}"})
        sent.append(loop.time())
        await asyncio.sleep(0.1)
    await asyncio.sleep(SLOW_BACKEND / 2)  # polls and creates under way in both workers
    await asyncio.to_thread(stack.kill, "worker-1")
    killed = loop.time()
    await asyncio.to_thread(backend.process.clear_faults)
    try:
        answers = await asyncio.gather(*(first_answer(s) for s in starters))
        late_ids = [a["task_id"] for a, _ in answers if a["type"] == "started"]
        finals = await asyncio.gather(
            *(s.until_terminal(t, timeout=90) for s, t in zip(starters, late_ids, strict=True))
        )
        deadline = loop.time() + 90
        while loop.time() < deadline:
            done = {m["task_id"] for _, m in log if m.get("type") in TERMINAL}
            if done >= set(running):
                break
            await asyncio.sleep(0.2)
    finally:
        reader.cancel()
    assert [a["type"] for a, _ in answers] == ["started"] * 10, answers
    waits = [at - began for (_, at), began in zip(answers, sent, strict=True)]
    assert max(waits) <= START_BOUND, waits
    assert max(waits) >= START_TIMEOUT, f"no start was lost: nothing was repaired {waits}"
    assert [f["type"] for f in finals] == ["complete"] * 10, finals
    ended = {m["task_id"]: m["type"] for _, m in log if m.get("type") in TERMINAL}
    assert [ended.get(t) for t in running] == ["complete"] * 20, ended
    silences = {t: longest_silence(log, t, killed) for t in running}
    print(
        f"worker kill: longest silence {max(silences.values()):.1f} s, "
        f"longest start {max(waits):.1f} s"
    )
    assert max(silences.values()) <= CHAIN_BOUND, sorted(silences.values())
    assert max(silences.values()) >= SWEEP_INTERVAL, "no poll chain was lost: nothing was repaired"
    for client in [watcher, *starters]:
        await client.close()
