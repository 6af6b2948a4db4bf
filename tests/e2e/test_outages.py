"""Redis outages seen from the sockets: every request answered in bounded time,
no socket closed, and a resynchronised view once Redis is back.

Run alone with ``pytest -m fault``.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
import urllib.error
import urllib.request
from typing import Any

import pytest

from progrock.local.stack import Stack
from tests.e2e.conftest import MakeStack
from tests.e2e.wsclient import Client, new_session

pytestmark = [pytest.mark.e2e, pytest.mark.fault, pytest.mark.timeout(180)]

FAST = {"kind": "rock", "params": {"interval_ms": 20}}  # done in about 0.7 s
SLOW = {"kind": "rock", "params": {"interval_ms": 300}}  # about 10 s
# The protocol's bound (REQUEST_TIMEOUT, 4 s) plus slack for a loaded test machine.
ANSWER_WITHIN = 7.0


async def timed(client: Client, request: dict[str, Any]) -> tuple[dict[str, Any], float]:
    """Send ``request``; return its answer (the first error, or reply) and how long it took."""
    began = time.monotonic()
    await client.send(request)
    answer = await client.recv_type("error", "snapshot", "tasks", "started", timeout=30)
    return answer, time.monotonic() - began


def http_get(url: str, session: str) -> tuple[int, dict[str, Any], float]:
    began = time.monotonic()
    request = urllib.request.Request(url, headers={"Cookie": f"sessionid={session}"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            status, body = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, body = exc.code, exc.read()
    return status, json.loads(body), time.monotonic() - began


def assert_open(clients: list[Client]) -> None:
    closed = [c.ws.close_code for c in clients if c.ws.close_code is not None]
    assert closed == [], f"the server closed {len(closed)} sockets: {closed}"


async def test_a_frozen_redis_gets_unavailable_in_bounded_time(make_stack: MakeStack) -> None:
    """With Redis frozen (SIGSTOP), subscribe, start, cancel and the HTTP API's GET
    are each answered `unavailable` (HTTP 503, JSON) within a few seconds; no socket
    is closed, and once Redis thaws a start works again."""
    stack = make_stack()
    session = new_session(stack.url)
    owner = await Client.connect(stack.url, session)
    task_id = await owner.start(**SLOW)
    askers = [await Client.connect(stack.url, session) for _ in range(3)]
    idle = [await Client.connect(stack.url) for _ in range(5)]
    await asyncio.to_thread(stack.kill, "redis", signal.SIGSTOP)
    try:
        requests = [
            {"action": "subscribe", "task_id": task_id},
            {"action": "start", **FAST, "ref": "frozen"},
            {"action": "cancel", "task_id": task_id},
        ]
        answers = await asyncio.gather(
            *(timed(c, r) for c, r in zip(askers, requests, strict=True)),
        )
        detail_url = f"{stack.url}/prog/api/tasks/{task_id}/"
        status, body, took = await asyncio.to_thread(http_get, detail_url, session)
    finally:
        await asyncio.to_thread(stack.kill, "redis", signal.SIGCONT)
    for (answer, seconds), request in zip(answers, requests, strict=True):
        assert answer["type"] == "error" and answer["code"] == "unavailable", (request, answer)
        assert answer["action"] == request["action"]
        assert seconds < ANSWER_WITHIN, (request, seconds)
        assert "127.0.0.1" not in answer["detail"] and "redis" not in answer["detail"].lower()
    assert answers[1][0]["ref"] == "frozen"
    assert status == 503 and body["type"] == "error" and body["code"] == "unavailable", body
    assert took < ANSWER_WITHIN, took
    assert_open([owner, *askers, *idle])
    again = await askers[1].start(**FAST)
    assert (await askers[1].until_terminal(again, timeout=60))["type"] == "complete"
    assert_open([owner, *askers, *idle])
    for client in [owner, *askers, *idle]:
        await client.close()


async def test_sockets_stay_open_through_a_redis_restart(make_stack: MakeStack) -> None:
    """Redis killed and started again: no socket is closed by the server, requests
    meanwhile get `unavailable` at once, and afterwards a watcher's task still ends
    on its socket and new starts work."""
    stack = make_stack()
    watcher = await Client.connect(stack.url)
    task_id = await watcher.start(**SLOW)
    await watcher.recv_type("progress")
    idle = [await Client.connect(stack.url) for _ in range(10)]
    asker = await Client.connect(stack.url)
    await asyncio.to_thread(stack.kill, "redis", signal.SIGKILL)
    await asyncio.sleep(2.0)  # every socket's channel-layer receive fails meanwhile
    answer, seconds = await timed(asker, {"action": "start", **FAST})
    assert answer["code"] == "unavailable" and seconds < ANSWER_WITHIN, (answer, seconds)
    assert_open([watcher, asker, *idle])
    await asyncio.to_thread(stack.restart, "redis")
    final = await watcher.until_terminal(task_id, timeout=90)
    assert final["type"] in ("complete", "failed"), final
    assert_open([watcher, asker, *idle])
    again = await asker.start(**FAST)
    assert (await asker.until_terminal(again, timeout=60))["type"] == "complete"
    assert_open([watcher, asker, *idle])
    for client in [watcher, asker, *idle]:
        await client.close()


_ = Stack
