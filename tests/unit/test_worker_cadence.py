"""The poll cadence: when a task's next tick is due (pure arithmetic, no I/O)."""

from __future__ import annotations

from typing import Any, cast

import pytest
from django.test import override_settings

from progrock.worker.engine import Engine


@pytest.fixture
def engine() -> Engine:
    # next_due touches none of the engine's connections.
    return Engine(cast(Any, None), cast(Any, None), cast(Any, None))


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
    engine: Engine, due: float, at: float, expected: float
) -> None:
    with override_settings(PROGROCK={"POLL_INTERVAL": 0.2, "TICK_GRID": 0.02}):
        assert engine.next_due(due, at) == expected


def test_on_grid_rounds_up_to_the_tick_grid(engine: Engine) -> None:
    """Where a rhythm begins (a retry, a re-armed chain), ticks go on the grid to share batches."""
    with override_settings(PROGROCK={"POLL_INTERVAL": 0.2, "TICK_GRID": 0.02}):
        assert engine.on_grid(1003.0) == 1020.0
        assert engine.on_grid(1020.0) == 1020.0
    with override_settings(PROGROCK={"POLL_INTERVAL": 0.2, "TICK_GRID": 0}):
        assert engine.on_grid(1003.0) == 1003.0


def test_the_next_tick_keeps_a_phase_off_the_grid(engine: Engine) -> None:
    """A start batch answered after its grid point keeps its finer phase (see first_due)."""
    with override_settings(PROGROCK={"POLL_INTERVAL": 0.2, "TICK_GRID": 0.02}):
        assert engine.next_due(1005.0, 1006.0) == 1205.0
        assert engine.next_due(1005.0, 1250.0) == 1405.0  # skipped ahead, same phase


def test_without_a_grid_any_interval_keeps_its_phase(engine: Engine) -> None:
    with override_settings(PROGROCK={"POLL_INTERVAL": 0.25, "TICK_GRID": 0}):
        assert engine.next_due(1003.0, 1004.0) == 1253.0


def test_an_interval_off_the_grid_puts_every_tick_back_on_it(engine: Engine) -> None:
    """Else tasks started on different grid points would drift into ever more due times."""
    with override_settings(PROGROCK={"POLL_INTERVAL": 0.25, "TICK_GRID": 0.02}):
        assert engine.next_due(1000.0, 1001.0) == 1260.0
        assert engine.next_due(1260.0, 1261.0) == 1520.0
