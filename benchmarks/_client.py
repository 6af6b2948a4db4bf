"""What a simulated browser says and understands, for both targets.

The baseline speaks the 2017 demo's messages (``{"progress": p}``, then
``{"complete": true, "progress": 100}``); ProgRock speaks docs/protocol.md
(``started``, ``progress``, ``complete``, ``failed``, ``cancelled``), which keeps
the 2017 demo's keys. A *update* is any message that carries the task's progress.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any, Literal
from urllib.parse import urlsplit

from websockets.asyncio.client import ClientConnection, connect

Kind = Literal["greeting", "update", "complete", "failed", "other"]

TERMINAL_FAILURES = {"failed", "cancelled"}


def start_message(target: str) -> dict[str, Any]:
    """The frame that starts one rock task (the 2017 demo's task) on ``target``."""
    if target == "progrock":
        return {"action": "start", "kind": "rock"}
    return {"action": "start"}


def classify(data: Any) -> Kind:
    """Say what a decoded server frame is."""
    if not isinstance(data, dict):
        return "other"
    kind = data.get("type")
    if data.get("accept") is True and kind is None:
        return "greeting"
    if kind in TERMINAL_FAILURES or kind == "error":
        return "failed"
    if data.get("complete") is True:
        return "complete"
    if "progress" in data and kind in (None, "started", "progress"):
        return "update"
    return "other"


def origin_of(url: str) -> str:
    """The ``Origin`` a page served by the same host would send."""
    parts = urlsplit(url)
    return f"http://{parts.netloc}"


async def open_socket(url: str, open_timeout: float = 30.0) -> ClientConnection:
    """Open one browser-like socket (no compression, no client pings)."""
    return await connect(
        url,
        origin=origin_of(url),  # type: ignore[arg-type]
        compression=None,
        ping_interval=None,
        open_timeout=open_timeout,
        close_timeout=2,
        max_queue=None,
    )


async def probe(url: str, target: str, timeout: float = 30.0) -> float:
    """Run one task until two updates arrive (proves web, worker and delay work).

    Returns the seconds between the first and second update. A ProgRock task is
    cancelled afterwards so it does not run into the measurement.
    """
    deadline = time.monotonic() + timeout
    ws = await open_socket(url, open_timeout=timeout)
    try:
        await ws.send(json.dumps(start_message(target)))
        times: list[float] = []
        task_id: str | None = None
        while len(times) < 2:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"probe on {url}: expected 2 updates, got {len(times)}")
            data = json.loads(await asyncio.wait_for(ws.recv(), remaining))
            kind = classify(data)
            if kind == "failed":
                raise RuntimeError(f"probe on {url}: expected progress, got {data!r}")
            if kind in ("update", "complete"):
                times.append(time.monotonic())
                task_id = data.get("task_id", task_id)
        if target == "progrock" and task_id:
            await ws.send(json.dumps({"action": "cancel", "task_id": task_id}))
        return times[1] - times[0]
    finally:
        await ws.close()
