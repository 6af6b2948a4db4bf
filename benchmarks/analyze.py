#!/usr/bin/env python
"""Read a ``run.py --raw`` result: where the long gaps fall, and what lateness is made of.

    .venv/bin/python benchmarks/analyze.py gaps RESULT.json [--over 250] [--bucket 0.25]
    .venv/bin/python benchmarks/analyze.py lateness RESULT.json

``gaps`` counts, per time bucket after the run's first update, the gaps longer
than ``--over`` ms among all gaps ending in that bucket: a p99 set by a burst
(the start second, the end second) shows as a few crowded buckets, a steady
problem as a spread. ``lateness`` splits each task's lateness (as
``_stats.py`` defines it, leaving out the first update, whose lateness is 0
by definition) into the task's *offset* (its median: a constant the task
carries all its life, from its phase) and *jitter* (the rest), and lists the
offsets in the order the tasks were started. The cadence is the run's
(``meta.cadence_s``); the step is the 2017 demo's 3 %, as in ``_stats.py``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

try:
    from _stats import percentile  # run as a script, beside _stats.py
except ImportError:  # imported as benchmarks.analyze (the tests)
    from benchmarks._stats import percentile


def advances(task: dict[str, Any], step: float = 3.0) -> list[tuple[float, int]]:
    """``(arrival, k)`` of each update that advanced the task's progress (as _stats counts)."""
    out: list[tuple[float, int]] = []
    best = -1.0
    last = len(task["times"]) - 1
    for i, (t, p) in enumerate(zip(task["times"], task["progress"], strict=True)):
        if p > best or (i == last and task["complete"]):
            out.append((t, math.ceil(p / step - 1e-9)))
            best = p
    return out


def gaps_by_time(
    tasks: Sequence[dict[str, Any]], over_s: float, bucket_s: float
) -> tuple[dict[int, tuple[int, int]], list[float]]:
    """Per bucket index (from the first update): (gaps over ``over_s``, all gaps); every gap."""
    series = [advances(task) for task in tasks]
    firsts = [s[0][0] for s in series if s]
    if not firsts:
        return {}, []
    start = min(firsts)
    buckets: dict[int, tuple[int, int]] = {}
    gaps: list[float] = []
    for s in series:
        for (a, _), (b, _) in itertools.pairwise(s):
            gap = b - a
            gaps.append(gap)
            index = int((b - start) / bucket_s)
            big, total = buckets.get(index, (0, 0))
            buckets[index] = (big + (gap > over_s), total + 1)
    return buckets, gaps


def lateness_split(
    tasks: Sequence[dict[str, Any]], cadence_s: float = 0.2
) -> list[tuple[float, float, list[float]]]:
    """Per task with two updates or more, in the order they were started (the
    click, ``t_start``, else the first update): (first update, offset, jitters)."""
    rows: list[tuple[float, float, float, list[float]]] = []
    for task in tasks:
        s = advances(task)
        if len(s) < 2:
            continue
        t0, k0 = s[0]
        late = [t - (t0 + (k - k0) * cadence_s) for t, k in s[1:]]
        offset = statistics.median(late)
        started = task.get("t_start")
        order = t0 if started is None else float(started)
        rows.append((order, t0, offset, [x - offset for x in late]))
    rows.sort(key=lambda row: row[0])
    return [(t0, offset, jitter) for _, t0, offset, jitter in rows]


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.1f}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=("gaps", "lateness"))
    parser.add_argument("result", type=Path, help="a run.py --raw JSON result")
    parser.add_argument("--over", type=float, default=250.0, help="ms (gaps; default 250)")
    parser.add_argument("--bucket", type=float, default=0.25, help="s (gaps; default 0.25)")
    args = parser.parse_args(argv)
    data = json.loads(args.result.read_text())
    for run in data["runs"]:
        name = f"{run['target']} N={run['tasks']}"
        if "round" in run:  # run.py --repeat
            name += f" round {run['round']}"
        if "summary" not in run:
            print(f"{name}: failed ({run.get('error')})", file=sys.stderr)
            continue
        tasks = run["summary"].get("raw_tasks")
        if not tasks:
            print(f"{name}: no raw data (run.py --raw)", file=sys.stderr)
            continue
        print(name)
        if args.what == "gaps":
            buckets, gaps = gaps_by_time(tasks, args.over / 1000, args.bucket)
            over = sum(big for big, _ in buckets.values())
            print(
                f"  {len(gaps)} gaps, {over} over {args.over:g} ms "
                f"(1 % of the gaps is {len(gaps) // 100}); p99 {_ms(percentile(gaps, 99))} ms"
            )
            for index in sorted(buckets):
                big, total = buckets[index]
                if big:
                    print(f"  {index * args.bucket:6.2f} s  {big:5d} of {total:5d}")
        else:
            rows = lateness_split(tasks, float(data.get("meta", {}).get("cadence_s", 0.2)))
            offsets = [offset for _, offset, _ in rows]
            jitter = [x for _, _, js in rows for x in js]
            print(
                "  offset p10 / p50 / p90 / p99: "
                + " / ".join(_ms(percentile(offsets, q)) for q in (10, 50, 90, 99))
                + " ms; jitter p1 / p99: "
                + " / ".join(_ms(percentile(jitter, q)) for q in (1, 99))
                + " ms"
            )
            start = rows[0][0] if rows else 0.0
            for t0, offset, _ in rows:
                print(f"  first update {(t0 - start) * 1000:8.1f} ms in: offset {_ms(offset)} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
