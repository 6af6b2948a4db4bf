"""Chaos: every kind of process SIGKILLed every 2-3 s while tasks run and watchers reconnect.

300 tasks started from 15 sessions, each task watched by 2 reconnecting
watchers (a socket each); meanwhile Redis, the backend, the delay server, a
worker and a web process are killed in turn, one every 2-3 s (seeded), and
the supervisor restarts each. Afterwards every task is terminal, at least 99 %
complete, and every watcher saw exactly one terminal message, no progress
going backwards and no ``seq`` twice. Run alone with ``pytest -m fault``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pytest
import websockets

from progrock.local.stack import Stack
from tests.e2e.conftest import MakeStack
from tests.e2e.wsclient import TERMINAL, Client, new_session

pytestmark = [pytest.mark.e2e, pytest.mark.fault, pytest.mark.timeout(420)]

SEED = 20_261_207
SESSIONS = 15
TASKS_PER_SESSION = 20  # 300 tasks; `list` shows 50 per owner, room for duplicated starts
WATCHERS = 2
# About 20 s a task: each outlives several kills.
TASK = {"kind": "rock", "params": {"step": 4, "interval_ms": 800}}
KINDS = ("redis", "backend", "delay", "worker", "web")
CHAOS_SECONDS = 30.0
KILL_EVERY = (2.0, 3.0)
SETTLE_SECONDS = 150.0  # after the chaos: every watcher has its terminal by then
# What a client meets while processes die: it reconnects or asks again.
DROPPED = (websockets.WebSocketException, OSError, TimeoutError, AssertionError)
FIRST = ("started", "failed", "error")  # what answers a start
ENDED = ("succeeded", "failed", "cancelled")  # terminal statuses


@dataclass
class Watcher:
    """One reconnecting socket watching one task: subscribe, read, and after a drop
    reconnect and subscribe again, until the terminal message (then read on, to
    catch a second one, until told to stop)."""

    task_id: str
    session: str
    messages: list[dict[str, Any]] = field(default_factory=list)
    connections: int = 0

    @property
    def terminals(self) -> list[dict[str, Any]]:
        return [m for m in self.messages if m.get("type") in TERMINAL]

    async def run(self, stack: Stack, rng: random.Random, stop: asyncio.Event) -> None:
        while not self.terminals and not stop.is_set():
            try:
                client = await Client.connect(rng.choice(stack.urls), self.session)
            except DROPPED:
                await asyncio.sleep(rng.uniform(0.2, 1.0))
                continue
            self.connections += 1
            try:
                await self._follow(client, stop)
            except DROPPED:
                await asyncio.sleep(rng.uniform(0.2, 1.0))
            finally:
                with contextlib.suppress(*DROPPED):
                    await client.close()

    async def _follow(self, client: Client, stop: asyncio.Event) -> None:
        await client.send({"action": "subscribe", "task_id": self.task_id})
        while not stop.is_set():
            try:
                message = await client.recv(timeout=1.0)
            except TimeoutError:
                continue
            if message.get("type") == "error":
                # Redis down or slow for this request: ask again shortly.
                assert message.get("code") == "unavailable", message
                await asyncio.sleep(0.5)
                await client.send({"action": "subscribe", "task_id": self.task_id})
            elif message.get("task_id") == self.task_id:
                self.messages.append(message)

    def problems(self) -> list[str]:
        """What this watcher saw that the protocol forbids."""
        found = []
        if len(self.terminals) != 1:
            found.append(f"{len(self.terminals)} terminal messages")
        progress = [m["progress"] for m in self.messages if "progress" in m]
        if progress != sorted(progress):
            found.append(f"progress went backwards: {progress}")
        seqs = [m["seq"] for m in self.messages if m.get("type") != "snapshot" and "seq" in m]
        repeated = sorted(s for s, n in Counter(seqs).items() if n > 1)
        if repeated:
            found.append(f"seq repeated: {repeated}")
        return [f"watcher of {self.task_id}: {p}" for p in found]


@dataclass
class Run:
    stack: Stack
    rng: random.Random
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    started: dict[str, str] = field(default_factory=dict)  # task id -> session
    watchers: list[Watcher] = field(default_factory=list)
    watching: list[asyncio.Task[None]] = field(default_factory=list)
    kills: Counter[str] = field(default_factory=Counter)

    async def start_tasks(self, session: str, prefix: str) -> None:
        """Start this session's tasks one by one, through dropped sockets and outages."""
        index, client = 0, None
        while index < TASKS_PER_SESSION:
            try:
                if client is None:
                    client = await Client.connect(self.rng.choice(self.stack.urls), session)
                ref = f"{prefix}-{index}"
                await client.send({"action": "start", **TASK, "ref": ref})
                while True:
                    answer = await client.recv(timeout=30)
                    if answer.get("ref") == ref and answer.get("type") in FIRST:
                        break
            except DROPPED:
                client = None  # the start may have gone through: `list` finds it at the end
                await asyncio.sleep(self.rng.uniform(0.2, 1.0))
                continue
            if answer["type"] == "error":
                assert answer["code"] == "unavailable", answer
                await asyncio.sleep(0.5)
                continue
            self.watch(answer["task_id"], session)
            index += 1
        if client is not None:
            with contextlib.suppress(*DROPPED):
                await client.close()

    def watch(self, task_id: str, session: str) -> None:
        self.started[task_id] = session
        for _ in range(WATCHERS):
            watcher = Watcher(task_id, session)
            self.watchers.append(watcher)
            self.watching.append(asyncio.create_task(watcher.run(self.stack, self.rng, self.stop)))

    async def chaos(self) -> None:
        """SIGKILL one process every 2-3 s, the kinds in turn (seeded order each round);
        the supervisor restarts each."""
        loop = asyncio.get_running_loop()
        end = loop.time() + CHAOS_SECONDS
        kinds: list[str] = []
        while loop.time() < end:
            await asyncio.sleep(self.rng.uniform(*KILL_EVERY))
            if not kinds:
                kinds = self.rng.sample(KINDS, len(KINDS))
            kind = kinds.pop()
            alive = {n: p for n, p in self.stack.pids().items() if n.split("-")[0] == kind}
            if alive:
                name = self.rng.choice(sorted(alive))
                with contextlib.suppress(ProcessLookupError):
                    os.kill(alive[name], signal.SIGKILL)
                    self.kills[kind] += 1

    async def tasks_of(self, session: str) -> list[dict[str, Any]]:
        """The session's tasks as `list` shows them (asked until answered)."""
        for _ in range(30):
            try:
                client = await Client.connect(self.stack.url, session)
                try:
                    await client.send({"action": "list"})
                    answer = await client.recv_type("tasks", "error", timeout=10)
                finally:
                    await client.close()
            except DROPPED:
                answer = {}
            if answer.get("type") == "tasks":
                return list(answer["tasks"])
            await asyncio.sleep(1)
        raise AssertionError(f"list never answered for session {session[:6]}...")


async def test_chaos_kills_of_every_kind_lose_no_task(make_stack: MakeStack) -> None:
    """300 tasks, 2 reconnecting watchers each, SIGKILLs of Redis, the backend, the
    delay server, workers and web processes every 2-3 s: every task ends, >= 99 %
    complete, each watcher sees exactly one terminal, progress never goes back and
    no seq comes twice."""
    stack = make_stack(
        workers=2,
        web_processes=2,
        env={"PROGROCK_MAX_RUNNING_PER_OWNER": str(TASKS_PER_SESSION * 2)},
    )
    run = Run(stack, random.Random(SEED))
    sessions = [new_session(stack.url) for _ in range(SESSIONS)]
    loop = asyncio.get_running_loop()
    starting = [asyncio.create_task(run.start_tasks(s, f"s{i}")) for i, s in enumerate(sessions)]
    await run.chaos()
    await asyncio.wait_for(asyncio.gather(*starting), SETTLE_SECONDS)
    deadline = loop.time() + SETTLE_SECONDS
    while any(not w.terminals for w in run.watchers) and loop.time() < deadline:
        await asyncio.sleep(0.5)
    await asyncio.sleep(1.0)  # a second terminal would arrive meanwhile
    run.stop.set()
    await asyncio.gather(*run.watching)

    reconnects = sum(w.connections - 1 for w in run.watchers)
    print(f"chaos: kills {dict(run.kills)}, {reconnects} watcher reconnects")
    assert set(run.kills) == set(KINDS) and min(run.kills.values()) >= 2, run.kills
    assert len(run.started) == SESSIONS * TASKS_PER_SESSION
    problems = [p for w in run.watchers for p in w.problems()]
    assert problems == [], f"{len(problems)} problems:\n" + "\n".join(problems[:20])
    listed = {t["task_id"]: t for s in sessions for t in await run.tasks_of(s)}
    assert set(run.started) <= set(listed)
    statuses = Counter(t["status"] for t in listed.values())
    unfinished = {i: t["status"] for i, t in listed.items() if t["status"] not in ENDED}
    assert unfinished == {}, f"not terminal: {unfinished}"
    failed = [t.get("error") for t in listed.values() if t["status"] != "succeeded"]
    print(f"chaos: {len(listed)} tasks {dict(statuses)}")
    assert statuses["succeeded"] >= 0.99 * len(listed), (statuses, failed[:10])
