"""Where the CPU goes: per-process CPU time per delivered update under N tasks.

Starts a ProgRock stack (progrock.local.stack.Stack: private Redis, backend, delay
server, workers, web), runs N simulated browsers in this process (each starts
one rock task), and prints each process's CPU seconds and microseconds
per delivered update. Cheaper and coarser than run.py; used to see what each
optimisation bought.

    .venv/bin/python benchmarks/cpu_breakdown.py 600 [--workers 2] [--server daphne]
    .venv/bin/python benchmarks/cpu_breakdown.py 1000 --step 1   # 20 s tasks: a clean steady window
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

import psutil
import websockets

from progrock.local.stack import WEB_SERVERS, Stack


def cpu_seconds(pids: dict[str, int]) -> dict[str, float]:
    out: dict[str, float] = {}
    for name, pid in pids.items():
        try:
            proc = psutil.Process(pid)
            total = sum(proc.cpu_times()[:2])
            for child in proc.children(recursive=True):
                total += sum(child.cpu_times()[:2])
            out[name] = total
        except psutil.Error:
            continue
    return out


def command_stats(redis_url: str) -> dict[str, tuple[int, int]]:
    """Redis command name -> (calls, microseconds) since the server started."""
    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        info = client.info("commandstats")
    finally:
        client.close()
    return {
        name.removeprefix("cmdstat_"): (int(v["calls"]), int(v["usec"])) for name, v in info.items()
    }


def command_lines(
    before: dict[str, tuple[int, int]], after: dict[str, tuple[int, int]], n: int
) -> str:
    rows = []
    for name, (calls, usec) in after.items():
        c0, u0 = before.get(name, (0, 0))
        if calls > c0:
            rows.append((usec - u0, name, calls - c0))
    rows.sort(reverse=True)
    total_calls = sum(c for _, _, c in rows)
    lines = [f"    Redis: {total_calls / max(n, 1):.2f} calls/update"]
    lines += [
        f"      {name:14s} {calls / max(n, 1):6.3f} calls/update  {usec / max(n, 1):6.1f} us/update"
        for usec, name, calls in rows
    ]
    return "\n".join(lines)


async def drive(
    stack: Stack, tasks: int, rate: float, step: float = 3, redis_stats: bool = False
) -> None:
    ws_url = stack.url.replace("http://", "ws://") + "/prog/"
    updates = timeouts = 0
    durations: list[float] = []

    async def browser(i: int) -> None:
        nonlocal updates, timeouts
        await asyncio.sleep(i / rate)
        async with websockets.connect(ws_url, origin=stack.url) as ws:  # type: ignore[arg-type]
            await ws.recv()
            await ws.send(json.dumps({"action": "start", "params": {"step": step}}))
            began = time.monotonic()
            while True:
                try:
                    message = json.loads(await asyncio.wait_for(ws.recv(), 30))
                except TimeoutError:
                    timeouts += 1
                    return
                updates += 1
                if message.get("complete") or message.get("type") in ("failed", "error"):
                    durations.append(time.monotonic() - began)
                    return

    me = psutil.Process()
    window: dict[str, float] = {}

    async def steady() -> None:
        # Steady state: from 0.5 s after the last browser started, for 3 s.
        await asyncio.sleep(tasks / rate + 0.5)
        first = cpu_seconds(stack.pids())
        window["updates"], window["cpu"] = updates, sum(first.values())
        window["me"], window["t"] = sum(me.cpu_times()[:2]), time.monotonic()
        stats = command_stats(stack.redis_url) if redis_stats else {}
        await asyncio.sleep(3)
        n = updates - window["updates"]
        stats_lines = (
            "\n" + command_lines(stats, command_stats(stack.redis_url), n) if redis_stats else ""
        )
        last = cpu_seconds(stack.pids())
        cpu = sum(last.values()) - window["cpu"]
        parts = "  ".join(
            f"{name} {(last[name] - first.get(name, 0.0)) / max(n, 1) * 1e6:.0f}"
            for name in sorted(last)
        )
        load = sum(me.cpu_times()[:2]) - window["me"]
        elapsed = time.monotonic() - window["t"]
        window["line"] = (
            f"steady 3 s: {n / elapsed:.0f} updates/s, stack {cpu / max(n, 1) * 1e6:.0f} us/update"
            f" + loadgen {load / max(n, 1) * 1e6:.0f} us/update,"
            f" machine {(cpu + load) / elapsed:.2f} cores\n    per process, us/update: {parts}"
            f"{stats_lines}"
        )

    before, me_before = cpu_seconds(stack.pids()), sum(me.cpu_times()[:2])
    began = time.monotonic()
    await asyncio.gather(steady(), *(browser(i) for i in range(tasks)))
    wall = time.monotonic() - began
    after, me_after = cpu_seconds(stack.pids()), sum(me.cpu_times()[:2])
    durations.sort()
    print(
        f"N={tasks} wall={wall:.1f}s updates={updates} ({updates / tasks:.1f}/task) "
        f"timeouts={timeouts} duration p50={durations[len(durations) // 2]:.2f}s "
        f"max={durations[-1]:.2f}s"
    )
    total = 0.0
    for name in sorted(after):
        spent = after[name] - before.get(name, 0.0)
        total += spent
        print(f"  {name:10s} {spent:6.2f}s cpu  {spent / updates * 1e6:7.0f} us/update")
    load = me_after - me_before
    print(f"  {'loadgen':10s} {load:6.2f}s cpu  {load / updates * 1e6:7.0f} us/update")
    print(f"  stack total {total:.2f}s  {total / updates * 1e6:.0f} us/update")
    print(f"  {window.get('line', 'steady window not reached')}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("tasks", type=int, nargs="?", default=300)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--server", choices=WEB_SERVERS, default="daphne")
    parser.add_argument("--rate", type=float, default=200.0, help="browsers started per second")
    parser.add_argument(
        "--step", type=float, default=3, help="percent per 200 ms tick (1 makes 20 s tasks)"
    )
    parser.add_argument(
        "--redis-stats",
        action="store_true",
        help="also print Redis commands per update in the steady window (INFO commandstats)",
    )
    args = parser.parse_args()
    with Stack(workers=args.workers, server=args.server) as stack:
        asyncio.run(drive(stack, args.tasks, args.rate, args.step, args.redis_stats))


if __name__ == "__main__":
    main()
