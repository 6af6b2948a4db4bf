"""Redis outages end to end: the stack stays up, every request is answered in bounded
time, no socket is closed, and every task ends once Redis is back.

Run alone with ``pytest -m fault``.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from typing import Any

import pytest
import websockets

from progrock.local.stack import Stack
from tests.e2e.conftest import MakeStack
from tests.e2e.wsclient import TERMINAL, Client, new_session

pytestmark = [pytest.mark.e2e, pytest.mark.fault, pytest.mark.timeout(240)]

FAST = {"kind": "rock", "params": {"interval_ms": 20}}  # done in about 0.7 s
TASK = {"kind": "rock", "params": {"step": 4, "interval_ms": 600}}  # about 15 s
SESSIONS = 4
TASKS_PER_SESSION = 10  # 40 tasks
# Every request during the outage: the protocol's REQUEST_TIMEOUT (4 s) and 1 s to spare.
ANSWERED_WITHIN = 5.0
ENDED_WITHIN = 60.0  # every task, after Redis is back
ENDED = ("succeeded", "failed", "cancelled")
# What answers each request: its reply, or the error that Redis is away.
REPLIES = {
    "subscribe": {"snapshot"},
    "list": {"tasks"},
    "cancel": {"forbidden"},  # of a task nobody has
    "start": {"started"},
    "GET": {"snapshot"},
}


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


@dataclass
class Watching:
    """A socket that started tasks, reading everything as it arrives."""

    client: Client
    task_ids: list[str]
    arrivals: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    closed: BaseException | None = None

    async def read(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                message = await self.client.recv(timeout=3600)
                self.arrivals.append((loop.time(), message))
        except websockets.ConnectionClosed as exc:
            self.closed = exc

    def ends(self) -> dict[str, float]:
        """When each task's terminal message arrived (loop time), of those that ended."""
        return {
            str(m["task_id"]): at
            for at, m in self.arrivals
            if m.get("type") in TERMINAL and m.get("task_id") in self.task_ids
        }


async def ask_until(
    stack: Stack, asker: Client, session: str, own_task: str, until: float
) -> list[tuple[str, dict[str, Any], float]]:
    """Send one request after another until ``until`` (loop time), in turn: subscribe,
    list, cancel (of an unknown task), start, the HTTP API's GET; each answer and how
    long it took."""
    loop = asyncio.get_running_loop()
    answers: list[tuple[str, dict[str, Any], float]] = []
    turn = 0
    while loop.time() < until:
        action = ("subscribe", "list", "cancel", "start", "GET")[turn % 5]
        turn += 1
        if action == "GET":
            url = f"{stack.url}/prog/api/tasks/{own_task}/"
            status, body, took = await asyncio.to_thread(http_get, url, session)
            if status == 200:
                body = {"type": "snapshot", **body}
            elif status != 503:
                body = {"type": f"HTTP {status}", **body}
            answers.append((action, body, took))
            continue
        request: dict[str, Any] = {"action": action}
        if action == "subscribe":
            request["task_id"] = own_task
        elif action == "cancel":
            request["task_id"] = str(uuid.uuid4())
        elif action == "start":
            request.update(FAST, ref=f"during-{turn}")
        answer, took = await timed(asker, request)
        answers.append((action, answer, took))
        await asyncio.sleep(0.3)
    return answers


def wrong_answers(answers: list[tuple[str, dict[str, Any], float]]) -> list[str]:
    """Answers that are neither the request's reply nor `unavailable` in time."""
    wrong = []
    for action, answer, took in answers:
        kind = answer.get("type")
        unavailable = kind == "error" and answer.get("code") == "unavailable"
        if unavailable and action != "GET":
            if answer.get("action") != action:
                wrong.append(f"{action}: an error for {answer.get('action')!r}: {answer}")
            if "127.0.0.1" in answer["detail"] or "redis" in answer["detail"].lower():
                wrong.append(f"{action}: the error shows an address: {answer}")
        elif (
            not unavailable
            and kind not in REPLIES[action]
            and answer.get("code") not in (REPLIES[action])
        ):
            wrong.append(f"{action}: answered {answer}")
        if took > ANSWERED_WITHIN:
            wrong.append(f"{action}: answered after {took:.1f} s: {answer}")
    return wrong


@pytest.mark.parametrize(
    ("how", "seconds"),
    [("freeze", 10.0), ("kill", 10.0), ("freeze", 30.0), ("kill", 30.0)],
    ids=["freeze-10s", "kill-10s", "freeze-30s", "kill-30s"],
)
async def test_the_stack_rides_out_a_redis_outage(
    make_stack: MakeStack, how: str, seconds: float
) -> None:
    """Redis frozen (SIGSTOP) or killed for 10 or 30 s under 40 running tasks: no other
    process exits, the server closes no socket, every request meanwhile is answered
    within 5 s (its reply, or `unavailable` without an address), every task ends
    within 60 s of Redis's return, at least 99 % of them complete, and new starts work."""
    stack = make_stack()
    loop = asyncio.get_running_loop()
    sessions = [new_session(stack.url) for _ in range(SESSIONS)]
    watching: list[Watching] = []
    for session in sessions:
        client = await Client.connect(stack.url, session)
        ids = [await client.start(**TASK) for _ in range(TASKS_PER_SESSION)]
        watching.append(Watching(client, ids))
    readers = [asyncio.create_task(w.read()) for w in watching]
    askers = [await Client.connect(stack.url, s) for s in sessions]
    idle = [await Client.connect(stack.url) for _ in range(10)]
    before = {name: pid for name, pid in stack.pids().items() if name != "redis"}
    await asyncio.sleep(2.0)  # the tasks are under way

    sig = signal.SIGSTOP if how == "freeze" else signal.SIGKILL
    await asyncio.to_thread(stack.kill, "redis", sig)
    try:
        asked = await asyncio.gather(
            *(
                ask_until(stack, a, s, w.task_ids[0], loop.time() + seconds)
                for a, s, w in zip(askers, sessions, watching, strict=True)
            )
        )
    finally:
        if how == "freeze":
            await asyncio.to_thread(stack.kill, "redis", signal.SIGCONT)
        else:
            await asyncio.to_thread(stack.restart, "redis")
    back = loop.time()

    answers = [a for found in asked for a in found]
    unavailable = [a for a in answers if a[1].get("code") == "unavailable"]
    assert len(unavailable) >= len(askers), f"Redis never seemed away: {answers[:5]}"
    slowest = max(took for _, _, took in answers)
    print(
        f"{how} {seconds:g} s: {len(answers)} requests, {len(unavailable)} unavailable, "
        f"slowest answer {slowest:.1f} s"
    )
    wrong = wrong_answers(answers)
    assert wrong == [], f"{len(wrong)} of {len(answers)} answers wrong:\n" + "\n".join(wrong)
    task_ids = [t for w in watching for t in w.task_ids]
    while loop.time() < back + ENDED_WITHIN:
        if sum(len(w.ends()) for w in watching) == len(task_ids):
            break
        await asyncio.sleep(0.5)
    ends = {t: at - back for w in watching for t, at in w.ends().items()}
    late = sorted(set(task_ids) - set(ends))
    assert late == [], f"{len(late)} tasks not ended {ENDED_WITHIN:g} s after Redis returned"
    assert max(ends.values()) <= ENDED_WITHIN, max(ends.values())
    print(
        f"{how} {seconds:g} s: the last task ended {max(ends.values()):.1f} s after Redis returned"
    )

    # Every task, the starts answered `unavailable` that went ahead anyway too.
    listed = await all_tasks(stack, sessions, until=back + ENDED_WITHIN)
    assert set(task_ids) <= set(listed)
    unfinished = {t: s["status"] for t, s in listed.items() if s["status"] not in ENDED}
    assert unfinished == {}, f"not ended {ENDED_WITHIN:g} s after Redis returned: {unfinished}"
    failed = [s.get("error") for s in listed.values() if s["status"] != "succeeded"]
    assert len(listed) - len(failed) >= 0.99 * len(listed), failed[:5]

    again = await askers[0].start(**FAST)
    assert (await askers[0].until_terminal(again, timeout=60))["type"] == "complete"
    assert {n: p for n, p in stack.pids().items() if n != "redis"} == before, "a process exited"
    clients = [*(w.client for w in watching), *askers, *idle]
    closed = [c.ws.close_code for c in clients if c.ws.close_code is not None]
    assert closed == [] and [w.closed for w in watching] == [None] * SESSIONS, closed
    for reader in readers:
        reader.cancel()
    for client in clients:
        await client.close()


async def all_tasks(stack: Stack, sessions: list[str], until: float) -> dict[str, Any]:
    """Every task of the sessions as `list` shows it, once all have ended or at ``until``."""
    loop = asyncio.get_running_loop()
    while True:
        listed: dict[str, Any] = {}
        for session in sessions:
            lister = await Client.connect(stack.url, session)
            answer, _ = await timed(lister, {"action": "list"})
            await lister.close()
            assert answer["type"] == "tasks", answer
            listed.update((t["task_id"], t) for t in answer["tasks"])
        if all(t["status"] in ENDED for t in listed.values()) or loop.time() >= until:
            return listed
        await asyncio.sleep(0.5)
