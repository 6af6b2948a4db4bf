"""How late does ``rundelay`` deliver? p50/p99/max lateness of 1,000 messages.

Starts a private Redis and a real ``python -m django rundelay`` process,
schedules messages through ``DelayStore.schedule_many`` and receives them on
the channel layer; lateness = receive time - due time (negative = early).

    .venv/bin/python benchmarks/delay_latency.py [--count 1000] [--out result.json]

Scenarios: ``spread`` (due times spread over 2 s), ``burst`` (all due at
the same millisecond) and ``burst-merge`` (the same with ``merge=True``, as
the worker's poll ticks: TICK_BATCH messages per send). Receiving runs in
this process (16 concurrent receivers), so lateness includes one
channel-layer receive.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "progrock_demo.settings")
# The demo project is in the checkout's example/ folder (here and in the children).
_EXAMPLE = str(Path(__file__).resolve().parents[1] / "example")
sys.path.insert(0, _EXAMPLE)
os.environ["PYTHONPATH"] = os.pathsep.join(
    [_EXAMPLE, *filter(None, [os.environ.get("PYTHONPATH")])]
)
RECEIVERS = 16


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def start_rundelay(url: str, data_dir: str) -> asyncio.subprocess.Process:
    env = {**os.environ, "REDIS_URL": url, "PROGROCK_DATA_DIR": data_dir, "PYTHONUNBUFFERED": "1"}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "django", "rundelay", env=env, stdout=asyncio.subprocess.PIPE
    )
    assert process.stdout is not None
    async with asyncio.timeout(30):
        while b"rundelay ready" not in (line := await process.stdout.readline()):
            if not line:
                raise SystemExit("rundelay exited before it was ready")
    return process


async def scenario(
    name: str, count: int, url: str, delays: list[float], merge: bool = False
) -> dict[str, Any]:
    from channels_redis.core import RedisChannelLayer

    from progrock.delay import DelayStore, Envelope

    store = DelayStore.from_url(url)
    layer = RedisChannelLayer(hosts=[url], capacity=count * 2)
    try:
        envelopes = [
            Envelope("bench", {"type": "b", "i": [i]}, d, merge=merge) for i, d in enumerate(delays)
        ]
        ids: list[str] = []
        for start in range(0, count, 500):
            ids += await store.schedule_many(envelopes[start : start + 500])
        # The due times the store computed (the first messages are due 100 ms later).
        scores = await store.client.zmscore(store.keys.pending, ids)
        if any(score is None for score in scores):
            raise SystemExit("messages were delivered before their due times could be read")
        due = [float(score) for score in scores]
        lateness: list[float] = []

        async def receiver() -> None:
            while len(lateness) < count:
                message = await layer.receive("bench")
                received = time.time() * 1000
                lateness.extend(received - due[i] for i in message["i"])  # merged: several

        # Several receivers, so that receiving is not what makes messages late.
        receivers = [asyncio.create_task(receiver()) for _ in range(RECEIVERS)]
        try:
            async with asyncio.timeout(60):
                while len(lateness) < count:
                    await asyncio.wait(receivers, timeout=0.05)
        finally:
            for task in receivers:
                task.cancel()
            await asyncio.gather(*receivers, return_exceptions=True)
    finally:
        await layer.close_pools()
        await store.aclose()
    return {
        "scenario": name,
        "count": count,
        "p50_ms": round(statistics.median(lateness), 2),
        "p99_ms": round(percentile(lateness, 0.99), 2),
        "max_ms": round(max(lateness), 2),
        "early": sum(1 for x in lateness if x < 0),
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    args = parser.parse_args()

    import django

    from progrock.local.redis_server import RedisServer

    redis_server = RedisServer()
    redis_server.start()
    with tempfile.TemporaryDirectory(prefix="progrock-bench-") as data_dir:
        os.environ["REDIS_URL"] = redis_server.url
        os.environ["PROGROCK_DATA_DIR"] = data_dir
        django.setup()
        process = await start_rundelay(redis_server.url, data_dir)
        try:
            rng = random.Random(1)
            count = args.count
            results = [
                await scenario("spread", count, redis_server.url,
                               [rng.uniform(100, 2100) for _ in range(count)]),
                await scenario("burst", count, redis_server.url, [500.0] * count),
                await scenario("burst-merge", count, redis_server.url, [500.0] * count, True),
            ]  # fmt: skip
        finally:
            process.terminate()
            await process.wait()
            redis_server.cleanup()

    print(f"{'scenario':<13}{'count':>7}{'p50 ms':>10}{'p99 ms':>10}{'max ms':>10}{'early':>7}")
    for r in results:
        print(
            f"{r['scenario']:<13}{r['count']:>7}{r['p50_ms']:>10}{r['p99_ms']:>10}"
            f"{r['max_ms']:>10}{r['early']:>7}"
        )
    if args.out:
        report = {
            "benchmark": "delay_latency",
            "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "python": platform.python_version(),
            "machine": platform.machine(),
            "results": results,
        }
        args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    asyncio.run(main())
