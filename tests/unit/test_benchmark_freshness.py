"""benchmarks/_stats.py and _backend.py: freshness, counted from the backend's steps."""

from __future__ import annotations

from typing import Any

import pytest
from benchmarks._backend import attach_origins
from benchmarks._stats import freshness, summarize, table

CADENCE = 0.2
USAGE: dict[str, Any] = {"roles": {}, "machine": {}}


def rock(times: list[float], origin: float | None = None, **extra: Any) -> dict[str, Any]:
    """A task's record as the load generator writes it: update i reports 3 * i %."""
    task: dict[str, Any] = {
        "times": times,
        "progress": [min(100.0, 3.0 * i) for i in range(len(times))],
        "seqs": [],
        "t_start": None,
        "connect_s": 0.01,
        "complete": False,
        "error": None,
        **extra,
    }
    if origin is not None:
        task["origin"] = origin
    return task


def values(pairs: list[tuple[float, float]]) -> list[float]:
    return [round(x * 1000, 3) for _, x in pairs]


def test_freshness_is_arrival_minus_the_backend_step() -> None:
    """Step k happened at origin + k * 200 ms; the progress-0 message is no step."""
    created = 10.0
    times = [10.002, 10.215, 10.415, 10.630]
    assert values(freshness(times, [0, 1, 2, 3], CADENCE, created)) == [15.0, 15.0, 30.0]


def test_a_skipped_step_is_measured_at_the_step_reported() -> None:
    """An update that jumps from step 1 to step 3 is as fresh as step 3 is old."""
    pairs = freshness([10.0, 10.21, 10.61], [0, 1, 3], CADENCE, 10.0)
    assert values(pairs) == [10.0, 10.0]
    assert [t for t, _ in pairs] == [10.21, 10.61]  # each with its arrival


def test_without_an_origin_the_first_update_stands_for_it() -> None:
    """No backend time (the 2017 design): the first update's arrival, less its steps."""
    # The first update reports step 1 at 0.25: the task began at 0.05.
    assert values(freshness([0.25, 0.46, 0.68], [1, 2, 3], CADENCE)) == [0.0, 10.0, 30.0]
    assert freshness([], [], CADENCE) == []


def test_freshness_sees_the_offset_lateness_cannot() -> None:
    """Polls 15 ms after every step, the first message 2 ms after the create: freshness
    says 15 ms, lateness (anchored at the first message) only 13."""
    created = 5.0
    times = [created + 0.002, *(created + k * CADENCE + 0.015 for k in range(1, 6))]
    summary = summarize([rock(times, origin=created)], USAGE, [], CADENCE)
    assert summary["freshness_ms"]["p50"] == pytest.approx(15.0)
    assert summary["freshness_ms"]["n"] == 5
    assert summary["lateness_ms"]["max"] == pytest.approx(13.0)
    assert summary["freshness_origins"] == {"backend": 1, "first_update": 0}


def test_tasks_without_a_backend_time_are_counted_apart() -> None:
    """A run mixing both origins says how many tasks had which."""
    known = rock([1.001, 1.21], origin=1.0)
    unknown = rock([2.0, 2.2, 2.41])
    summary = summarize([known, unknown], USAGE, [], CADENCE)
    assert summary["freshness_origins"] == {"backend": 1, "first_update": 1}
    # known: 1.21 - (1.0 + 0.2); unknown, from 2.0: 2.2 - 2.2 and 2.41 - 2.4.
    assert summary["freshness_ms"]["n"] == 3
    assert summary["freshness_ms"]["p50"] == pytest.approx(10.0)
    assert summary["freshness_ms"]["max"] == pytest.approx(10.0)


def test_the_table_shows_freshness_rows() -> None:
    """run.py's table has p50 and p99 freshness rows, with the ratio to a baseline."""
    times = [0.001, *(k * CADENCE + 0.02 for k in range(1, 4))]
    progrock = summarize([rock(times, origin=0.0)], USAGE, [], CADENCE)
    baseline = summarize([rock([0.0, 0.24, 0.48, 0.72])], USAGE, [], CADENCE)
    text = table(10, {"progrock": progrock, "baseline:1": baseline})
    rows = {line.split("|")[1].strip(): line for line in text.splitlines()}
    assert [c.strip() for c in rows["p50 freshness ms"].split("|")[2:5]] == [
        "20.0",
        "80.0",
        "0.25x",
    ]
    assert "p99 freshness ms" in rows


def test_origins_move_from_unix_time_to_the_monotonic_clock() -> None:
    """attach_origins subtracts the wall-minus-monotonic offset, only where the id is known."""
    tasks = [{"task_id": "a"}, {"task_id": "b"}, {"task_id": None}]
    assert attach_origins(tasks, {"a": 1_700_000_010.5}, offset=1_700_000_000.0) == 1
    assert tasks[0]["origin"] == pytest.approx(10.5)
    assert "origin" not in tasks[1] and "origin" not in tasks[2]
