#!/usr/bin/env python
"""What a push task's producer pays per ``progrock.report_progress`` call, in CPU.

Starts a private Redis and uses the demo settings with a fresh SQLite
database in a temporary folder; starts ``--tasks`` push tasks, reports each
once (the first report of a task reads its rate state and writes its row),
then times ``--calls`` calls round-robin over the tasks, two ways:

* ``published``: ``POLL_INTERVAL`` is set far below the time between two
  reports of a task, so every call publishes (one Lua call over the
  process's connection): the cost of a report that reaches the browsers;
* ``held``: the default 0.2 s cadence and calls in a tight loop, so nearly
  every call is held and coalesced (the background flusher publishes the
  newest value per task and cadence; its CPU counts in the mean).

CPU per call is the calling thread's CPU time around each call
(``time.thread_time_ns``; the median is the target's measure, ≤ 0.15 ms),
and the whole process's CPU time divided by the calls (flusher included).

    .venv/bin/python benchmarks/reporter_cost.py [--calls 10000] [--tasks 100] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def measure(calls: int, task_ids: list[str], report: Any, step: float) -> dict[str, float]:
    """CPU per call of ``calls`` reports round-robin over ``task_ids``."""
    per_call: list[int] = []
    progress = dict.fromkeys(task_ids, 1.0)
    began_cpu, began_wall = time.process_time(), time.perf_counter()
    for i in range(calls):
        task_id = task_ids[i % len(task_ids)]
        progress[task_id] = min(99.0, progress[task_id] + step)
        before = time.thread_time_ns()
        report(task_id, progress[task_id], f"step {i}")
        per_call.append(time.thread_time_ns() - before)
    wall = time.perf_counter() - began_wall
    time.sleep(0.3)  # let the flusher publish what is held, and count its CPU
    process_cpu = time.process_time() - began_cpu
    per_call.sort()
    return {
        "calls": calls,
        "median_ms": statistics.median(per_call) / 1e6,
        "p90_ms": per_call[int(0.9 * len(per_call))] / 1e6,
        "p99_ms": per_call[int(0.99 * len(per_call))] / 1e6,
        "mean_ms": statistics.fmean(per_call) / 1e6,
        "process_cpu_per_call_ms": process_cpu / calls * 1000,
        "calls_per_s": calls / wall,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=10_000)
    parser.add_argument("--tasks", type=int, default=100)
    parser.add_argument("--out", type=Path, default=None, help="write the numbers as JSON here")
    args = parser.parse_args()
    folder = tempfile.mkdtemp(prefix="progrock-reportercost-")
    os.environ["PROGROCK_DB"] = os.path.join(folder, "db.sqlite3")
    os.environ["DJANGO_SETTINGS_MODULE"] = "progrock_demo.settings"
    sys.path.insert(0, str(HERE.parent / "example"))
    from progrock.local.redis_server import RedisServer

    server = RedisServer()
    server.start()
    try:
        os.environ["REDIS_URL"] = server.url
        import django

        django.setup()
        from django.core.management import call_command
        from django.test import override_settings

        import progrock

        call_command("migrate", verbosity=0)
        results: dict[str, Any] = {}
        base = {"REDIS_URL": server.url, "MAX_RUNNING_PER_OWNER": None}
        for mode, cadence, step in (("published", 0.0001, 0.001), ("held", 0.2, 0.0001)):
            with override_settings(PROGROCK={**base, "POLL_INTERVAL": cadence}):
                ids = [
                    progrock.start_task("rock", owner="user:1", push=True)
                    for _ in range(args.tasks)
                ]
                for task_id in ids:  # first reports: rate state read, row written
                    progrock.report_progress(task_id, 0.5)
                time.sleep(0.3)
                results[mode] = measure(args.calls, ids, progrock.report_progress, step)
        print(f"report_progress CPU per call, {args.calls} calls over {args.tasks} push tasks")
        print(
            f"{'mode':<10} {'median':>8} {'p90':>8} {'p99':>8} {'mean':>8} {'process':>8} calls/s"
        )
        for mode, r in results.items():
            print(
                f"{mode:<10} {r['median_ms']:8.3f} {r['p90_ms']:8.3f} {r['p99_ms']:8.3f} "
                f"{r['mean_ms']:8.3f} {r['process_cpu_per_call_ms']:8.3f} {r['calls_per_s']:.0f}"
            )
        print("(ms of CPU; 'process': the whole process's CPU, flusher included, per call)")
        if args.out:
            payload = {
                "benchmark": "reporter_cost",
                "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "tasks": args.tasks,
                "load_average": os.getloadavg(),
                "results": results,
            }
            args.out.write_text(json.dumps(payload, indent=2) + "\n")
    finally:
        from django.db import connections

        connections.close_all()
        server.cleanup()
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
