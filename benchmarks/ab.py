#!/usr/bin/env python
"""Two versions of ProgRock side by side: alternate runs of one benchmark.

Checks ``--old`` out (a git revision) into a temporary ``git worktree`` and
runs the benchmark against it and against ``--new`` (default: this checkout as
it is, uncommitted changes included) in turn, ``--rounds`` times: old, new,
old, new, ... so that a machine getting slower or faster during the session
weighs on both sides alike. Each side runs with ``PYTHONPATH=<side>/src``, so
every process of its stack imports that side's ``progrock``; the benchmark
scripts themselves are this checkout's. Prints one line per run and the
median of each side.

    .venv/bin/python benchmarks/ab.py --old cbfe690 --tasks 2000 --rounds 3
    .venv/bin/python benchmarks/ab.py --old cbfe690 --lifecycle 1000 --rounds 3
    .venv/bin/python benchmarks/ab.py --old cbfe690 --lifecycle 2000 --starts-only
    .venv/bin/python benchmarks/ab.py --old cbfe690 --tasks 100 --start-window 10

Run it on a quiet machine: runs of the same code at 2,000 tasks spread by
100 ms or more in p99 gap, more than most changes move it.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def run_side(src: Path, args: argparse.Namespace, out: Path) -> dict[str, Any]:
    """One benchmark run against the ``progrock`` under ``src``; its key figures."""
    env = {**os.environ, "PYTHONPATH": str(src)}
    if args.lifecycle:
        command = [sys.executable, str(HERE / "lifecycle_cost.py"), str(args.lifecycle)]
        if args.starts_only:
            command.append("--starts-only")
        done = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
        stack = re.search(r"stack\s+([\d.]+) (ms/task|ms/start)", done.stdout)
        burst = re.search(
            r"burst handled in ([\d.]+)s, (\d+)/(\d+) (complete|started)", done.stdout
        )
        if stack is None or burst is None:
            raise RuntimeError(f"unexpected lifecycle_cost output:\n{done.stdout}{done.stderr}")
        return {
            f"stack {stack.group(2)}": float(stack.group(1)),
            "burst s": float(burst.group(1)),
            burst.group(4): f"{burst.group(2)}/{burst.group(3)}",
        }
    command = [
        sys.executable,
        str(HERE / "run.py"),
        "--tasks",
        str(args.tasks),
        "--targets",
        "progrock",
        "--out",
        str(out),
    ]
    if args.start_window is not None:
        command += ["--start-window", str(args.start_window)]
    subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    summary = json.loads(out.read_text())["runs"][0]["summary"]
    steady = summary.get("steady") or {}
    return {
        "p99 gap ms": summary["gap_ms"]["p99"],
        "steady p99 gap ms": (steady.get("gap_ms") or {}).get("p99"),
        "p50 freshness ms": summary["freshness_ms"]["p50"],
        "p99 freshness ms": summary["freshness_ms"]["p99"],
        "p99 lateness ms": summary["lateness_ms"]["p99"],
        "p50 first update ms": summary["first_update_ms"]["p50"],
        "CPU ms/update": summary["cpu_ms_per_update"],
        "complete %": summary["completion_pct"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old", required=True, help="git revision of the old side")
    parser.add_argument(
        "--new", default=None, help="git revision of the new side (default: this checkout)"
    )
    what = parser.add_mutually_exclusive_group()
    what.add_argument("--tasks", type=int, default=2000, help="run.py with N tasks (default)")
    what.add_argument("--lifecycle", type=int, metavar="N", help="lifecycle_cost.py N instead")
    parser.add_argument(
        "--starts-only",
        action="store_true",
        help="with --lifecycle: lifecycle_cost.py --starts-only",
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--start-window",
        type=float,
        help="with --tasks: run.py --start-window (seconds over which the tasks start)",
    )
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    if args.starts_only and not args.lifecycle:
        parser.error("--starts-only goes with --lifecycle N")
    if args.start_window is not None and (args.lifecycle or args.start_window <= 0):
        parser.error("--start-window goes with --tasks, and must be positive")
    results: dict[str, list[dict[str, Any]]] = {"old": [], "new": []}
    with tempfile.TemporaryDirectory(prefix="progrock-ab-") as tmp:
        trees: dict[str, Path] = {}
        for side, rev in (("old", args.old), ("new", args.new)):
            if rev is None:
                trees[side] = ROOT
                continue
            tree = Path(tmp) / side
            subprocess.run(
                ["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tree), rev],
                check=True,
                capture_output=True,
            )
            trees[side] = tree
        try:
            for n in range(1, args.rounds + 1):
                for side in ("old", "new"):
                    figures = run_side(trees[side] / "src", args, Path(tmp) / f"{side}-{n}.json")
                    results[side].append(figures)
                    shown = "  ".join(f"{k} {v}" for k, v in figures.items())
                    print(f"round {n} {side:3s}  {shown}", flush=True)
        finally:
            for tree in trees.values():
                if tree != ROOT:
                    subprocess.run(
                        ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)],
                        check=False,
                        capture_output=True,
                    )
    for side in ("old", "new"):
        medians = {
            k: statistics.median(r[k] for r in results[side])
            for k, v in results[side][0].items()
            if isinstance(v, (int, float))
        }
        print(f"median {side:3s}  " + "  ".join(f"{k} {v:g}" for k, v in medians.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
