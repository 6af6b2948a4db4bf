"""Process tuning: the garbage collector's thresholds come from settings."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest
from django.test import override_settings

from progrock.conf import progrock_settings
from progrock.exceptions import ImproperlyConfigured
from progrock.runtime import tune_gc


@pytest.fixture(autouse=True)
def restore_gc() -> Iterator[None]:
    before = gc.get_threshold()
    yield
    gc.set_threshold(*before)
    gc.unfreeze()


def test_tune_gc_applies_the_thresholds_and_freezes_what_exists() -> None:
    with override_settings(PROGROCK={"GC_THRESHOLDS": (12_345, 20, 30)}):
        assert tune_gc() is True
    assert gc.get_threshold() == (12_345, 20, 30)
    assert gc.get_freeze_count() > 0


def test_none_leaves_the_collector_alone() -> None:
    gc.set_threshold(700, 10, 10)
    with override_settings(PROGROCK={"GC_THRESHOLDS": None}):
        assert tune_gc() is False
    assert gc.get_threshold() == (700, 10, 10)


@pytest.mark.parametrize("bad", [(1, 2), (0, 10, 10), ("1", 2, 3), 5, (True, 2, 3)])
def test_bad_thresholds_are_refused_by_name(bad: object) -> None:
    with (
        override_settings(PROGROCK={"GC_THRESHOLDS": bad}),
        pytest.raises(ImproperlyConfigured, match="GC_THRESHOLDS"),
    ):
        progrock_settings.GC_THRESHOLDS  # noqa: B018
