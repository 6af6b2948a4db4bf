"""benchmarks/analyze.py: long gaps by time, lateness split into offset and jitter."""

from __future__ import annotations

import json
from typing import Any

import pytest
from benchmarks import analyze


def task(times: list[float], step: float = 3.0, complete: bool = True) -> dict[str, Any]:
    return {
        "times": times,
        "progress": [min(100.0, step * i) for i in range(len(times))],
        "complete": complete,
    }


def test_gaps_are_counted_in_the_bucket_they_end_in() -> None:
    tasks = [task([0.0, 0.2, 0.4, 0.9, 1.1]), task([0.1, 0.3, 0.8, 1.0])]
    buckets, gaps = analyze.gaps_by_time(tasks, over_s=0.25, bucket_s=0.5)
    assert sorted(round(g, 3) for g in gaps) == [0.2, 0.2, 0.2, 0.2, 0.2, 0.5, 0.5]
    # Buckets of 0.5 s from the first update (0.0). First task: gaps ending at
    # 0.2 and 0.4 (bucket 0), 0.9 (long, bucket 1), 1.1 (bucket 2). Second:
    # 0.3 (bucket 0), 0.8 (long, bucket 1), 1.0 (bucket 2).
    assert buckets == {0: (0, 3), 1: (2, 2), 2: (0, 2)}


def test_a_repeated_progress_is_not_an_update() -> None:
    t = {"times": [0.0, 0.1, 0.2], "progress": [0.0, 0.0, 3.0], "complete": False}
    assert analyze.advances(t) == [(0.0, 0), (0.2, 1)]


def test_lateness_splits_into_a_constant_offset_and_jitter() -> None:
    # Every update 12 ms behind the clock the first one started, but one 3 ms more.
    late = {**task([0.0, 0.212, 0.412, 0.615, 0.812]), "t_start": -0.1}
    on_time = {**task([0.05, 0.25, 0.45]), "t_start": -0.2}  # clicked first
    rows = analyze.lateness_split([late, on_time])
    assert [round(t0, 3) for t0, _, _ in rows] == [0.05, 0.0]  # in the order of the clicks
    rows = rows[::-1]
    assert rows[0][1] == pytest.approx(0.012)
    assert sorted(round(j, 4) for j in rows[0][2]) == [0.0, 0.0, 0.0, 0.003]
    assert rows[1][1] == pytest.approx(0.0, abs=1e-9)


def test_the_command_prints_both_reports(tmp_path: Any, capsys: pytest.CaptureFixture[str]) -> None:
    result = tmp_path / "r.json"
    raw = [task([0.0, 0.2, 0.7]), task([0.0, 0.2, 0.4])]
    result.write_text(
        json.dumps({"runs": [{"target": "progrock", "tasks": 2, "summary": {"raw_tasks": raw}}]})
    )
    assert analyze.main(["gaps", str(result)]) == 0
    out = capsys.readouterr().out
    # The long gap (0.2 -> 0.7 s) ends in the bucket from 0.50 s, alone there.
    assert "4 gaps, 1 over 250 ms" in out and "0.50 s      1 of     1" in out
    assert analyze.main(["lateness", str(result)]) == 0
    assert "offset p10 / p50 / p90 / p99" in capsys.readouterr().out
