#!/usr/bin/env python
"""Push mode side by side with polled mode, in the same run.

For each N in ``--tasks``, two fresh stacks in turn (``progrock up``, as
``run.py`` starts them), each with N simulated browsers on real sockets:

* ``polled``: exactly ``run.py``'s ProgRock run (each browser starts a rock
  task, the workers poll the reference backend every 200 ms);
* ``push``: producer processes (``_producer.py``; one, or two above 1,000
  tasks, or ``--producers``) each start their share of N push tasks, owned by
  one session per browser, and run them as a rock task runs (+3 % every
  200 ms, complete at 100 %), calling the sync ``progrock.report_progress``
  when each step is due from ``--threads`` threads (50; a task queue's thread
  pool); each browser subscribes to its task with its session cookie.

Freshness counts from when each step happened (the backend's created time
plus k x 200 ms for polled tasks, the producer's origin plus k x 200 ms for
push tasks). "CPU ms / update" is the stack's CPU, producers included for
push mode, per delivered update. Prints one table per N and writes JSON to
``benchmarks/results/<date>-push-<N...>.json`` (or ``--out``).

    .venv/bin/python benchmarks/push_run.py --tasks 100,1000
    .venv/bin/python benchmarks/push_run.py --tasks 2000 --producers 2

Other options (``--start-window``, ``--workers``, ``--quiet-wait``, ...) are
``run.py``'s.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import run
from _procs import Child, raise_fd_limit, spawn
from _stacks import start_stack
from _stats import summarize, table

HERE = Path(__file__).resolve().parent
NOMINAL_S = 34 * run.CADENCE  # a rock task: 34 steps of 3 %, 200 ms apart
ON_TIME_S = 0.5  # "ends within 0.5 s of its nominal time"


def ended_on_time(tasks: list[dict[str, Any]]) -> dict[str, Any]:
    """How many tasks completed within ON_TIME_S of NOMINAL_S after their origin."""
    ends = [
        t["times"][-1] - t["origin"]
        for t in tasks
        if t.get("complete") and t.get("origin") is not None and t["times"]
    ]
    on_time = sum(1 for d in ends if d <= NOMINAL_S + ON_TIME_S)
    return {
        "on_time": on_time,
        "on_time_pct": round(100.0 * on_time / len(tasks), 2) if tasks else None,
        "end_after_nominal_ms_max": round(1000 * (max(ends) - NOMINAL_S), 1) if ends else None,
    }


def run_polled(n: int, args: argparse.Namespace) -> dict[str, Any]:
    summary = run.run_one("progrock", n, args)
    summary.update(ended_on_time(summary.pop("raw_tasks")))
    return summary


def run_push(n: int, args: argparse.Namespace, producers: int) -> dict[str, Any]:
    busy = run.wait_quiet(args.quiet_wait) if args.quiet_wait > 0 else None
    print(f"[push N={n}] starting stack (machine CPU before: {busy}%)", flush=True)
    keep = args.keep_logs / f"push-{n}" if args.keep_logs else None
    stack = start_stack("progrock", args.workers, keep_logs=keep, web=args.web)
    run._live_stacks.append(stack)
    children: list[Child] = []
    try:
        assert stack.workdir is not None
        with tempfile.TemporaryDirectory(prefix="bench-push-") as tmp_name:
            tmp = Path(tmp_name)
            env = {
                "REDIS_URL": stack.redis.url,
                "PROGROCK_DATA_DIR": str(stack.workdir / "data"),
                "PROGROCK_LOG_LEVEL": "WARNING",
                "DJANGO_SETTINGS_MODULE": "progrock_demo.settings",
            }
            per = [n // producers + (1 if i < n % producers else 0) for i in range(producers)]
            partners = []
            first = 0
            for i, count in enumerate(per):
                child = spawn(
                    f"producer-{i}",
                    [
                        sys.executable,
                        str(HERE / "_producer.py"),
                        *("--first", str(first), "--count", str(count), "--total", str(n)),
                        *("--start-window", str(args.start_window)),
                        *("--cadence", str(run.CADENCE)),
                        *("--threads", str(args.producer_threads)),
                        *("--setup-out", str(tmp / f"setup-{i}.json")),
                        *("--out", str(tmp / f"producer-{i}.json")),
                    ],
                    tmp,
                    env=env,
                    stdout_pipe=True,
                    stdin_pipe=True,
                )
                children.append(child)
                run._live_children.append(child)
                partners.append((child, run._line_reader(child)))
                first += count
            deadline = time.monotonic() + 60 + max(per) * 0.05
            for child, lines in partners:
                run._expect(child, lines, "ready", deadline)
            setup = sorted(
                (
                    e
                    for i in range(producers)
                    for e in json.loads((tmp / f"setup-{i}.json").read_text())
                ),
                key=lambda e: e["index"],
            )
            (tmp / "push.json").write_text(json.dumps(setup))
            print(f"  {n} push tasks started by {producers} producer(s)", flush=True)
            raw = run.run_load(
                stack,
                n,
                args,
                tmp,
                loadgen_args=["--push-file", str(tmp / "push.json")],
                partners=partners,
            )
            produced = [
                json.loads((tmp / f"producer-{i}.json").read_text()) for i in range(producers)
            ]
    finally:
        for child in children:
            child.stop()
            with contextlib.suppress(ValueError):
                run._live_children.remove(child)
        stack.stop()
        run._live_stacks.remove(stack)
    origins = {k: v for p in produced for k, v in p.pop("origins").items()}
    for task in raw["tasks"]:
        task["origin"] = origins.get(task.get("task_id") or "")
    summary = summarize(raw["tasks"], raw["usage"], raw["loadgens"], run.CADENCE)
    summary.update(ended_on_time(raw["tasks"]))
    summary["producers"] = produced
    summary["producer_cpu_s"] = round(sum(p["cpu_s"] for p in produced), 3)
    summary["stack_processes_died"] = raw["died"]
    summary["machine_cpu_pct_before"] = busy
    summary["loadgens"] = raw["loadgens"]
    print(
        f"  done: {summary['completed']}/{n} complete, p99 freshness "
        f"{summary['freshness_ms']['p99']} ms, {summary['cpu_ms_per_update']} CPU ms/update "
        f"(producers {summary['producer_cpu_s']} s); producer p99 late "
        f"{max((p['late_ms_p99'] or 0) for p in produced):.1f} ms",
        flush=True,
    )
    return summary


EXTRA_ROWS = [
    ("tasks ended within 0.5 s of nominal %", lambda s: s.get("on_time_pct")),
    ("latest end after nominal ms", lambda s: s.get("end_after_nominal_ms_max")),
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--producers", type=int, default=0, help="default: 1, 2 above 1,000")
    parser.add_argument("--modes", default="polled,push")
    parser.add_argument("--threads", type=int, default=50, help="threads per producer")
    mine, rest = parser.parse_known_args(argv)
    if "--tasks" not in rest:
        rest += ["--tasks", "100,1000"]
    args = run.parse_args([*rest, "--targets", "progrock", "--raw"])
    args.producer_threads = mine.threads
    raise_fd_limit(max(args.task_counts) * 2 + 4096)
    modes = [m.strip() for m in mine.modes.split(",") if m.strip()]
    label = "-".join(map(str, args.task_counts))
    date = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d")
    out = Path(args.out) if args.out else run.RESULTS / f"{date}-push-{label}.json"
    report: dict[str, Any] = {
        "meta": {
            "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "machine": run.machine(),
            "git": run.git_head(),
            "argv": sys.argv[1:] if argv is None else argv,
            "cadence_s": run.CADENCE,
            "workers": args.workers,
            "start_window_s": args.start_window,
        },
        "runs": [],
    }
    tables: list[str] = []
    try:
        for n in args.task_counts:
            producers = mine.producers or max(1, math.ceil(n / 1000))
            results: dict[str, dict[str, Any]] = {}
            for mode in modes:
                try:
                    summary = (
                        run_polled(n, args) if mode == "polled" else run_push(n, args, producers)
                    )
                except (RuntimeError, TimeoutError, OSError) as exc:
                    print(f"[{mode} N={n}] FAILED: {exc}", file=sys.stderr, flush=True)
                    report["runs"].append({"mode": mode, "tasks": n, "error": str(exc)})
                    continue
                results[mode] = summary
                report["runs"].append({"mode": mode, "tasks": n, "summary": summary})
            if results:
                text = table(n, dict(results))
                extra = [
                    "| " + " | ".join([label_, *(str(get(s)) for s in results.values())]) + " |"
                    for label_, get in EXTRA_ROWS
                ]
                tables.append(text + "\n" + "\n".join(extra))
                print("\n" + tables[-1] + "\n", flush=True)
    except KeyboardInterrupt:
        report["meta"]["interrupted"] = True
        return 130
    finally:
        for child in list(run._live_children):
            child.stop()
        for stack in list(run._live_stacks):
            stack.stop()
        report["tables"] = tables
        for entry in report["runs"]:
            entry.get("summary", {}).pop("raw_tasks", None)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=1) + "\n")
        print(f"results written to {out}", flush=True)
    return 1 if any("error" in r for r in report["runs"]) else 0


if __name__ == "__main__":
    sys.exit(main())
