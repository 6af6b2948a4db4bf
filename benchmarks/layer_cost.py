#!/usr/bin/env python
"""What one channel-layer message costs: channels_redis's core layer against progrock.contrib.layer.

Starts a private Redis, then, for each layer in turn (alternating, ``--rounds``
times), sends ``--messages`` poll-sized messages on a general channel and
receives each right after it was sent, as the delay server and a worker do
with ``prog-rocker``. Prints, per message, the CPU of this process (the
sending and receiving client), Redis's CPU and the wall time, and the Redis
commands issued (``INFO commandstats``; commands run inside a script count
too).

    .venv/bin/python benchmarks/layer_cost.py [--messages 2000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
from typing import Any

import redis.asyncio as aioredis
from channels_redis.core import RedisChannelLayer as ChannelsRedisLayer
from cpu_breakdown import cpu_seconds

from progrock.contrib.layer import RedisChannelLayer
from progrock.local.redis_server import RedisServer

LAYERS: dict[str, type[Any]] = {
    "channels_redis": ChannelsRedisLayer,
    "progrock.contrib.layer": RedisChannelLayer,
}
MESSAGE = {"type": "progrock.poll", "ticks": [[f"{i:032x}", 1764057600123.0] for i in range(6)]}


async def calls(client: aioredis.Redis) -> int:
    stats = await client.info("commandstats")
    return sum(int(v["calls"]) for name, v in stats.items() if name != "cmdstat_info")


async def one_run(cls: type[Any], url: str, redis_pid: int, n: int) -> dict[str, float]:
    layer = cls(hosts=[url], capacity=10_000)
    client = aioredis.Redis.from_url(url)
    pids = {"client": os.getpid(), "redis": redis_pid}
    try:
        for _ in range(50):  # connections, scripts
            await layer.send("prog-rocker", MESSAGE)
            await layer.receive("prog-rocker")
        await asyncio.sleep(0.2)  # let channels_redis's backup clean-ups finish
        calls0, cpu0, wall0 = await calls(client), cpu_seconds(pids), time.perf_counter()
        for _ in range(n):
            await layer.send("prog-rocker", MESSAGE)
            await layer.receive("prog-rocker")
        await asyncio.sleep(0.2)
        wall = time.perf_counter() - wall0 - 0.2
        cpu1, calls1 = cpu_seconds(pids), await calls(client)
        return {
            "client_us": (cpu1["client"] - cpu0["client"]) * 1e6 / n,
            "redis_us": (cpu1["redis"] - cpu0["redis"]) * 1e6 / n,
            "wall_us": wall * 1e6 / n,
            "commands": (calls1 - calls0) / n,
        }
    finally:
        await layer.flush()
        await client.aclose()


async def main(messages: int, rounds: int) -> None:
    server = RedisServer()
    server.start()
    try:
        assert server.process is not None
        results: dict[str, list[dict[str, float]]] = {name: [] for name in LAYERS}
        for r in range(rounds):
            for name, cls in LAYERS.items():
                result = await one_run(cls, server.url, server.process.pid, messages)
                results[name].append(result)
                print(
                    f"round {r + 1} {name:15s} client {result['client_us']:6.1f} us  "
                    f"redis {result['redis_us']:5.1f} us  wall {result['wall_us']:6.1f} us  "
                    f"{result['commands']:.2f} commands per message",
                    flush=True,
                )
        print(f"\nmedians over {rounds} rounds of {messages} messages (send + receive):")
        medians = {
            name: {k: statistics.median(x[k] for x in runs) for k in runs[0]}
            for name, runs in results.items()
        }
        for name, m in medians.items():
            print(
                f"  {name:15s} client {m['client_us']:6.1f} us  redis {m['redis_us']:5.1f} us  "
                f"total {m['client_us'] + m['redis_us']:6.1f} us  wall {m['wall_us']:6.1f} us  "
                f"{m['commands']:.2f} commands"
            )
        old, new = medians["channels_redis"], medians["progrock.contrib.layer"]
        ratio = (old["client_us"] + old["redis_us"]) / (new["client_us"] + new["redis_us"])
        print(f"  CPU per message, channels_redis / progrock.contrib.layer: {ratio:.2f}x")
    finally:
        server.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    try:
        import uvloop

        uvloop.run(main(args.messages, args.rounds))
    except ImportError:
        asyncio.run(main(args.messages, args.rounds))
