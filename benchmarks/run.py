#!/usr/bin/env python
"""Benchmark ProgRock against the 2017 ProgRock design, ported to Channels 4.

For each N in ``--tasks`` and each target in ``--targets`` this starts a fresh
stack on 127.0.0.1 (its own private Redis), connects N simulated browsers from
separate load processes in a ramp, starts one rock task (the 2017 demo's) per browser
(+3 % per 200 ms, ~6.8 s) spread over ``--start-window`` seconds, records every
update, asks the backend (ProgRock's) when it created each task (freshness is
counted from there, ``_stats.py``), then stops the stack. It prints one table
per N (both targets side by side, with progrock/baseline ratios) and writes
everything as JSON to ``benchmarks/results/<date>-<label>.json`` (or ``--out``).

    .venv/bin/python benchmarks/run.py --tasks 100,500,2000
    .venv/bin/python benchmarks/run.py --quick --targets baseline
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import math
import os
import platform
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import psutil
from _backend import attach_origins, created_at, wall_minus_monotonic
from _procs import Child, Sampler, raise_fd_limit, spawn
from _stacks import TARGETS, Stack, start_stack
from _stats import summarize, table

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
CADENCE = 0.2  # the 2017 demo's delay, in seconds

_live_stacks: list[Stack] = []
_live_children: list[Child] = []


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    model = platform.processor() or "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_count": os.cpu_count(),
        "cpu_model": model,
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "loop_cpu_s": core_speed(),
    }


def core_speed() -> float:
    """CPU seconds one core takes for a pure-Python loop of 5 million additions (best of 3).

    Machines of the same kind differ: one seen here took twice as long as another,
    and every CPU figure with it. Compare runs from different days through this.
    """
    best = math.inf
    for _ in range(3):
        start = time.process_time()
        total = 0
        for i in range(5_000_000):
            total += i
        best = min(best, time.process_time() - start)
    return round(best, 3)


def git_head() -> str | None:
    """The commit the numbers were measured at (``+dirty`` if the tree has changes)."""

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=HERE, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()

    try:
        head = git("rev-parse", "--short", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return None
    return head + ("+dirty" if dirty else "")


def _line_reader(child: Child) -> queue.Queue[str]:
    lines: queue.Queue[str] = queue.Queue()
    stdout = child.popen.stdout
    if stdout is None:
        raise RuntimeError(f"{child.role}: stdout is not a pipe")

    def pump() -> None:
        for raw in iter(stdout.readline, b""):
            lines.put(raw.decode(errors="replace").strip())
        lines.put("")  # EOF

    threading.Thread(target=pump, name=f"{child.role}-stdout", daemon=True).start()
    return lines


def _expect(child: Child, lines: queue.Queue[str], word: str, deadline: float) -> str:
    try:
        line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
    except queue.Empty:
        raise TimeoutError(f"{child.role}: no {word!r} before the deadline") from None
    if not line.startswith(word):
        raise RuntimeError(f"{child.role}: expected {word!r}, got {line!r}\n{child.log_tail()}")
    return line


def run_load(
    stack: Stack,
    n: int,
    args: argparse.Namespace,
    tmp: Path,
    *,
    loadgen_args: list[str] | None = None,
    partners: list[tuple[Child, queue.Queue[str]]] | None = None,
) -> dict[str, Any]:
    """Drive one stack with ``n`` browsers; return the merged records and resource usage.

    ``loadgen_args`` go to every load process; ``partners`` are processes
    (``push_run.py``'s producers) that get the same ``go`` line, must print
    ``done`` too, and whose CPU counts with the stack's.
    """
    partners = partners or []
    urls = stack.urls or [stack.url]
    procs = max(len(urls), args.load_procs or max(1, math.ceil(n / 1500)))
    per = [n // procs + (1 if i < n % procs else 0) for i in range(procs)]
    loadgens: list[tuple[Child, queue.Queue[str], Path]] = []
    first = 0
    for i, count in enumerate(per):
        out = tmp / f"load-{i}.json"
        child = spawn(
            f"load-{i}",
            [
                sys.executable,
                str(HERE / "_loadgen.py"),
                "--url",
                urls[i % len(urls)],  # load processes spread over the web processes
                "--target",
                stack.name,
                "--first",
                str(first),
                "--count",
                str(count),
                "--total",
                str(n),
                "--connect-rate",
                str(args.connect_rate / procs),
                "--start-window",
                str(args.start_window),
                "--task-timeout",
                str(args.task_timeout),
                "--stall-timeout",
                str(args.stall_timeout),
                "--out",
                str(out),
                *(loadgen_args or []),
            ],
            tmp,
            stdout_pipe=True,
            stdin_pipe=True,
        )
        _live_children.append(child)
        loadgens.append((child, _line_reader(child), out))
        first += count
    try:
        deadline = time.monotonic() + max(per) / (args.connect_rate / procs) + 90
        connected = failed = 0
        for child, lines, _ in loadgens:
            _, ok, bad = _expect(child, lines, "ready", deadline).split()
            connected, failed = connected + int(ok), failed + int(bad)
        stack.check_alive()
        print(f"  {connected} sockets connected ({failed} failed); starting tasks", flush=True)
        sampler = Sampler({**stack.roots(), **{child.role: child.pid for child, _ in partners}})
        sampler.start()
        t_go = time.monotonic() + 0.3
        for child in [*(c for c, _, _ in loadgens), *(c for c, _ in partners)]:
            stdin = child.popen.stdin
            if stdin is None:
                raise RuntimeError(f"{child.role}: stdin is not a pipe")
            stdin.write(f"go {t_go!r}\n".encode())
            stdin.flush()
        deadline = time.monotonic() + args.start_window + args.task_timeout + 60
        for child, lines in [*((c, q) for c, q, _ in loadgens), *partners]:
            _expect(child, lines, "done", deadline)
        usage = sampler.stop()
        for child, _, _ in loadgens:
            child.popen.wait(10)
        died = [c.role for c in stack.children if not c.alive()]
        tasks: list[dict[str, Any]] = []
        load_usage: list[dict[str, float]] = []
        for _, _, out in loadgens:
            data = json.loads(out.read_text())
            tasks.extend(data.pop("tasks"))
            load_usage.append(data)
        return {"tasks": tasks, "usage": usage, "loadgens": load_usage, "died": died}
    finally:
        for child, _, _ in loadgens:
            child.stop()
            with contextlib.suppress(ValueError):
                _live_children.remove(child)


def add_origins(backend_url: str, tasks: list[dict[str, Any]], name: str) -> None:
    """Give each task the time its backend created it (``origin``), where the backend knows.

    A task left without one has its freshness counted from its first update
    (``_stats.py``); the summary's ``freshness_origins`` counts both, and a
    shortfall is printed here.
    """
    ids = [task["task_id"] for task in tasks if task.get("task_id")]
    try:
        created = created_at(backend_url, ids)
    except (OSError, ValueError, RuntimeError) as exc:
        print(f"{name} WARNING: no created times from {backend_url}: {exc!r}", file=sys.stderr)
        return
    found = attach_origins(tasks, created, wall_minus_monotonic())
    if found < len(ids):
        print(
            f"{name} WARNING: the backend knew {found} of {len(ids)} tasks: the others' "
            "freshness is counted from their first update",
            file=sys.stderr,
            flush=True,
        )


def wait_quiet(limit_s: float, below_pct: float = 20.0) -> float:
    """Wait up to ``limit_s`` for the machine's CPU use to drop below ``below_pct``.

    Other people's processes share the cores; starting while they are busy skews
    the numbers. Returns the last measured machine CPU percent.
    """
    deadline = time.monotonic() + limit_s
    busy = psutil.cpu_percent(interval=1.0)
    while busy >= below_pct and time.monotonic() < deadline:
        busy = psutil.cpu_percent(interval=1.0)
    return float(busy)


def run_one(target: str, n: int, args: argparse.Namespace) -> dict[str, Any]:
    busy = wait_quiet(args.quiet_wait) if args.quiet_wait > 0 else None
    print(f"[{target} N={n}] starting stack (machine CPU before: {busy}%)", flush=True)
    began = time.monotonic()
    kind, _, workers = target.partition(":")
    keep = args.keep_logs / f"{target.replace(':', '-')}-{n}" if args.keep_logs else None
    stack = start_stack(kind, int(workers or args.workers), keep_logs=keep, web=args.web)
    _live_stacks.append(stack)
    try:
        print(f"  ready in {time.monotonic() - began:.1f}s at {stack.url}", flush=True)
        with tempfile.TemporaryDirectory(prefix="bench-load-") as tmp:
            raw = run_load(stack, n, args, Path(tmp))
        if stack.backend_url:
            add_origins(stack.backend_url, raw["tasks"], f"[{target} N={n}]")
    finally:
        stack.stop()
        _live_stacks.remove(stack)
    summary = summarize(raw["tasks"], raw["usage"], raw["loadgens"], CADENCE)
    summary["stack_processes_died"] = raw["died"]
    summary["machine_cpu_pct_before"] = busy
    summary["loadgens"] = raw["loadgens"]
    if args.raw:
        summary["raw_tasks"] = raw["tasks"]
    print(
        f"  done: {summary['completed']}/{n} complete, p99 gap {summary['gap_ms']['p99']} ms, "
        f"p99 freshness {summary['freshness_ms']['p99']} ms, "
        f"{summary['cpu_ms_per_update']} CPU ms/update",
        flush=True,
    )
    return summary


def _out_path(args: argparse.Namespace, tasks: list[int]) -> Path:
    if args.out:
        return Path(args.out)
    label = args.label or (
        "quick" if args.quick else "-".join(args.targets) + "-" + "-".join(map(str, tasks))
    )
    date = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d")
    path = RESULTS / f"{date}-{label}.json"
    i = 2
    while path.exists():
        path = RESULTS / f"{date}-{label}-{i}.json"
        i += 1
    return path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--tasks",
        default="100,500,2000",
        help="concurrent tasks; a comma-separated list sweeps (default %(default)s)",
    )
    parser.add_argument(
        "--targets",
        default="progrock,baseline:1,baseline",
        help=f"comma-separated, from {','.join(TARGETS)}; NAME:W overrides "
        "--workers for that target, e.g. baseline:1 (default %(default)s)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="20 tasks, short start window: a smoke run in well under a minute",
    )
    parser.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    parser.add_argument(
        "--web",
        type=int,
        default=1,
        help="ProgRock web processes (progrock up --web; the baseline keeps its one Daphne; "
        "load processes are spread over them; default 1)",
    )
    parser.add_argument(
        "--connect-rate",
        type=float,
        default=200.0,
        help="new sockets per second, all load processes together",
    )
    parser.add_argument(
        "--start-window",
        type=float,
        default=1.0,
        help="seconds over which the N tasks are started (default 1)",
    )
    parser.add_argument(
        "--task-timeout",
        type=float,
        default=120.0,
        help="seconds a task may run before it counts as failed",
    )
    parser.add_argument(
        "--stall-timeout",
        type=float,
        default=20.0,
        help="give up on the remaining tasks once no socket of a load process "
        "has received anything for this long (default 20 s)",
    )
    parser.add_argument(
        "--load-procs",
        type=int,
        default=0,
        help="load-generator processes (default: one per 1,500 sockets)",
    )
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=30.0,
        help="before each run, wait up to this many seconds for the machine's "
        "CPU use to drop below 20%% (0: don't)",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="runs of each target at each N, alternating targets; the table shows "
        "each row's median over them (default 1)",
    )
    parser.add_argument("--label", help="result file label (default: targets and N)")
    parser.add_argument("--out", help="result file path (default benchmarks/results/...)")
    parser.add_argument("--keep-logs", type=Path, help="keep each stack's logs under this folder")
    parser.add_argument("--raw", action="store_true", help="store every update time in the JSON")
    args = parser.parse_args(argv)
    if args.quick:
        args.tasks = "20"
        args.start_window = 0.5
        args.task_timeout = 40.0
        args.quiet_wait = min(args.quiet_wait, 5.0)
    args.targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    for target in args.targets:
        kind, _, workers = target.partition(":")
        if kind not in TARGETS or (workers and not workers.isdigit()):
            parser.error(f"expected targets like {TARGETS[0]} or {TARGETS[1]}:1, got {target!r}")
    try:
        args.task_counts = [int(x) for x in str(args.tasks).split(",") if x.strip()]
    except ValueError:
        parser.error(f"expected --tasks like 100,500,2000, got {args.tasks!r}")
    if not args.task_counts or min(args.task_counts) < 1:
        parser.error(f"expected positive task counts, got {args.tasks!r}")
    if args.repeat < 1:
        parser.error(f"expected --repeat of at least 1, got {args.repeat}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    raise_fd_limit(max(args.task_counts) * 2 + 4096)

    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)  # even where a shell made us ignore it
    out = _out_path(args, args.task_counts)
    report: dict[str, Any] = {
        "meta": {
            "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "machine": machine(),
            "git": git_head(),
            "argv": sys.argv[1:] if argv is None else argv,
            "cadence_s": CADENCE,
            "workers": args.workers,
            "web": args.web,
            "connect_rate": args.connect_rate,
            "start_window_s": args.start_window,
            "repeat": args.repeat,
        },
        "runs": [],
    }
    tables: list[str] = []
    try:
        for n in args.task_counts:
            results: dict[str, list[dict[str, Any]]] = {}
            for round_ in range(1, args.repeat + 1):
                # Targets alternate within each round, so that a machine
                # getting slower or faster weighs on all of them alike.
                for target in args.targets:
                    try:
                        summary = run_one(target, n, args)
                    except (RuntimeError, TimeoutError, OSError) as exc:
                        print(f"[{target} N={n}] FAILED: {exc}", file=sys.stderr, flush=True)
                        report["runs"].append(
                            {"target": target, "tasks": n, "round": round_, "error": str(exc)}
                        )
                        continue
                    results.setdefault(target, []).append(summary)
                    report["runs"].append(
                        {"target": target, "tasks": n, "round": round_, "summary": summary}
                    )
            if results:
                tables.append(table(n, dict(results)))
                print("\n" + tables[-1] + "\n", flush=True)
    except KeyboardInterrupt:
        print("interrupted: stopping every process", file=sys.stderr, flush=True)
        report["meta"]["interrupted"] = True
        return 130
    finally:
        for child in list(_live_children):
            child.stop()
        for stack in list(_live_stacks):
            stack.stop()
        report["tables"] = tables
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=1) + "\n")
        print(f"results written to {out}", flush=True)
    failed = any("error" in run for run in report["runs"])
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
