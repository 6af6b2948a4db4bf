"""The core pipeline end to end: web, workers, delay server, backend and Redis as real processes."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
import websockets

from progrock.local.stack import Stack
from tests.e2e.conftest import MakeStack
from tests.e2e.wsclient import Client, assert_well_ordered

pytestmark = [pytest.mark.e2e, pytest.mark.database]


async def classic_client(stack: Stack) -> list[dict[str, object]]:
    """Speak only the 2017 demo's protocol: send {"action": "start"}, read until complete."""
    async with websockets.connect(stack.ws_url, origin=stack.url) as ws:  # type: ignore[arg-type]
        assert json.loads(await ws.recv()) == {"accept": True}
        await ws.send(json.dumps({"action": "start"}))
        messages: list[dict[str, object]] = []
        while True:
            message = json.loads(await asyncio.wait_for(ws.recv(), 30))
            messages.append(message)
            if message.get("complete"):
                return messages


async def test_classic_protocol_client_gets_a_task_to_complete(stack: Stack) -> None:
    """A 2017-protocol-only client sees progress 0..100 step by step and one final complete."""
    started = time.monotonic()
    messages = await classic_client(stack)
    elapsed = time.monotonic() - started
    progress = [m["progress"] for m in messages]
    assert progress[0] == 0 and progress[-1] == 100
    assert progress == sorted(progress)
    # The rock task moves 3 % per poll: an update per poll means about 34 of them.
    assert len(messages) >= 25, progress
    assert [m.get("complete") for m in messages].count(True) == 1
    assert all(m["type"] in ("started", "progress", "complete") for m in messages)
    assert all("task_id" in m and "seq" in m for m in messages)
    assert elapsed < 20, f"a 6.8 s task took {elapsed:.1f} s"


async def run_clients(stack: Stack, count: int, **start: object) -> list[str]:
    clients = [await Client.connect(stack.url) for _ in range(count)]
    task_ids = await asyncio.gather(*(c.start(**start) for c in clients))
    finals = await asyncio.gather(
        *(c.until_terminal(t, timeout=60) for c, t in zip(clients, task_ids, strict=True))
    )
    for client, task_id, final in zip(clients, task_ids, finals, strict=True):
        assert final["type"] == "complete", final
        assert_well_ordered(client.of_task(task_id))
        await client.close()
    return task_ids


async def test_twenty_concurrent_clients_all_complete(stack: Stack) -> None:
    """20 sockets at once each see monotonically increasing progress and exactly one complete."""
    task_ids = await run_clients(stack, 20)
    assert len(set(task_ids)) == 20


async def test_restarting_the_delay_server_loses_no_task(make_stack: MakeStack) -> None:
    """Killing rundelay mid-run and starting it again: all 20 tasks still complete."""
    stack = make_stack()
    clients = [await Client.connect(stack.url) for _ in range(20)]
    task_ids = await asyncio.gather(*(c.start() for c in clients))
    await asyncio.sleep(1.0)  # let the tasks get under way before the fault
    await asyncio.to_thread(stack.kill, "delay")
    await asyncio.sleep(1.0)  # ticks come due while no delay server runs
    await asyncio.to_thread(stack.restart, "delay")
    finals = await asyncio.gather(
        *(c.until_terminal(t, timeout=60) for c, t in zip(clients, task_ids, strict=True))
    )
    assert [f["type"] for f in finals] == ["complete"] * 20
    for client, task_id in zip(clients, task_ids, strict=True):
        assert_well_ordered(client.of_task(task_id))
        await client.close()
