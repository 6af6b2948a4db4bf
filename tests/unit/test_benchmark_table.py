"""benchmarks/_stats.py: the report's table, of one run or of the medians of several."""

from __future__ import annotations

from typing import Any

from benchmarks._stats import median, table


def summary(cpu: float, lateness: float, gap: float = 203.0) -> dict[str, Any]:
    return {
        "completion_pct": 100.0,
        "gap_ms": {"p50": 200.0, "p99": gap, "max": gap + 1},
        "lateness_ms": {"p99": lateness},
        "cpu_ms_per_update": cpu,
    }


def row(text: str, label: str) -> list[str]:
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if cells[0] == label:
            return cells[1:]
    raise AssertionError(f"no row {label!r} in:\n{text}")


def test_median() -> None:
    assert median([3.0, 1.0, 2.0]) == 2.0
    assert median([4.0, 1.0, 2.0, 3.0]) == 2.5
    assert median([]) is None


def test_one_run_per_target_is_shown_as_it_is() -> None:
    text = table(100, {"progrock": summary(0.3, 4.0), "baseline:1": summary(3.0, 400.0)})
    assert text.splitlines()[0].startswith("| N=100 | progrock | baseline:1 |")
    assert row(text, "CPU ms / update") == ["0.3", "3", "0.10x"]
    assert row(text, "p99 lateness ms") == ["4", "400.0", "0.01x"]


def test_several_runs_show_each_rows_median_and_the_ratio_of_medians() -> None:
    progrock = [summary(0.5, 6.0), summary(0.3, 4.0), summary(0.4, 3.0)]
    baseline = [summary(2.0, 300.0), summary(3.0, 500.0), summary(2.5, 100.0)]
    text = table(50, {"progrock": progrock, "baseline:1": baseline})
    assert "N=50 (median of 3 runs)" in text.splitlines()[0]
    # Medians per row, not the values of one run: 0.4 and 2.5 come from
    # different runs than 4.0 and 300.
    assert row(text, "CPU ms / update") == ["0.4", "2.5", "0.16x"]
    assert row(text, "p99 lateness ms") == ["4", "300.0", "0.01x"]
    # A row no run has (missing keys) stays empty rather than failing.
    assert row(text, "steady p99 gap ms") == ["-", "-", "-"]


def test_a_target_with_fewer_runs_says_so_and_an_even_count_takes_the_middle_two() -> None:
    progrock = [summary(0.2, 4.0), summary(0.4, 6.0)]  # median of two: 0.3, 5
    baseline = [summary(3.0, 300.0)]  # its other run failed
    text = table(100, {"progrock": progrock, "baseline:1": baseline})
    header = text.splitlines()[0]
    assert "progrock (2 runs)" in header and "baseline:1 (1 runs)" in header
    assert row(text, "CPU ms / update") == ["0.3", "3", "0.10x"]
    assert row(text, "p99 lateness ms") == ["5", "300.0", "0.02x"]
