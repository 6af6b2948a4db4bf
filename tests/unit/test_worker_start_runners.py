"""How many start runners a worker lets loose (WorkerConsumer.progrock_start)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pytest

from progrock.worker.consumer import WorkerConsumer


@pytest.fixture
def consumer() -> tuple[WorkerConsumer, asyncio.Event, list[int]]:
    """A worker whose runners only wait for ``release`` (no worker context, no I/O)."""
    release = asyncio.Event()
    runs: list[int] = []
    c = WorkerConsumer()

    async def run_starts() -> None:
        runs.append(len(c._starts or []))
        try:
            await release.wait()
        finally:
            c._start_runners -= 1

    c._run_starts = run_starts  # type: ignore[method-assign]
    return c, release, runs


def start() -> dict[str, Any]:
    return {"type": "progrock.start", "task_id": str(uuid.uuid4())}


async def until(condition: Callable[[], bool]) -> None:
    """Let the event loop run until ``condition()`` holds (at most 5 s)."""
    async with asyncio.timeout(5):
        while not condition():
            await asyncio.sleep(0.001)


async def test_a_burst_of_starts_gets_one_runner(
    consumer: tuple[WorkerConsumer, asyncio.Event, list[int]],
) -> None:
    """Starts arriving while a runner is on its batch queue for it: no second runner."""
    c, release, runs = consumer
    for _ in range(5):
        await c.progrock_start(start())
        await asyncio.sleep(0)
    assert c._start_runners == 1 and len(runs) == 1 and len(c._starts or []) == 5
    release.set()
    while c._start_runners:
        await asyncio.sleep(0)


async def test_a_slow_batch_lets_another_runner_start(
    consumer: tuple[WorkerConsumer, asyncio.Event, list[int]],
) -> None:
    """Once every runner has been on its batch for longer than START_PATIENCE
    (a slow backend or database), a further start brings another runner, up to
    START_RUNNERS."""
    c, release, runs = consumer
    c.START_PATIENCE = 0.05
    c.START_RUNNERS = 2
    await c.progrock_start(start())
    await asyncio.sleep(0.08)  # the first runner is now slow
    await c.progrock_start(start())
    await asyncio.sleep(0)
    assert c._start_runners == 2 and len(runs) == 2
    await asyncio.sleep(0.08)
    await c.progrock_start(start())  # at the limit
    await asyncio.sleep(0)
    assert c._start_runners == 2 and len(runs) == 2
    release.set()
    while c._start_runners:
        await asyncio.sleep(0)


class _SlowConsumer(WorkerConsumer):
    """Batches that take until ``release``: a slow backend or database."""

    START_WINDOW = 0.0

    def __init__(self) -> None:
        super().__init__()
        self.release = asyncio.Event()
        self.batches: list[int] = []

    async def start_batch(self, batch: Sequence[Mapping[str, Any]]) -> None:
        self.batches.append(len(batch))
        await self.release.wait()


async def test_a_slow_batch_brings_another_runner_without_new_starts() -> None:
    """Starts still wait behind a batch that takes longer than START_PATIENCE:
    another runner takes them even if no further start arrives."""
    c = _SlowConsumer()
    c.START_BATCH = 2
    c.START_PATIENCE = 0.5  # long beside the loop's turns: "not yet" cannot be a stall
    await c.progrock_start({"type": "progrock.start", "starts": [start() for _ in range(5)]})
    await until(lambda: bool(c.batches))
    assert c._start_runners == 1 and c.batches == [2]
    async with asyncio.timeout(5):
        while len(c.batches) < 3:  # a second runner, then a third, each after the patience
            await asyncio.sleep(0.01)
    assert c._start_runners == 3 and c.batches == [2, 2, 1] and not c._starts
    c.release.set()
    async with asyncio.timeout(5):
        while c._start_runners:
            await asyncio.sleep(0.01)


async def test_a_start_arriving_during_a_slow_batch_gets_a_runner_once_patience_runs_out() -> None:
    """The batch took every waiting start; one more arrives early in that slow
    batch, then nothing: it is taken once START_PATIENCE has passed, not after
    the slow batch."""
    c = _SlowConsumer()
    c.START_PATIENCE = 0.5  # long beside the loop's turns: "too early" cannot be a stall
    await c.progrock_start(start())
    await until(lambda: bool(c.batches))
    assert c.batches == [1]
    await c.progrock_start(start())  # too early for a second runner
    await asyncio.sleep(0)
    assert c._start_runners == 1 and len(c._starts or []) == 1
    async with asyncio.timeout(5):
        while len(c.batches) < 2:
            await asyncio.sleep(0.01)
    assert c._start_runners == 2 and c.batches == [1, 1] and not c._starts
    c.release.set()
    async with asyncio.timeout(5):
        while c._start_runners:
            await asyncio.sleep(0.01)
