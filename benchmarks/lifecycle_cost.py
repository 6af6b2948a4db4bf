"""What a task's start and end cost: CPU per task of each stack process, for a burst.

Starts a ProgRock stack (progrock.local.stack.Stack), connects N sockets (not
measured), then every socket starts one rock task at once with ``step`` 100,
so each task is started, polled once and completed, and its socket closed
(as a page does when its task is over). Prints the CPU each process spent per
task: the cost of a task's life outside its updates, which decides how fast a
burst of starts or ends is absorbed.

    .venv/bin/python benchmarks/lifecycle_cost.py 1000
    .venv/bin/python benchmarks/lifecycle_cost.py 2000 --starts-only

``--starts-only`` measures the start alone: the tasks are long (one step per
100 s), the burst is over once every socket has its ``started`` message, and
the CPU of the polls of the tasks started meanwhile is counted too (a few
per task: one every 200 ms from its start to the end of the burst; they
change nothing, so they announce nothing). The sockets stay open until the
report is printed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

import psutil
import websockets
from cpu_breakdown import cpu_seconds

from progrock.local.stack import Stack


async def burst(stack: Stack, n: int, starts_only: bool = False) -> None:
    url = stack.url.replace("http://", "ws://") + "/prog/"
    sockets = []
    for _ in range(n):
        ws = await websockets.connect(url, origin=stack.url)  # type: ignore[arg-type]
        await ws.recv()
        sockets.append(ws)
    await asyncio.sleep(2)  # let the connection work settle
    me = psutil.Process()
    before, me_before = cpu_seconds(stack.pids()), sum(me.cpu_times()[:2])
    began = time.monotonic()

    async def one(ws: websockets.ClientConnection) -> bool:
        params = {"step": 1, "interval_ms": 100_000} if starts_only else {"step": 100}
        await ws.send(json.dumps({"action": "start", "kind": "rock", "params": params}))
        while True:
            message = json.loads(await asyncio.wait_for(ws.recv(), 60))
            if starts_only and message.get("type") == "started":
                return True
            if message.get("complete"):
                await ws.close()  # as a page does when its task is over (run.py's browsers too)
                return True
            if message.get("type") in ("failed", "error"):
                return False

    results = await asyncio.gather(*(one(ws) for ws in sockets))
    wall = time.monotonic() - began
    if not starts_only:
        await asyncio.sleep(0.5)  # let the last end's bookkeeping finish
    after, me_after = cpu_seconds(stack.pids()), sum(me.cpu_times()[:2])
    outcome = "started" if starts_only else "complete"
    print(f"N={n} burst handled in {wall:.2f}s, {sum(results)}/{n} {outcome}")
    unit = "ms/start" if starts_only else "ms/task"
    total = 0.0
    for name in sorted(after):
        spent = after[name] - before.get(name, 0.0)
        total += spent
        print(f"  {name:10s} {spent / n * 1e3:6.3f} {unit}")
    load = (me_after - me_before) / n * 1e3
    print(f"  stack      {total / n * 1e3:6.3f} {unit}  (load generator {load:.3f})")
    for ws in sockets:
        await ws.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("tasks", type=int, nargs="?", default=1000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--starts-only", action="store_true", help="measure the starts of long tasks alone"
    )
    args = parser.parse_args()
    with Stack(workers=args.workers) as stack:
        asyncio.run(burst(stack, args.tasks, args.starts_only))


if __name__ == "__main__":
    main()
