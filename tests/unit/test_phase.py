"""When creates go out, the load meter, and the start grid (pure arithmetic, no I/O)."""

from __future__ import annotations

import math
from typing import Any, cast

import pytest
from django.test import override_settings

from progrock.conf import progrock_settings
from progrock.delay.store import now_ms
from progrock.exceptions import ImproperlyConfigured
from progrock.worker.engine import Engine
from progrock.worker.phase import (
    SCALE,
    SEED_EXTRA_MS,
    SEED_SCALE,
    Lead,
    LoadMeter,
    ceil_to,
    first_due,
    grid_ms,
    is_multiple,
)


def test_the_lead_starts_from_the_initial_guess_and_the_first_batch_stands_in() -> None:
    lead = Lead(initial_ms=10.0, margin_ms=1.0)
    assert lead.lead_ms(0.0) == 10.0 * SCALE + 1.0
    lead.record(0.0, [4.0])  # the first batch (it also opened connections)
    assert lead.lead_ms(0.0) == 4.0 * SCALE + 1.0
    lead.record(1.0, [2.0, 3.0])
    assert lead.lead_ms(1.0) == 3.0 * SCALE + 1.0  # the first one is gone
    lead.record(2.0, [])  # nothing created: nothing learnt
    assert lead.lead_ms(2.0) == 3.0 * SCALE + 1.0
    lead.record(3.0, [1.0])
    assert lead.lead_ms(3.0) == 3.0 * SCALE + 1.0  # the slowest since the first


def test_a_slow_first_batch_is_not_kept() -> None:
    lead = Lead(initial_ms=10.0, margin_ms=0.0)
    lead.record(0.0, [40.0])  # opening the connections took long
    assert lead.lead_ms(0.0) == 40.0 * SCALE
    lead.record(1.0, [2.0])
    assert lead.lead_ms(1.0) == 2.0 * SCALE


def test_a_seed_stands_in_until_a_batch_is_timed() -> None:
    lead = Lead(initial_ms=10.0, margin_ms=1.0)
    lead.seed(0.5)  # a warm-up round trip: lighter than a batch
    assert lead.lead_ms(0.0) == 0.5 * SEED_SCALE + SEED_EXTRA_MS + 1.0
    lead.record(1.0, [3.0])
    assert lead.lead_ms(1.0) == 3.0 * SCALE + 1.0
    lead.seed(0.1)  # too late: a batch was timed
    assert lead.lead_ms(1.0) == 3.0 * SCALE + 1.0


def test_the_lead_covers_the_slowest_recent_batch_only() -> None:
    lead = Lead(initial_ms=5.0, margin_ms=0.0, history=3)
    lead.record(0.0, [99.0])
    for at, slowest in ((1.0, 8.0), (2.0, 2.0), (3.0, 1.0)):
        lead.record(at, [slowest])
    assert lead.lead_ms(3.0) == 8.0 * SCALE
    lead.record(4.0, [1.5])  # 8 ms is now four batches old
    assert lead.lead_ms(4.0) == 2.0 * SCALE


def test_a_slow_batch_is_forgotten_after_a_while() -> None:
    lead = Lead(initial_ms=5.0, margin_ms=0.0, max_age_ms=60_000.0)
    lead.record(0.0, [1.0])
    lead.record(1_000.0, [30.0])  # a reconnect
    lead.record(2_000.0, [2.0])
    assert lead.lead_ms(2_000.0) == 30.0 * SCALE
    assert lead.lead_ms(61_500.0) == 2.0 * SCALE
    # The latest batch stays, however old.
    assert lead.lead_ms(10_000_000.0) == 2.0 * SCALE


def test_creates_go_out_the_lead_before_a_grid_point() -> None:
    lead = Lead(initial_ms=4.0, margin_ms=0.0)  # lead 5 ms
    assert lead.lead_ms(0.0) == 5.0
    # Grid points every 40 ms: from 1003, the first one at least 5 ms away is 1040.
    assert lead.wait_ms(1003.0, 40.0) == pytest.approx(1040.0 - 5.0 - 1003.0)
    # Exactly the lead before a point: at once.
    assert lead.wait_ms(1035.0, 40.0) == 0.0
    # Less than the lead before one: the next point, unless that is too far.
    assert lead.wait_ms(1037.0, 40.0) == pytest.approx(1080.0 - 5.0 - 1037.0)
    assert lead.wait_ms(1037.0, 40.0, at_most_ms=20.0) is None


def test_other_work_before_the_creates_moves_the_wait_earlier() -> None:
    lead = Lead(initial_ms=4.0, margin_ms=0.0)  # lead 5 ms
    # 5 ms of preparation, then the creates 5 ms before 1040.
    assert lead.wait_ms(1003.0, 40.0, before_ms=5.0) == pytest.approx(1030.0 - 1003.0)
    assert lead.wait_ms(1031.0, 40.0, before_ms=5.0) == pytest.approx(1070.0 - 1031.0)


@pytest.mark.parametrize(("grid", "before"), [(0.0, 0.0), (-1.0, 0.0), (9.9, 0.0), (40.0, 15.1)])
def test_no_wait_without_a_grid_or_when_creates_are_slow(grid: float, before: float) -> None:
    lead = Lead(initial_ms=4.0, margin_ms=0.0)  # lead 5 ms: over half of 9.9
    assert lead.wait_ms(1003.0, grid, before_ms=before) is None


def test_the_history_must_hold_a_batch() -> None:
    with pytest.raises(ValueError, match="history"):
        Lead(history=0)


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
    ("fine", "light", "interval", "is_light", "expected"),
    [
        (20.0, 100.0, 200.0, True, 100.0),  # light load: the coarse grid
        (20.0, 100.0, 200.0, False, 20.0),  # heavy load: the fine one
        (20.0, 0.0, 200.0, True, 20.0),  # no light grid
        (20.0, 30.0, 200.0, True, 20.0),  # not a multiple: a phase could move backwards
        (20.0, 60.0, 200.0, True, 20.0),  # does not divide the interval: ticks would leave it
        (0.0, 100.0, 200.0, True, 0.0),  # no grid at all
    ],
)
def test_the_start_grid_follows_the_load(
    fine: float, light: float, interval: float, is_light: bool, expected: float
) -> None:
    assert grid_ms(fine, light, interval, is_light) == expected


@pytest.mark.parametrize(
    ("answered", "slack", "expected"),
    [
        (1096.0, 5.0, 1300.0),  # answered 4 ms before a point of the 100 ms grid
        (1100.0, 5.0, 1300.0),  # right on it
        (1101.0, 5.0, 1305.0),  # aimed, answered just after it: the 5 ms grid, not 1320
        (1150.0, 5.0, 1350.0),
        (1152.5, 5.0, 1355.0),
        (1098.0, 0.0, 1300.0),  # not aimed (preparation overran): 5 ms grid (here the point)
        (1096.0, 0.0, 1300.0),
        (1061.0, 0.0, 1265.0),  # not aimed, well before it: the 5 ms grid too
    ],
)
def test_a_first_tick_is_one_interval_after_the_answer_on_a_grid(
    answered: float, slack: float, expected: float
) -> None:
    due = first_due(answered, 200.0, 100.0, 20.0, slack)
    assert due == expected
    assert due >= answered + 200.0  # never before the backend's first step


@pytest.mark.parametrize(("answered", "expected"), [(1061.0, 1280.0), (1100.0, 1300.0)])
def test_under_heavy_load_a_first_tick_goes_on_the_fine_grid(
    answered: float, expected: float
) -> None:
    """No light grid (start_grid_ms gave the fine one), no aim: shared fine-grid phases."""
    assert first_due(answered, 200.0, 20.0, 20.0, 0.0) == expected


def test_ceil_to_is_the_first_multiple_at_or_after_the_value() -> None:
    assert ceil_to(1003.0, 20.0) == 1020.0
    assert ceil_to(1020.0, 20.0) == 1020.0
    for k in range(583_928_000_000, 583_928_002_000):  # a step floats cannot hold exactly
        value = math.nextafter(k * 3.075, math.inf)  # a hair past a multiple
        assert value <= ceil_to(value, 3.075) < value + 3.075 + 1e-3


def test_a_missed_batch_is_never_polled_before_the_backend_s_step() -> None:
    """Whatever the grids' floating-point steps (here 12.3 / 4 ms), never before the step."""
    for i in range(2000):
        answered = 1_795_577_704_000.0 + i * 0.7379
        due = first_due(answered, 200.0, 49.2, 12.3, 0.0)
        assert due >= answered + 200.0
        assert due - (answered + 200.0) <= 12.3 / 4 + 1e-3


@pytest.mark.parametrize("answered", [1061.0, 1096.0, 1096.25, 1100.0, 1100.5, 1152.5])
def test_with_an_align_step_a_light_first_tick_follows_the_answer(answered: float) -> None:
    """TICK_ALIGN: on the light grid, up to the align step after the answer's
    interval, whether or not the create was aimed (no slack before a point)."""
    for slack in (0.0, 5.0):
        due = first_due(answered, 200.0, 100.0, 20.0, slack, 1.0)
        assert answered + 200.0 <= due < answered + 201.0
        assert is_multiple(due, 1.0)


def test_an_inexact_align_step_never_polls_before_the_backend_s_step() -> None:
    """An align step floats cannot hold (0.3 ms), at epoch-millisecond scale."""
    for i in range(2000):
        answered = 1_795_577_704_000.0 + i * 0.7379
        due = first_due(answered, 200.0, 100.0, 20.0, 5.0, 0.3)
        assert answered + 200.0 <= due <= answered + 200.0 + 0.3 + 1e-3


def test_an_align_step_leaves_the_heavy_load_grid_alone() -> None:
    """Under heavy load (the fine grid) batches share fine-grid phases as before."""
    assert first_due(1061.0, 200.0, 20.0, 20.0, 0.0, 1.0) == 1280.0


def test_a_first_tick_without_grids_is_exact() -> None:
    assert first_due(1003.5, 200.0, 0.0, 0.0, 0.0) == 1203.5
    assert first_due(1041.0, 200.0, 0.0, 20.0, 0.0) == 1260.0


@pytest.mark.parametrize(
    ("value", "of", "expected"),
    [(0.1, 0.02, True), (100.0, 20.0, True), (0.03, 0.02, False), (0.1, 0.0, False)],
)
def test_multiples(value: float, of: float, expected: bool) -> None:
    assert is_multiple(value, of) is expected


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


@pytest.mark.parametrize("bad", [-1, "500", True, None])
def test_light_load_must_be_a_rate(bad: object) -> None:
    with (
        override_settings(PROGROCK={"LIGHT_LOAD": bad}),
        pytest.raises(ImproperlyConfigured, match="LIGHT_LOAD"),
    ):
        progrock_settings.LIGHT_LOAD  # noqa: B018


POSITIVE_SECONDS = (
    "POLL_INTERVAL",
    "RETRY_BASE",
    "RETRY_MAX",
    "FAILURE_BUDGET",
    "DB_PROGRESS_INTERVAL",
    "SWEEP_INTERVAL",
    "STALL_AFTER",
    "START_TIMEOUT",
)
SECONDS = ("DELAY_BATCH_WINDOW", "TICK_GRID", "TICK_GRID_LIGHT", "TICK_LEAD", "TICK_ALIGN")


@pytest.mark.parametrize("bad", [-0.001, "0.001", True, None, float("nan"), float("inf")])
@pytest.mark.parametrize("name", POSITIVE_SECONDS + SECONDS)
def test_a_duration_setting_must_be_a_finite_number_of_seconds(name: str, bad: object) -> None:
    expected = "a positive number of seconds" if name in POSITIVE_SECONDS else ">= 0"
    with (
        override_settings(PROGROCK={name: bad}),
        pytest.raises(ImproperlyConfigured, match=rf"PROGROCK\['{name}'\] must be .*{expected}"),
    ):
        getattr(progrock_settings, name)


@pytest.mark.parametrize(
    ("conf", "name", "match"),
    [
        ({"POLL_INTERVAL": 0.2, "TICK_LEAD": 0.2}, "TICK_LEAD", "less than POLL_INTERVAL"),
        ({"TICK_GRID": 0.02, "TICK_ALIGN": 0.03}, "TICK_ALIGN", "at most TICK_GRID"),
    ],
)
def test_a_duration_setting_must_keep_within_its_bound(
    conf: dict[str, float], name: str, match: str
) -> None:
    with (
        override_settings(PROGROCK=conf),
        pytest.raises(ImproperlyConfigured, match=f"{name}.*{match}"),
    ):
        getattr(progrock_settings, name)


@pytest.mark.parametrize(
    ("conf", "name"),
    [
        ({"POLL_INTERVAL": 0.2, "TICK_LEAD": 0}, "TICK_LEAD"),
        ({"POLL_INTERVAL": 0.2, "TICK_LEAD": 0.005}, "TICK_LEAD"),
        ({"POLL_INTERVAL": 0.2, "TICK_LEAD": 0.199}, "TICK_LEAD"),
        ({"TICK_GRID": 0.02, "TICK_ALIGN": 0}, "TICK_ALIGN"),
        ({"TICK_GRID": 0.02, "TICK_ALIGN": 0.001}, "TICK_ALIGN"),
        ({"TICK_GRID": 0.02, "TICK_ALIGN": 0.02}, "TICK_ALIGN"),
        ({"TICK_GRID": 0, "TICK_ALIGN": 0.05}, "TICK_ALIGN"),  # unused without a grid
    ],
)
def test_durations_within_their_bounds_are_accepted(conf: dict[str, float], name: str) -> None:
    with override_settings(PROGROCK=conf):
        assert getattr(progrock_settings, name) == conf[name]


# -- the engine's use of it (no connections touched) ------------------------


@pytest.fixture
def engine() -> Engine:
    return Engine(cast(Any, None), cast(Any, None), cast(Any, None))


GRIDS = {"POLL_INTERVAL": 0.2, "TICK_GRID": 0.02, "TICK_GRID_LIGHT": 0.1, "LIGHT_LOAD": 500}


def test_a_burst_of_starts_makes_the_load_heavy_before_its_polls(engine: Engine) -> None:
    with override_settings(PROGROCK=GRIDS):
        at = now_ms()
        assert engine.light_load(at) and engine.start_grid_ms(at) == 100.0
        engine.load.add(at, 495.0)  # 99 tasks' ticks
        assert engine.light_load(at)
        engine.note_starts(100)  # 100 tasks: 500 ticks a second
        at = now_ms()
        assert not engine.light_load(at) and engine.start_grid_ms(at) == 20.0


def test_light_load_zero_turns_it_off(engine: Engine) -> None:
    with override_settings(PROGROCK={**GRIDS, "LIGHT_LOAD": 0}):
        at = now_ms()
        assert not engine.light_load(at)
        assert engine.start_grid_ms(at) == 20.0
        assert engine.gather_s(0.02) == 0.02
        assert engine.create_wait_ms(at, 20.0) is None


def test_starts_gather_until_a_grid_point_under_light_load_only(engine: Engine) -> None:
    with override_settings(PROGROCK=GRIDS):
        before = now_ms()
        gather = engine.gather_s(0.02)
        # Less than one step of the 100 ms grid, ending where the preparation
        # and the creates end just before a point of it.
        assert 0.0 <= gather < 0.1
        lead = engine.create_lead.lead_ms(before) + engine.prep_lead.lead_ms(before)
        sent = before + gather * 1000
        assert math.ceil((sent + lead) / 100.0) * 100.0 - (sent + lead) < 5.0
        engine.note_starts(1000)
        assert engine.gather_s(0.02) == 0.02
        assert engine.create_wait_ms(now_ms(), 20.0) is None


def test_a_first_tick_is_kept_if_the_start_was_slow(engine: Engine) -> None:
    with override_settings(PROGROCK=GRIDS):
        assert engine.first_tick(1300.0, 1150.0) == 1300.0  # in time
        assert engine.first_tick(1300.0, 1450.0) == 1300.0  # past: delivered at once
        assert engine.first_tick(1300.0, 1550.0) == 1500.0  # over an interval past: skip
