"""A small protocol client for the end-to-end tests (real sockets, real cookies)."""

from __future__ import annotations

import asyncio
import json
import re
import urllib.request
from dataclasses import dataclass, field
from typing import Any

import websockets
from websockets.asyncio.client import ClientConnection

TERMINAL = {"complete", "failed", "cancelled"}
TIMEOUT = 30.0


def new_session(base_url: str) -> str:
    """Visit the demo page like a browser and return the session cookie it set."""
    with urllib.request.urlopen(base_url + "/", timeout=10) as response:
        cookies = response.headers.get_all("Set-Cookie") or []
    for cookie in cookies:
        match = re.match(r"sessionid=([^;]+)", cookie)
        if match:
            return match.group(1)
    raise AssertionError(f"the page set no session cookie: {cookies!r}")


@dataclass
class Client:
    ws: ClientConnection
    received: list[dict[str, Any]] = field(default_factory=list)
    _refs: int = 0  # refs this client gave its starts

    @classmethod
    async def connect(cls, stack_url: str, session: str | None = None) -> Client:
        headers = {"Cookie": f"sessionid={session}"} if session else {}
        ws = await websockets.connect(
            stack_url.replace("http://", "ws://") + "/prog/",
            origin=stack_url,  # type: ignore[arg-type]
            additional_headers=headers,
            max_size=2**22,
        )
        client = cls(ws)
        greeting = await client.recv()
        if greeting != {"accept": True}:
            raise AssertionError(f"expected the greeting {{'accept': true}}, got {greeting!r}")
        return client

    async def send(self, message: dict[str, Any] | str) -> None:
        await self.ws.send(message if isinstance(message, str) else json.dumps(message))

    async def recv(self, timeout: float = TIMEOUT) -> dict[str, Any]:
        raw = await asyncio.wait_for(self.ws.recv(), timeout)
        message: dict[str, Any] = json.loads(raw)
        self.received.append(message)
        return message

    async def recv_type(self, *types: str, timeout: float = TIMEOUT) -> dict[str, Any]:
        """Receive until a message of one of ``types`` arrives; return it."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            message = await self.recv(max(0.01, deadline - loop.time()))
            if message.get("type") in types:
                return message

    async def start(self, **fields: Any) -> str:
        """Start a task; its id, from the first message carrying the start's ref
        (given, or one of the client's own): `started`, or the `queued` snapshot of a
        task queue's kind whose job has not begun."""
        self._refs += 1
        fields.setdefault("ref", f"wsclient-{self._refs}")
        await self.send({"action": "start", **fields})
        while True:
            started = await self.recv_type("started", "snapshot", "error")
            if started.get("ref") == fields["ref"]:
                break
        if started["type"] == "error":
            raise AssertionError(f"start failed: {started!r}")
        return str(started["task_id"])

    async def until_terminal(self, task_id: str, timeout: float = TIMEOUT) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            message = await self.recv(max(0.01, deadline - loop.time()))
            if message.get("task_id") == task_id and message.get("type") in TERMINAL:
                return message

    def of_task(self, task_id: str) -> list[dict[str, Any]]:
        return [m for m in self.received if m.get("task_id") == task_id]

    async def close(self) -> None:
        await self.ws.close()


def assert_well_ordered(messages: list[dict[str, Any]]) -> None:
    """seq strictly increases, progress never decreases, exactly one terminal, last."""
    seqs = [m["seq"] for m in messages if m.get("type") != "snapshot"]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs), seqs
    progress = [m["progress"] for m in messages if "progress" in m]
    assert progress == sorted(progress), progress
    terminal = [m for m in messages if m.get("type") in TERMINAL]
    assert len(terminal) == 1, terminal
    assert messages[-1] is terminal[0]
