"""Graceful restarts: SIGTERM on every process kind, one after the other, mid-run.

A web process closes its sockets with 1012 (service restart) and exits; its
clients reconnect to the other web process and re-subscribe, as progrock.js
does. A worker finishes the work in hand and takes no new message; a delay
server stops claiming and leaves nothing half-claimed. Each exits 0 with one
log line on the signal and one when done. Through a rolling restart of all of
them, no task is lost and every watcher gets exactly one terminal message per
task (docs/operations.md, "Graceful restarts").
"""

from __future__ import annotations

import asyncio
import json
import random
import signal
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
import websockets
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from progrock.local.stack import Stack
from tests.e2e.conftest import MakeStack
from tests.e2e.faultbackend import Backend
from tests.e2e.wsclient import TERMINAL, Client, new_session

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

TASKS = 300
WATCHERS = 30  # sockets, each with a session of its own, each starting and watching 10 tasks
# About 40 s (40 steps of 1 s): running through every restart of the stack.
TASK = {"kind": "rock", "params": {"step": 2.5, "interval_ms": 1000}}
RUN_TIMEOUT = 90.0  # the whole run, restarts included
SERVICE_RESTART = 1012


@dataclass
class Watcher:
    """One client like progrock.js: watches its tasks, and on a close reconnects to the
    next web process (after 0-0.5 s of jitter on 1012) and re-subscribes what is unfinished."""

    urls: list[str]
    session: str
    index: int
    unfinished: set[str] = field(default_factory=set)
    terminals: Counter[str] = field(default_factory=Counter)
    ends: dict[str, str] = field(default_factory=dict)
    closes: list[tuple[int | None, str]] = field(default_factory=list)  # code, reason
    connected: asyncio.Event = field(default_factory=asyncio.Event)

    async def _connect(self) -> websockets.ClientConnection:
        url = self.urls[self.index % len(self.urls)]
        ws = await websockets.connect(
            url.replace("http://", "ws://") + "/prog/",
            origin=url,  # type: ignore[arg-type]
            additional_headers={"Cookie": f"sessionid={self.session}"},
            open_timeout=10,
        )
        greeting = json.loads(await asyncio.wait_for(ws.recv(), 10))
        if greeting != {"accept": True}:
            await ws.close()
            raise ConnectionError(f"expected the greeting, got {greeting!r}")
        return ws

    async def start(self, count: int) -> None:
        """Start ``count`` tasks on one socket and wait for each ``started``."""
        ws = await self._connect()
        try:
            for i in range(count):
                await ws.send(json.dumps({"action": "start", **TASK, "ref": i}))
            while len(self.unfinished) < count:
                message = json.loads(await asyncio.wait_for(ws.recv(), 30))
                if message.get("type") in ("error", "failed"):
                    raise AssertionError(f"expected started, got {message!r}")
                if message.get("type") == "started":
                    self.unfinished.add(message["task_id"])
        finally:
            await ws.close()

    async def watch(self) -> None:
        """Follow every unfinished task to its end, reconnecting as needed."""
        failures = 0
        while self.unfinished:
            try:
                ws = await self._connect()
            except (OSError, InvalidHandshake, ConnectionError, TimeoutError, ConnectionClosed):
                failures += 1  # that web process is down: the other one, after a backoff
                self.index += 1
                await asyncio.sleep(random.uniform(0, min(2.0, 0.1 * 2**failures)))
                continue
            failures = 0
            self.connected.set()
            try:
                for task_id in sorted(self.unfinished):
                    await ws.send(json.dumps({"action": "subscribe", "task_id": task_id}))
                async for raw in ws:
                    message = json.loads(raw)
                    if message.get("type") == "error":
                        raise AssertionError(f"the server answered an error: {message!r}")
                    if message.get("type") in TERMINAL:
                        task_id = message["task_id"]
                        self.terminals[task_id] += 1
                        self.ends[task_id] = message["type"]
                        self.unfinished.discard(task_id)
                        if not self.unfinished:
                            await ws.close()
                            return
            except ConnectionClosed:
                pass
            received = ws.protocol.close_rcvd
            self.closes.append(
                (received.code, received.reason) if received is not None else (None, "")
            )
            self.index += 1  # reconnect elsewhere
            if received is not None and received.code == SERVICE_RESTART:
                await asyncio.sleep(random.uniform(0, 0.5))
            else:
                await asyncio.sleep(random.uniform(0, 1.0))


def restart_gracefully(stack: Stack, name: str) -> int:
    """SIGTERM ``name``, wait until it exits (the supervisor SIGKILLs it after 5 s)
    and until it is back and ready; return the stopped process's exit code."""
    old = stack.supervisor.get(name).process
    assert old is not None
    stack.restart(name, timeout=60)
    code = old.wait(timeout=1)
    return code


def lines_of(stack: Stack, name: str, *needles: str) -> list[str]:
    return [line for line in stack.output(name) if any(n in line for n in needles)]


async def test_rolling_restart_of_every_process_kind_loses_nothing(
    make_stack: MakeStack,
) -> None:
    """300 tasks watched over 30 sockets while each web process, worker and the delay
    server in turn gets SIGTERM and is started again: every stopped process exits 0
    after its two log lines, web sockets close with 1012 (never dropped), and every
    task completes with exactly one terminal message to its watcher."""
    stack = make_stack(workers=2, web_processes=2)
    sessions = [await asyncio.to_thread(new_session, stack.urls[i % 2]) for i in range(WATCHERS)]
    watchers = [Watcher(stack.urls, s, i) for i, s in enumerate(sessions)]
    await asyncio.gather(*(w.start(TASKS // WATCHERS) for w in watchers))
    watching = [asyncio.create_task(w.watch()) for w in watchers]
    loop = asyncio.get_running_loop()
    began = loop.time()
    codes: dict[str, int] = {}
    try:
        await asyncio.wait_for(asyncio.gather(*(w.connected.wait() for w in watchers)), 30)
        for name in [*stack.web_names, *stack.worker_names, "delay"]:
            codes[name] = await asyncio.to_thread(restart_gracefully, stack, name)
        restarted = loop.time() - began
        await asyncio.wait_for(asyncio.gather(*watching), RUN_TIMEOUT - restarted)
    finally:
        for task in watching:
            task.cancel()
    assert codes == dict.fromkeys(codes, 0), codes
    for name, (signal_line, done_line) in {
        **dict.fromkeys(stack.web_names, ("got SIGTERM: closing", "sockets in")),
        **dict.fromkeys(stack.worker_names, ("worker got SIGTERM", "the work in hand is done")),
        "delay": ("rundelay got SIGTERM", "every claimed message delivered or put back"),
    }.items():
        assert len(lines_of(stack, name, signal_line)) == 1, stack.output(name)
        assert len(lines_of(stack, name, done_line)) == 1, stack.output(name)
    ends = Counter(kind for w in watchers for kind in w.ends.values())
    assert ends == {"complete": TASKS}, ends
    repeated = {t: n for w in watchers for t, n in w.terminals.items() if n != 1}
    assert not repeated, repeated
    closes = Counter(code for w in watchers for code, _ in w.closes)
    assert set(closes) == {SERVICE_RESTART}, closes  # never a dropped socket (1006)
    # Each web process held watchers when it stopped (web-1 half, web-2 all of them).
    assert closes[SERVICE_RESTART] >= WATCHERS, closes


@pytest.mark.parametrize("server", ["daphne", "uvicorn"])
async def test_sigterm_closes_web_sockets_with_1012_then_exits(
    make_stack: MakeStack, server: str
) -> None:
    """SIGTERM on a web process (Daphne or Uvicorn) closes each open ProgRock socket
    with 1012 and its reason, then the process exits."""
    stack = make_stack(workers=1, server=server)
    session = await asyncio.to_thread(new_session, stack.url)
    sockets = []
    for _ in range(3):
        ws = await websockets.connect(
            stack.ws_url,
            origin=stack.url,  # type: ignore[arg-type]
            additional_headers={"Cookie": f"sessionid={session}"},
        )
        assert json.loads(await ws.recv()) == {"accept": True}
        sockets.append(ws)
    process = stack.supervisor.get("web").process
    assert process is not None
    stack.kill("web", signal.SIGTERM)  # held: not restarted
    for ws in sockets:
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 10)
    received = [ws.protocol.close_rcvd for ws in sockets]
    assert [r.code if r else None for r in received] == [SERVICE_RESTART] * 3
    # Daphne too, through progrock.contrib.daphne_close_codes (the demo's asgi.py).
    assert {r.reason for r in received if r} == {"server restarting; reconnect"}
    code = await asyncio.to_thread(process.wait, 10)
    assert code in (0, -15), code  # Uvicorn re-raises the signal once it has stopped
    assert lines_of(stack, "web", "closing 3 ProgRock sockets with 1012"), stack.output("web")


@pytest.fixture
def backend(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Backend]:
    backend = Backend(tmp_path_factory.mktemp("backend") / "backend.sqlite3")
    try:
        yield backend
    finally:
        backend.close()


SLOW_STATUS = 1.5  # seconds each backend status call takes while the worker stops


async def test_a_worker_stopped_mid_poll_leaves_no_task_unticked(
    make_stack: MakeStack, backend: Backend
) -> None:
    """SIGTERM the only worker while its polls wait on a slow backend: it takes no new
    message, finishes those polls (scheduling their next ticks), exits 0; started
    again, it completes every task, though no sweep could re-arm a lost tick."""
    stack = make_stack(
        workers=1,
        backend_url=backend.url,
        # No sweep during the test: a poll chain broken by the stop would never resume.
        env={"PROGROCK_SWEEP_INTERVAL": "600", "PROGROCK_POLL_INTERVAL": "0.2"},
    )
    client = await Client.connect(stack.url, await asyncio.to_thread(new_session, stack.url))
    tasks = [
        await client.start(kind="rock", params={"step": 10, "interval_ms": 500}) for _ in range(20)
    ]
    await asyncio.to_thread(backend.process.set_faults, delay_s=SLOW_STATUS, routes=["status"])
    await asyncio.sleep(0.4)  # two poll intervals: every task's poll waits on the backend
    process = stack.supervisor.get("worker-1").process
    assert process is not None
    await asyncio.to_thread(stack.kill, "worker-1", signal.SIGTERM)  # held: not restarted
    code = await asyncio.to_thread(process.wait, 30)
    await asyncio.to_thread(backend.process.clear_faults)
    output = stack.output("worker-1")
    assert code == 0, output
    done = [line for line in output if "the work in hand is done" in line]
    assert len(done) == 1, output
    took = float(done[0].split("stopped after ")[1].split(" s")[0])
    assert took >= SLOW_STATUS / 2, f"no poll was in hand when the worker stopped: {done}"
    await asyncio.to_thread(stack.restart, "worker-1", 60)
    ends: dict[str, str] = {}
    async with asyncio.timeout(60):
        while len(ends) < len(tasks):
            message = await client.recv()
            if message.get("type") in TERMINAL:
                ends[message["task_id"]] = message["type"]
    assert ends == dict.fromkeys(tasks, "complete")
    await client.close()
