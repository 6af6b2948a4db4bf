"""One push-mode producer process: ``count`` rock tasks reported with ``report_progress``.

Run by ``push_run.py`` (never by hand), with the demo settings pointed at the
stack's database and Redis. Talks to its parent over stdin/stdout:

1. creates a session and a push task (``start_task(push=True)``, owned by that
   session) per simulated browser ``first .. first + count - 1``, writes
   ``[{index, task_id, session}]`` to ``--setup-out`` and prints ``ready``;
2. reads ``go <t>`` (a ``time.monotonic()`` instant shared with the load
   processes) and runs task *i* as the reference backend runs a rock task:
   from ``origin = t + i / total * start_window``, +3 % every ``cadence``
   (200 ms), ``complete`` at 100 %; the tasks are shared by ``--threads``
   threads (a task queue's pool), each reporting its tasks' steps when due
   with the sync ``report_progress`` (a blocking round trip each);
3. writes each task's origin (monotonic, where freshness counts from), how
   late each of its reports left, and its CPU time to ``--out``, prints
   ``done`` and waits for its parent to stop it (its CPU is sampled till then).
"""

from __future__ import annotations

import argparse
import heapq
import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

STEP = 3.0  # percent per step, as the rock kind


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--first", type=int, required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--total", type=int, required=True)
    parser.add_argument("--start-window", type=float, required=True)
    parser.add_argument("--cadence", type=float, default=0.2)
    parser.add_argument("--threads", type=int, default=50, help="threads sharing the tasks")
    parser.add_argument("--setup-out", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "progrock_demo.settings")
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "example"))
    import django

    django.setup()
    from django.contrib.sessions.backends.db import SessionStore

    import progrock

    setup = []
    for index in range(args.first, args.first + args.count):
        session = SessionStore()
        session.create()
        owner = f"session:{session.session_key}"
        task_id = progrock.start_task("rock", owner=owner, push=True)
        setup.append({"index": index, "task_id": task_id, "session": session.session_key})
    Path(args.setup_out).write_text(json.dumps(setup))
    # PUSH_TIMEOUT counts from each start: creating thousands took long on a
    # busy machine, and the first reports are still some seconds away.
    for entry in setup:
        progrock.keep_alive(entry["task_id"])
    print("ready", flush=True)
    line = sys.stdin.readline().split()
    if len(line) != 2 or line[0] != "go":
        raise SystemExit(f"expected 'go <time>' on stdin, got {line!r}")
    t_go = float(line[1])
    cpu0 = time.process_time()
    origins = {
        entry["task_id"]: t_go + entry["index"] / args.total * args.start_window for entry in setup
    }
    late: list[float] = []
    errors: dict[str, int] = {}

    def work(share: list[dict[str, Any]]) -> None:
        """Run a share of the tasks from one thread (a pool thread of a task queue)."""
        due: list[tuple[float, int, int]] = []  # (when, position, step)
        for position, entry in enumerate(share):
            heapq.heappush(due, (origins[entry["task_id"]] + args.cadence, position, 1))
        while due:
            when, position, step = heapq.heappop(due)
            wait = when - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            late.append(time.monotonic() - when)
            task_id = share[position]["task_id"]
            progress = min(100.0, step * STEP)
            try:
                if progress >= 100:
                    progrock.report_progress(task_id, status="complete", result={"steps": step})
                else:
                    progrock.report_progress(task_id, progress, f"step {step}")
                    heapq.heappush(due, (when + args.cadence, position, step + 1))
            except Exception as exc:
                key = type(exc).__name__
                errors[key] = errors.get(key, 0) + 1

    threads = [
        threading.Thread(target=work, args=(setup[i :: args.threads],), name=f"producer-{i}")
        for i in range(min(args.threads, len(setup)))
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    cpu_s = time.process_time() - cpu0
    late.sort()
    Path(args.out).write_text(
        json.dumps(
            {
                "origins": origins,
                "cpu_s": cpu_s,
                "calls": len(late),
                "late_ms_p50": 1000 * late[len(late) // 2] if late else None,
                "late_ms_p99": 1000 * late[int(len(late) * 0.99)] if late else None,
                "late_ms_max": 1000 * late[-1] if late else None,
                "errors": errors,
            }
        )
    )
    print("done", flush=True)
    sys.stdin.readline()  # until the parent stops us (our CPU is sampled till then)


if __name__ == "__main__":
    main()
