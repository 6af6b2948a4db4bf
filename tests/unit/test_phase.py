"""When creates go out, the load meter, and the start grid (pure arithmetic, no I/O)."""

from __future__ import annotations

import pytest
from django.test import override_settings

from progrock.conf import progrock_settings
from progrock.exceptions import ImproperlyConfigured
from progrock.phase import SCALE, CreatePhase, LoadMeter, first_due, grid_ms


def test_the_lead_starts_from_the_initial_guess_and_skips_the_first_batch() -> None:
    phase = CreatePhase(initial_ms=10.0, margin_ms=1.0)
    assert phase.lead_ms == 10.0 * SCALE + 1.0
    phase.record([40.0])  # the first batch also opened the connections
    assert phase.lead_ms == 10.0 * SCALE + 1.0
    phase.record([2.0, 3.0])
    assert phase.lead_ms == 3.0 * SCALE + 1.0  # the guess is gone too
    phase.record([])  # nothing created: nothing learnt
    assert phase.lead_ms == 3.0 * SCALE + 1.0


def test_the_lead_covers_the_slowest_recent_batch_only() -> None:
    phase = CreatePhase(initial_ms=5.0, margin_ms=0.0, history=3)
    phase.record([99.0])
    for slowest in (8.0, 2.0, 1.0):
        phase.record([slowest])
    assert phase.lead_ms == 8.0 * SCALE
    phase.record([1.5])  # 8 ms is now four batches old
    assert phase.lead_ms == 2.0 * SCALE


def test_creates_go_out_the_lead_before_a_grid_point() -> None:
    phase = CreatePhase(initial_ms=4.0, margin_ms=0.0)  # lead 5 ms
    assert phase.lead_ms == 5.0
    # Grid points every 40 ms: from 1003, the first one at least 5 ms away is 1040.
    assert phase.wait_ms(1003.0, 40.0) == pytest.approx(1040.0 - 5.0 - 1003.0)
    # Exactly the lead before a point: at once.
    assert phase.wait_ms(1035.0, 40.0) == 0.0
    # Less than the lead before one: the next point.
    assert phase.wait_ms(1037.0, 40.0) == pytest.approx(1080.0 - 5.0 - 1037.0)


def test_other_work_before_the_creates_moves_the_wait_earlier() -> None:
    phase = CreatePhase(initial_ms=4.0, margin_ms=0.0)  # lead 5 ms
    # 5 ms of preparation, then the creates 5 ms before 1040.
    assert phase.wait_ms(1003.0, 40.0, before_ms=5.0) == pytest.approx(1030.0 - 1003.0)
    assert phase.wait_ms(1031.0, 40.0, before_ms=5.0) == pytest.approx(1070.0 - 1031.0)


@pytest.mark.parametrize(("grid", "before"), [(0.0, 0.0), (-1.0, 0.0), (9.9, 0.0), (40.0, 15.1)])
def test_no_wait_without_a_grid_or_when_creates_are_slow(grid: float, before: float) -> None:
    phase = CreatePhase(initial_ms=4.0, margin_ms=0.0)  # lead 5 ms: over half of 9.9
    assert phase.wait_ms(1003.0, grid, before_ms=before) is None


def test_the_history_must_hold_a_batch() -> None:
    with pytest.raises(ValueError, match="history"):
        CreatePhase(history=0)


def test_the_load_meter_counts_the_last_whole_second_and_this_one() -> None:
    meter = LoadMeter()
    meter.add(10_100.0, 300)
    meter.add(10_900.0, 200)
    assert meter.per_second(10_950.0) == 500
    meter.add(11_050.0, 100)
    assert meter.per_second(11_100.0) == 500  # the last whole second
    meter.add(11_500.0, 450)
    assert meter.per_second(11_600.0) == 550  # this one, once it is busier
    assert meter.per_second(12_000.0) == 550  # now the last whole second
    assert meter.per_second(13_500.0) == 0  # a quiet second in between


@pytest.mark.parametrize(
    ("fine", "light", "rate", "expected"),
    [
        (20.0, 40.0, 100.0, 40.0),  # light load: the coarse grid
        (20.0, 40.0, 500.0, 20.0),  # at the threshold: the fine one
        (20.0, 40.0, 5000.0, 20.0),
        (20.0, 0.0, 100.0, 20.0),  # no light grid
        (20.0, 30.0, 100.0, 20.0),  # not a multiple: never a phase moved backwards
        (0.0, 40.0, 100.0, 0.0),  # no grid at all
    ],
)
def test_the_start_grid_follows_the_load(
    fine: float, light: float, rate: float, expected: float
) -> None:
    assert grid_ms(fine, light, rate, 500.0) == expected


@pytest.mark.parametrize(
    ("answered", "expected"),
    [
        (1036.0, 1240.0),  # answered 4 ms before a point of the 40 ms grid
        (1040.0, 1240.0),  # right on it
        (1021.0, 1240.0),  # 19 ms before: still within half a step
        (1041.0, 1260.0),  # just after it: the next point of the 20 ms grid, not 1280
        (1059.0, 1260.0),
    ],
)
def test_a_first_tick_is_one_interval_after_the_answer_on_a_grid(
    answered: float, expected: float
) -> None:
    assert first_due(answered, 200.0, 40.0, 20.0) == expected


def test_a_first_tick_without_grids_is_exact() -> None:
    assert first_due(1003.5, 200.0, 0.0, 0.0) == 1203.5
    assert first_due(1041.0, 200.0, 0.0, 20.0) == 1260.0


@pytest.mark.parametrize("light", [0.03, 0.01, -0.04, "0.04", True])
def test_a_light_grid_must_be_a_multiple_of_the_grid(light: object) -> None:
    with (
        override_settings(PROGROCK={"TICK_GRID": 0.02, "TICK_GRID_LIGHT": light}),
        pytest.raises(ImproperlyConfigured, match="TICK_GRID_LIGHT"),
    ):
        progrock_settings.TICK_GRID_LIGHT  # noqa: B018


@pytest.mark.parametrize(("fine", "light"), [(0.02, 0.06), (0.02, 0), (0, 0.04), (0.05, 0.05)])
def test_good_light_grids_are_accepted(fine: float, light: float) -> None:
    with override_settings(PROGROCK={"TICK_GRID": fine, "TICK_GRID_LIGHT": light}):
        assert light == progrock_settings.TICK_GRID_LIGHT
