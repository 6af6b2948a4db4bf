"""Duration settings: finite numbers of seconds, and the retired timing keys are refused."""

from __future__ import annotations

import pytest
from django.test import override_settings

from progrock.conf import progrock_settings
from progrock.exceptions import ImproperlyConfigured

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
SECONDS = ("DELAY_BATCH_WINDOW", "TICK_GRID")


@pytest.mark.parametrize("bad", [-0.001, "0.001", True, None, float("nan"), float("inf")])
@pytest.mark.parametrize("name", POSITIVE_SECONDS + SECONDS)
def test_a_duration_setting_must_be_a_finite_number_of_seconds(name: str, bad: object) -> None:
    """A bad duration is refused with an error naming the key and what it must be."""
    expected = "a positive number of seconds" if name in POSITIVE_SECONDS else ">= 0"
    with (
        override_settings(PROGROCK={name: bad}),
        pytest.raises(ImproperlyConfigured, match=rf"PROGROCK\['{name}'\] must be .*{expected}"),
    ):
        getattr(progrock_settings, name)


@pytest.mark.parametrize("name", ["TICK_LEAD", "TICK_ALIGN", "TICK_GRID_LIGHT", "LIGHT_LOAD"])
def test_the_retired_light_load_timing_keys_are_unknown(name: str) -> None:
    """A project still setting a removed timing knob is told which key is unknown."""
    with (
        override_settings(PROGROCK={name: 0.005}),
        pytest.raises(ImproperlyConfigured, match=rf"unknown keys \['{name}'\]"),
    ):
        progrock_settings.POLL_INTERVAL  # noqa: B018
