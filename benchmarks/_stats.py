"""Turn what the simulated browsers saw into the numbers of the report.

Only *advances* count as updates: a message whose progress is not higher than
the task's highest so far is a duplicate (the baseline delivers some: two
``runworker`` processes on one channels_redis channel re-queue each other's
in-flight messages, django/channels_redis#163) and is counted apart.

Every task is a rock task: step ``k`` (``k`` times 3 %) happens at its backend
``k * cadence`` (200 ms) after the task began there. An update reports step
``k = ceil(progress / step)``. For every update of a task:

* **gap**: its arrival time minus the previous update's (``k >= 1``);
* **freshness** (updates with ``k >= 1``): its arrival time minus the time its
  step happened at the backend, ``origin + k * cadence`` — how old the
  progress the browser shows is when it arrives. ``origin`` is when the task
  began at its backend: the reference backend's ``created_at`` where the run
  knows it (``task["origin"]``, on the load generator's clock; ProgRock), else
  the first update's arrival, less the steps it reports (the 2017 design,
  whose worker is its own backend: its simulated task begins when the worker
  sends progress 0, one delivery before that arrival, so this understates its
  freshness by that one delivery);
* **lateness**: its arrival time minus ``t0 + (k - k0) * cadence``, ``t0``
  being the arrival of the task's first update and ``k0`` its step: how far
  behind a 200 ms clock started at the first update. It differs from
  freshness by the first update's own delay, so it cannot see a constant
  offset between the backend's steps and the polls. (``k`` comes from the
  progress, not from the message count, so a skipped update does not make
  later ones look early.)

The *steady phase* runs from the moment every task has had its first update
to the moment the first task completes: all tasks are running then. Metrics
are given over the whole run and over the steady phase.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q``-th percentile (0-100) by linear interpolation; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100.0
    low = math.floor(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value * 1000.0, 1)


def _dist_ms(values: Sequence[float]) -> dict[str, float | None]:
    return {
        "p50": _ms(percentile(values, 50)),
        "p90": _ms(percentile(values, 90)),
        "p99": _ms(percentile(values, 99)),
        "max": _ms(max(values) if values else None),
        "n": len(values),
    }


def freshness(
    times: Sequence[float], steps: Sequence[int], cadence: float, origin: float | None = None
) -> list[tuple[float, float]]:
    """``(arrival, freshness)`` of each update that reports a step (``k >= 1``), in seconds.

    ``times`` and ``steps`` are a task's advances (arrival, step ``k``); step
    ``k`` happened at ``origin + k * cadence``. Without an ``origin`` the first
    advance stands for it (its arrival, less ``steps[0] * cadence``).
    """
    if not times:
        return []
    if origin is None:
        origin = times[0] - steps[0] * cadence
    return [(t, t - (origin + k * cadence)) for t, k in zip(times, steps, strict=True) if k >= 1]


def summarize(
    tasks: list[dict[str, Any]],
    usage: dict[str, Any],
    loadgens: list[dict[str, float]],
    cadence: float,
    step: float = 3.0,
) -> dict[str, Any]:
    """Compute every metric of one (target, N) run."""
    n = len(tasks)
    gaps: list[tuple[float, float]] = []  # (arrival, gap)
    late: list[tuple[float, float]] = []  # (arrival, lateness)
    fresh: list[tuple[float, float]] = []  # (arrival, freshness)
    origins = {"backend": 0, "first_update": 0}
    firsts: list[float] = []
    lasts_done: list[float] = []
    durations: list[float] = []
    first_update: list[float] = []
    connect: list[float] = []
    errors: dict[str, int] = {}
    updates = 0
    messages = 0
    repeated_seq = 0  # ProgRock only: the same seq delivered twice on a socket
    advances: list[list[float]] = []
    for task in tasks:
        messages += len(task["times"])
        seqs = [q for q in task.get("seqs", []) if q is not None]
        repeated_seq += len(seqs) - len(set(seqs))
        times: list[float] = []
        steps: list[int] = []
        best = -1.0
        last = len(task["times"]) - 1
        for i, (t, p) in enumerate(zip(task["times"], task["progress"], strict=True)):
            # A completion counts even at the progress already reached (ProgRock
            # may send progress 100, then complete).
            if p > best or (i == last and task["complete"]):
                times.append(t)
                steps.append(math.ceil(p / step - 1e-9))
                best = p
        advances.append(times)
        t_start = task["t_start"]
        updates += len(times)
        if task["connect_s"] is not None:
            connect.append(task["connect_s"])
        if task["error"]:
            key = task["error"].split("(")[0][:80]
            errors[key] = errors.get(key, 0) + 1
        if not times:
            continue
        t0 = times[0]
        firsts.append(t0)
        if t_start is not None:
            first_update.append(t0 - t_start)
        origin = task.get("origin")
        origins["first_update" if origin is None else "backend"] += 1
        fresh.extend(freshness(times, steps, cadence, origin))
        for i, t in enumerate(times):
            late.append((t, t - (t0 + (steps[i] - steps[0]) * cadence)))
            if i:
                gaps.append((t, t - times[i - 1]))
        if task["complete"]:
            lasts_done.append(times[-1])
            durations.append(times[-1] - t0)
    completed = sum(1 for task in tasks if task["complete"])

    all_times = [t for times in advances for t in times]
    span = (max(all_times) - min(all_times)) if len(all_times) > 1 else 0.0
    steady: dict[str, Any] | None = None
    if firsts and lasts_done and min(lasts_done) - max(firsts) >= 1.0:
        lo, hi = max(firsts), min(lasts_done)
        in_gaps = [g for t, g in gaps if lo <= t <= hi]
        in_late = [x for t, x in late if lo <= t <= hi]
        in_fresh = [x for t, x in fresh if lo <= t <= hi]
        in_updates = sum(1 for t in all_times if lo <= t <= hi)
        steady = {
            "window_s": round(hi - lo, 3),
            "gap_ms": _dist_ms(in_gaps),
            "lateness_ms": _dist_ms(in_late),
            "freshness_ms": _dist_ms(in_fresh),
            "updates_per_s": round(in_updates / (hi - lo), 1),
        }

    roles: dict[str, dict[str, float]] = usage["roles"]
    stack_cpu = sum(role["cpu_s"] for role in roles.values())
    backend_cpu = sum(r["cpu_s"] for name, r in roles.items() if name.endswith("backend"))
    load_util = [lg["task_cpu_s"] / lg["task_wall_s"] for lg in loadgens if lg.get("task_wall_s")]
    machine = usage.get("machine", {})
    load_cpu = sum(lg.get("task_cpu_s", 0.0) for lg in loadgens)
    other_cpu = machine.get("busy_cpu_s", 0.0) - stack_cpu - load_cpu
    return {
        "tasks": n,
        "completed": completed,
        "completion_pct": round(100.0 * completed / n, 2) if n else None,
        "errors": errors,
        "updates": updates,
        "messages": messages,
        "duplicate_pct": round(100.0 * (messages - updates) / messages, 2) if messages else None,
        "repeated_seq": repeated_seq,
        "ideal_updates_per_s": round(n / cadence, 1),
        "updates_per_s": round(updates / span, 1) if span else None,
        "gap_ms": _dist_ms([g for _, g in gaps]),
        "lateness_ms": _dist_ms([x for _, x in late]),
        "freshness_ms": _dist_ms([x for _, x in fresh]),
        # Tasks whose freshness is counted from the backend's created time, and
        # from their first update (see the module docstring).
        "freshness_origins": origins,
        "steady": steady,
        "task_duration_ms": _dist_ms(durations),
        "first_update_ms": _dist_ms(first_update),
        "connect_ms": _dist_ms(connect),
        "stack_cpu_s": round(stack_cpu, 3),
        "stack_cpu_s_without_backend": round(stack_cpu - backend_cpu, 3),
        "cpu_ms_per_update": round(1000.0 * stack_cpu / updates, 3) if updates else None,
        "cpu_ms_per_update_without_backend": (
            round(1000.0 * (stack_cpu - backend_cpu) / updates, 3) if updates else None
        ),
        "stack_peak_rss_mb": round(sum(role["peak_rss_mb"] for role in roles.values()), 1),
        "loadgen_max_cpu_util": round(max(load_util), 3) if load_util else None,
        "loadgen_cpu_s": round(load_cpu, 3),
        # CPU the rest of the machine used meanwhile (other people's processes,
        # the harness): large values mean the numbers are not clean.
        "other_cpu_s": round(other_cpu, 3),
        "other_cpu_util": (
            round(other_cpu / machine["wall_s"], 2) if machine.get("wall_s") else None
        ),
        "usage": usage,
    }


# (label, getter)
ROWS: list[tuple[str, Any]] = [
    ("completion %", lambda s: s["completion_pct"]),
    ("p50 gap ms", lambda s: s["gap_ms"]["p50"]),
    ("p99 gap ms", lambda s: s["gap_ms"]["p99"]),
    ("max gap ms", lambda s: s["gap_ms"]["max"]),
    ("p50 freshness ms", lambda s: s["freshness_ms"]["p50"]),
    ("p99 freshness ms", lambda s: s["freshness_ms"]["p99"]),
    ("p99 lateness ms", lambda s: s["lateness_ms"]["p99"]),
    ("steady p50 gap ms", lambda s: s["steady"] and s["steady"]["gap_ms"]["p50"]),
    ("steady p99 gap ms", lambda s: s["steady"] and s["steady"]["gap_ms"]["p99"]),
    ("steady p99 freshness ms", lambda s: s["steady"] and s["steady"]["freshness_ms"]["p99"]),
    ("steady p99 lateness ms", lambda s: s["steady"] and s["steady"]["lateness_ms"]["p99"]),
    ("no-advance messages %", lambda s: s["duplicate_pct"]),
    ("repeated seq (protocol)", lambda s: s.get("repeated_seq")),
    ("updates/s (ideal)", lambda s: s["ideal_updates_per_s"]),
    ("updates/s", lambda s: s["updates_per_s"]),
    ("steady updates/s", lambda s: s["steady"] and s["steady"]["updates_per_s"]),
    ("p99 task duration ms", lambda s: s["task_duration_ms"]["p99"]),
    ("p99 first update ms", lambda s: s["first_update_ms"]["p99"]),
    ("stack CPU s", lambda s: s["stack_cpu_s"]),
    ("CPU ms / update", lambda s: s["cpu_ms_per_update"]),
    ("CPU ms / update (no backend)", lambda s: s["cpu_ms_per_update_without_backend"]),
    ("stack peak RSS MB", lambda s: s["stack_peak_rss_mb"]),
    ("loadgen CPU util (max)", lambda s: s["loadgen_max_cpu_util"]),
    ("other processes' CPU util", lambda s: s["other_cpu_util"]),
]


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.1f}" if abs(value) >= 10 else f"{value:.3g}"
    return str(value)


def median(values: Sequence[float]) -> float | None:
    """The median of ``values`` (the mean of the middle two for an even count); None when empty."""
    return percentile(values, 50.0)


def table(n: int, results: dict[str, dict[str, Any] | list[dict[str, Any]]]) -> str:
    """A Markdown table of one N: a column per target, then progrock / each baseline.

    A target may bring several runs (``run.py --repeat``): each row then shows
    the median of that row's values over the runs that have one, and each
    ratio is the ratio of the medians. A target with fewer runs than the
    others (some failed) shows its count.
    """
    targets = list(results)
    runs = {t: r if isinstance(r, list) else [r] for t, r in results.items()}
    counts = {len(r) for r in runs.values()}
    repeats = max(counts) if counts else 1
    bases = [t for t in targets if t.startswith("baseline")] if "progrock" in results else []
    first = "N=" + str(n) + (f" (median of {repeats} runs)" if repeats > 1 else "")
    # Failed runs leave a target fewer: say so in its column.
    names = [t if len(counts) == 1 else f"{t} ({len(runs[t])} runs)" for t in targets]
    header = [first, *names, *(f"progrock / {b}" for b in bases)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for label, get in ROWS:
        values: dict[str, Any] = {}
        for target in targets:
            found: list[Any] = []
            for summary in runs[target]:
                try:
                    found.append(get(summary))
                except (KeyError, TypeError):
                    found.append(None)
            numbers = [v for v in found if isinstance(v, (int, float)) and not isinstance(v, bool)]
            if len(runs[target]) == 1:
                values[target] = found[0]
            else:
                values[target] = median(numbers) if numbers else None
        cells = [label, *(_fmt(values[t]) for t in targets)]
        for base in bases:
            a, b = values["progrock"], values[base]
            ok = isinstance(a, (int, float)) and isinstance(b, (int, float)) and b
            cells.append(f"{a / b:.2f}x" if ok else "-")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
