"""When poll ticks are due (progrock.worker.ticks: pure arithmetic, no settings, no I/O)."""

from __future__ import annotations

import math

import pytest

from progrock.worker.ticks import ceil_to, first_due, is_multiple, next_due, on_grid


@pytest.mark.parametrize(
    ("due", "at", "expected"),
    [
        (1000.0, 1005.0, 1200.0),  # on time: one interval after the last due time
        (1000.0, 1150.0, 1200.0),  # late, but before the next one is due: no drift
        (1000.0, 1210.0, 1400.0),  # more than an interval late: skip, keep the phase
        (1000.0, 1650.0, 1800.0),  # several intervals late: still the same phase
    ],
)
def test_the_next_tick_keeps_the_cadence_and_its_phase(
    due: float, at: float, expected: float
) -> None:
    """One interval after the last due time, skipping whole intervals when late."""
    assert next_due(due, at, 200.0, 20.0) == expected


def test_on_grid_rounds_up_to_the_tick_grid() -> None:
    """Where a rhythm begins (a retry, a re-armed chain), ticks go on the grid to share batches."""
    assert on_grid(1003.0, 20.0) == 1020.0
    assert on_grid(1020.0, 20.0) == 1020.0
    assert on_grid(1003.0, 0.0) == 1003.0


def test_the_next_tick_keeps_a_phase_off_the_grid() -> None:
    """A tick off the grid (a chain rebuilt from another phase) keeps its phase."""
    assert next_due(1005.0, 1006.0, 200.0, 20.0) == 1205.0
    assert next_due(1005.0, 1250.0, 200.0, 20.0) == 1405.0  # skipped ahead, same phase


def test_without_a_grid_any_interval_keeps_its_phase() -> None:
    """With no grid, an interval that is no multiple of anything is kept exactly."""
    assert next_due(1003.0, 1004.0, 250.0, 0.0) == 1253.0


def test_an_interval_off_the_grid_puts_every_tick_back_on_it() -> None:
    """Else tasks started on different grid points would drift into ever more due times."""
    assert next_due(1000.0, 1001.0, 250.0, 20.0) == 1260.0
    assert next_due(1260.0, 1261.0, 250.0, 20.0) == 1520.0


@pytest.mark.parametrize(
    ("answered", "expected"),
    [(1061.0, 1280.0), (1100.0, 1300.0), (1100.5, 1320.0), (1119.999, 1320.0)],
)
def test_a_first_tick_is_one_interval_after_the_answer_on_the_grid(
    answered: float, expected: float
) -> None:
    """A new task's first poll: one interval after the backend answered its create, rounded up."""
    due = first_due(answered, answered + 5.0, 200.0, 20.0)
    assert due == expected
    assert due >= answered + 200.0  # never before the backend's first step


def test_a_first_tick_without_a_grid_is_exact() -> None:
    """No grid: exactly one interval after the answer."""
    assert first_due(1003.5, 1010.0, 200.0, 0.0) == 1203.5


def test_a_first_tick_is_kept_if_the_start_was_slow() -> None:
    """Past but less than an interval: delivered at once; over an interval past: skip ahead."""
    assert first_due(1100.0, 1150.0, 200.0, 20.0) == 1300.0  # in time
    assert first_due(1100.0, 1450.0, 200.0, 20.0) == 1300.0  # past: delivered at once
    assert first_due(1100.0, 1550.0, 200.0, 20.0) == 1500.0  # over an interval past: skip


def test_a_slow_first_tick_off_the_grid_goes_back_on_it() -> None:
    """A skipped-ahead first tick with an interval off the grid is rounded like any other."""
    assert first_due(1000.0, 1600.0, 250.0, 20.0) == 1520.0  # 1260 + 250 = 1510, up to 1520


def test_a_first_tick_is_never_before_the_backend_s_step() -> None:
    """Whatever the grid's floating-point step (here 12.3 ms), at epoch-millisecond scale."""
    for i in range(2000):
        answered = 1_795_577_704_000.0 + i * 0.7379
        due = first_due(answered, answered, 200.0, 12.3)
        assert answered + 200.0 <= due <= answered + 200.0 + 12.3 + 1e-3


def test_ceil_to_is_the_first_multiple_at_or_after_the_value() -> None:
    """Never before the value, even where floating point rounds the quotient down."""
    assert ceil_to(1003.0, 20.0) == 1020.0
    assert ceil_to(1020.0, 20.0) == 1020.0
    for k in range(583_928_000_000, 583_928_002_000):  # a step floats cannot hold exactly
        value = math.nextafter(k * 3.075, math.inf)  # a hair past a multiple
        assert value <= ceil_to(value, 3.075) < value + 3.075 + 1e-3


@pytest.mark.parametrize(
    ("value", "of", "expected"),
    [(0.1, 0.02, True), (100.0, 20.0, True), (0.03, 0.02, False), (0.1, 0.0, False)],
)
def test_multiples(value: float, of: float, expected: bool) -> None:
    """is_multiple tolerates float error and refuses a zero step."""
    assert is_multiple(value, of) is expected
