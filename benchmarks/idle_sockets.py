#!/usr/bin/env python
"""Open K idle WebSockets to one web process and report how much its RSS grows.

Starts the chosen stack (its own private Redis, on 127.0.0.1), finds its web
process (Daphne), opens K sockets in a ramp from this process, waits for the
RSS to settle, and prints the growth in total and per socket. Nothing is
started on the sockets: this is the cost of a browser that merely keeps the
page open.

    .venv/bin/python benchmarks/idle_sockets.py --target progrock --sockets 10000
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import psutil
from _client import classify, open_socket
from _procs import raise_fd_limit
from _stacks import TARGETS, Stack, start_stack
from websockets.asyncio.client import ClientConnection

RESULTS = Path(__file__).resolve().parent / "results"


def web_process(stack: Stack) -> psutil.Process:
    """The process serving the stack's WebSockets (a Daphne, maybe under a supervisor)."""
    for child in stack.children:
        root = psutil.Process(child.pid)
        for proc in [root, *root.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):
                if any("daphne" in part for part in proc.cmdline()):
                    return proc
    raise RuntimeError(f"expected a daphne process in the {stack.name} stack, found none")


def rss_mb(proc: psutil.Process) -> float:
    return float(proc.memory_info().rss) / 2**20


def settled_rss(proc: psutil.Process, seconds: float = 3.0) -> float:
    """RSS once it has stopped moving by more than 1 MB per second (or after 20 s)."""
    deadline = time.monotonic() + 20
    last = rss_mb(proc)
    while time.monotonic() < deadline:
        time.sleep(seconds / 3)
        now = rss_mb(proc)
        if abs(now - last) < seconds / 3:
            return now
        last = now
    return last


async def open_many(
    url: str, count: int, rate: float
) -> tuple[list[ClientConnection], dict[str, int]]:
    """Open ``count`` sockets at ``rate`` per second; return the open ones and failure counts."""
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    failures: dict[str, int] = {}

    async def one(i: int) -> ClientConnection | None:
        await asyncio.sleep(max(0.0, t0 + i / rate - loop.time()))
        try:
            ws = await open_socket(url, open_timeout=60)
            greeting = json.loads(await asyncio.wait_for(ws.recv(), 60))
            if classify(greeting) != "greeting":
                raise ValueError(f"expected the greeting, got {greeting!r}")
            return ws
        except Exception as exc:
            name = type(exc).__name__
            failures[name] = failures.get(name, 0) + 1
            return None

    opened = await asyncio.gather(*(one(i) for i in range(count)))
    return [ws for ws in opened if ws is not None], failures


async def close_all(sockets: list[ClientConnection]) -> None:
    await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)


def run(target: str, count: int, rate: float, hold: float) -> dict[str, Any]:
    stack = start_stack(target, workers=1)
    try:
        web = web_process(stack)
        before = settled_rss(web)
        print(f"{target}: web pid {web.pid}, RSS {before:.1f} MB; opening {count} sockets")

        async def scenario() -> dict[str, Any]:
            began = time.monotonic()
            sockets, failures = await open_many(stack.url, count, rate)
            opened_in = time.monotonic() - began
            await asyncio.sleep(hold)
            after = await asyncio.to_thread(settled_rss, web)
            cpu = web.cpu_percent(interval=None)
            await close_all(sockets)
            return {
                "opened": len(sockets),
                "failed": sum(failures.values()),
                "failures": failures,
                "open_seconds": round(opened_in, 1),
                "rss_after_mb": round(after, 1),
                "web_cpu_pct_while_open": cpu,
            }

        web.cpu_percent(interval=None)
        result = asyncio.run(scenario())
    finally:
        stack.stop()
    growth = result["rss_after_mb"] - before
    result.update(
        target=target,
        sockets=count,
        rss_before_mb=round(before, 1),
        rss_growth_mb=round(growth, 1),
        kb_per_socket=round(growth * 1024 / max(1, result["opened"]), 1),
    )
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--target", default="progrock", choices=TARGETS)
    parser.add_argument("--sockets", type=int, default=10_000, help="K (default 10,000)")
    parser.add_argument(
        "--rate", type=float, default=200.0, help="new sockets per second (default 200)"
    )
    parser.add_argument("--hold", type=float, default=5.0, help="seconds to hold them idle")
    parser.add_argument("--out", help="JSON result path (default benchmarks/results/...)")
    args = parser.parse_args(argv)
    if args.sockets < 1:
        parser.error(f"expected --sockets >= 1, got {args.sockets}")
    # Our sockets and, inherited, the web process's.
    limit = raise_fd_limit(args.sockets + 2048)
    if limit < args.sockets + 256:
        parser.error(f"open-file limit is {limit}; {args.sockets} sockets need more")
    result = run(args.target, args.sockets, args.rate, args.hold)
    result["when"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    print(
        f"{result['opened']} idle sockets ({result['failed']} failed): web RSS "
        f"{result['rss_before_mb']} -> {result['rss_after_mb']} MB, "
        f"+{result['rss_growth_mb']} MB = {result['kb_per_socket']} KB per socket"
    )
    date = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d")
    out = Path(args.out) if args.out else RESULTS / f"{date}-idle-{args.target}-{args.sockets}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"written to {out}")
    return 0 if result["failed"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
