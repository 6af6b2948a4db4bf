#!/usr/bin/env python
"""CPU per update and freshness of the ways to follow tasks without a WebSocket.

Starts the whole stack (``progrock.local.stack.Stack``, its own Redis, on
127.0.0.1), then, for each mode, starts N rock tasks for one session and
follows each with one watcher until it ends:

* ``none``     no watcher (the cost of the tasks and the reference socket alone)
* ``ws``       one WebSocket per task (the normal path, as a yardstick)
* ``poll``     ``GET tasks/<id>/`` every ``--interval`` seconds (jittered start)
* ``longpoll`` ``GET follow/?task=<id>:<seq>&wait=25`` in a loop, at most one
               request per ``--pace`` seconds (what progrock.js does, 0.5 s)
* ``sse``      one ``GET follow/?task=<id>&stream=1`` event stream per task (what
               progrock.js does unless a proxy buffers it)

A reference socket subscribed to every task timestamps each update as it is
published; the delay of an update is the time from that timestamp until its
watcher held that update or a later one (polls and paced long-polls skip
updates: a skipped one waits for the next one seen). Web CPU is the Daphne
process's user+system time over the mode's run; "net" subtracts the ``none``
run's, per update the watchers received and per watcher-second.

    .venv/bin/python benchmarks/fallback_delivery.py --tasks 50
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import aiohttp
import psutil
from _stats import percentile
from websockets.asyncio.client import connect

from progrock.local.stack import Stack

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
MODES = ("none", "ws", "poll", "longpoll", "sse")
TERMINAL = {"complete", "failed", "cancelled"}
Seen = dict[tuple[str, int], float]  # (task, seq) -> monotonic time of receipt


class Session:
    """One browser's cookies and HTTP connection pool against the stack."""

    def __init__(self, base: str) -> None:
        self.base = base
        jar = aiohttp.CookieJar(unsafe=True)  # cookies for 127.0.0.1
        connector = aiohttp.TCPConnector(limit=0)
        self.http = aiohttp.ClientSession(cookie_jar=jar, connector=connector)
        self.requests = 0

    async def open(self) -> None:
        async with self.http.get(f"{self.base}/bars/") as response:  # session + CSRF cookie
            response.raise_for_status()

    def cookie(self, name: str) -> str:
        for morsel in self.http.cookie_jar:
            if morsel.key == name:
                return morsel.value
        raise RuntimeError(f"no {name} cookie")

    async def get_json(self, path: str, **params: Any) -> Any:
        self.requests += 1
        async with self.http.get(f"{self.base}{path}", params=params) as response:
            response.raise_for_status()
            return await response.json()

    async def start(self, params: dict[str, Any]) -> str:
        headers = {"X-CSRFToken": self.cookie("csrftoken")}
        body = {"kind": "rock", "params": params}
        async with self.http.post(
            f"{self.base}/prog/api/tasks/", json=body, headers=headers
        ) as response:
            if response.status != 201:
                raise RuntimeError(f"start answered {response.status}: {await response.text()}")
            return str((await response.json())["task_id"])


async def reference(ws_url: str, cookie: str, ids: list[str], seen: Seen) -> None:
    """Timestamp every update of ``ids`` as published; return once all ended."""
    async with connect(
        ws_url, origin=ws_url.replace("ws://", "http://").rsplit("/prog/", 1)[0],
        additional_headers={"Cookie": cookie}, compression=None, ping_interval=None,
        max_queue=None,
    ) as ws:  # fmt: skip
        for task_id in ids:
            await ws.send(json.dumps({"action": "subscribe", "task_id": task_id}))
        ended: set[str] = set()
        async for raw in ws:
            message = json.loads(raw)
            task_id, seq = message.get("task_id"), message.get("seq")
            if isinstance(seq, int) and message.get("type") != "snapshot":
                seen.setdefault((task_id, seq), time.monotonic())
            if message.get("type") in TERMINAL:
                ended.add(task_id)
                if len(ended) == len(ids):
                    return


def _record(seen: Seen, message: dict[str, Any]) -> bool:
    """Record an update; True if it ends its task."""
    seq = message.get("seq")
    if isinstance(seq, int) and message.get("type") != "snapshot":
        seen.setdefault((message["task_id"], seq), time.monotonic())
    return message.get("type") in TERMINAL or message.get("type") == "error"


async def watch_ws(ws_url: str, cookie: str, task_id: str, seen: Seen) -> None:
    async with connect(
        ws_url, origin=ws_url.replace("ws://", "http://").rsplit("/prog/", 1)[0],
        additional_headers={"Cookie": cookie}, compression=None, ping_interval=None,
    ) as ws:  # fmt: skip
        await ws.send(json.dumps({"action": "subscribe", "task_id": task_id}))
        async for raw in ws:
            if _record(seen, json.loads(raw)):
                return


async def watch_poll(session: Session, task_id: str, interval: float, seen: Seen) -> None:
    await asyncio.sleep(random.uniform(0, interval))
    while True:
        snapshot = await session.get_json(f"/prog/api/tasks/{task_id}/")
        if snapshot["seq"] > 0:
            seen.setdefault((task_id, snapshot["seq"]), time.monotonic())
        if snapshot["status"] in ("succeeded", "failed", "cancelled"):
            return
        await asyncio.sleep(interval)


async def watch_longpoll(session: Session, task_id: str, pace: float, seen: Seen) -> None:
    cursor = task_id
    last = -pace
    while True:
        await asyncio.sleep(max(0.0, last + pace - time.monotonic()))
        last = time.monotonic()
        body = await session.get_json("/prog/api/follow/", task=cursor, wait="25")
        for message in body["messages"]:
            if _record(seen, message):
                return
            cursor = f"{task_id}:{message['seq']}"


async def watch_sse(session: Session, task_id: str, seen: Seen) -> None:
    session.requests += 1
    async with session.http.get(
        f"{session.base}/prog/api/follow/", params={"task": task_id, "stream": "1"}
    ) as response:
        response.raise_for_status()
        async for line in response.content:
            if line.startswith(b"data: ") and _record(seen, json.loads(line[6:])):
                return


async def run_mode(
    mode: str, stack: Stack, web: psutil.Process, tasks: int, params: dict[str, Any],
    interval: float, pace: float,
) -> dict[str, Any]:  # fmt: skip
    session = Session(stack.url)
    try:
        await session.open()
        cookie = "; ".join(f"{m.key}={m.value}" for m in session.http.cookie_jar)
        ids = [await session.start(params) for _ in range(tasks)]
        published: Seen = {}
        received: Seen = {}
        ws_url = stack.ws_url
        before = web.cpu_times()
        started = time.monotonic()
        watchers: list[Any] = []
        for task_id in ids:
            if mode == "ws":
                watchers.append(watch_ws(ws_url, cookie, task_id, received))
            elif mode == "poll":
                watchers.append(watch_poll(session, task_id, interval, received))
            elif mode == "longpoll":
                watchers.append(watch_longpoll(session, task_id, pace, received))
            elif mode == "sse":
                watchers.append(watch_sse(session, task_id, received))
        await asyncio.wait_for(
            asyncio.gather(reference(ws_url, cookie, ids, published), *watchers), 120
        )
        elapsed = time.monotonic() - started
        after = web.cpu_times()
    finally:
        await session.http.close()
    cpu = (after.user - before.user) + (after.system - before.system)
    delays = catch_up_delays(published, received)
    return {
        "mode": mode,
        "tasks": tasks,
        "updates_published": len(published),
        "updates_received": len(received),
        "http_requests": session.requests,
        "seconds": round(elapsed, 2),
        "web_cpu_s": round(cpu, 3),
        "delay_ms": {
            q: None if (v := percentile(delays, p)) is None else round(v * 1000, 1)
            for q, p in (("p50", 50), ("p95", 95), ("max", 100))
        },
    }


def catch_up_delays(published: Seen, received: Seen) -> list[float]:
    """For each published update, the time until its watcher's view was at least as new.

    Collapsing transports (polls, paced long-polls) skip updates; a skipped one
    counts until a later one arrived, so every way of following is measured alike.
    """
    by_task: dict[str, list[tuple[int, float]]] = {}
    for (task_id, seq), t in received.items():
        by_task.setdefault(task_id, []).append((seq, t))
    delays = []
    for (task_id, seq), t_pub in published.items():
        later = [t for s, t in by_task.get(task_id, []) if s >= seq]
        if later:
            delays.append(max(0.0, min(later) - t_pub))
    return delays


def table(rows: list[dict[str, Any]]) -> str:
    base = next((r["web_cpu_s"] for r in rows if r["mode"] == "none"), 0.0)
    lines = [
        "mode      received/published  requests  web CPU s  net ms/update  net ms/watcher-s"
        "  delay p50/p95/max ms",
    ]
    for r in rows:
        received = r["updates_received"]
        net = (r["web_cpu_s"] - base) * 1000
        per_update = f"{net / received:.2f}" if received else "-"
        per_second = f"{net / (r['tasks'] * r['seconds']):.2f}" if r["mode"] != "none" else "-"
        d = r["delay_ms"]
        lines.append(
            f"{r['mode']:<9} {received:>8}/{r['updates_published']:<9} {r['http_requests']:>9}"
            f"  {r['web_cpu_s']:>9.2f}  {per_update:>13}  {per_second:>16}"
            f"  {d['p50']}/{d['p95']}/{d['max']}"
        )
    return "\n".join(lines)


def web_process(stack: Stack) -> psutil.Process:
    root = psutil.Process(stack.pids()[stack.web_names[0]])
    for proc in [root, *root.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            if any("daphne" in part for part in proc.cmdline()):
                return proc
    raise RuntimeError(f"no daphne process under pid {root.pid}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=50, help="tasks, one watcher each")
    parser.add_argument("--modes", default=",".join(MODES), help=f"among {', '.join(MODES)}")
    parser.add_argument("--interval", type=float, default=1.0, help="poll interval, seconds")
    parser.add_argument("--pace", type=float, default=0.5, help="long-poll pace, seconds")
    parser.add_argument("--step", type=float, default=2.0, help="rock step: 100/step updates")
    parser.add_argument("--label", default="fallback", help="results file label")
    args = parser.parse_args(argv)
    modes = [m for m in args.modes.split(",") if m]
    for mode in modes:
        if mode not in MODES:
            parser.error(f"--modes must be among {', '.join(MODES)}, got {mode!r}")
    params = {"step": args.step, "interval_ms": 200}
    env = {
        "PROGROCK_MAX_RUNNING_PER_OWNER": str(max(20, args.tasks)),
        "PROGROCK_LOG_LEVEL": "WARNING",
    }
    rows = []
    with Stack(port=0, workers=2, env=env) as stack:
        web = web_process(stack)
        for mode in modes:
            run = run_mode(mode, stack, web, args.tasks, params, args.interval, args.pace)
            rows.append(asyncio.run(run))
            print(table(rows).splitlines()[-1], flush=True)
    print(table(rows))
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"{dt.date.today().isoformat()}-{args.label}-{args.tasks}.json"
    out.write_text(json.dumps({"args": vars(args), "rows": rows}, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
