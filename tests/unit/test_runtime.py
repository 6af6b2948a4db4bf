"""Process tuning: tune_gc applies the thresholds it is given, or the defaults."""

from __future__ import annotations

import gc
import re
from collections.abc import Iterator

import pytest

from progrock.runtime import tune_gc
from progrock.tuning import GC_THRESHOLDS


@pytest.fixture(autouse=True)
def restore_gc() -> Iterator[None]:
    before = gc.get_threshold()
    yield
    gc.set_threshold(*before)
    gc.unfreeze()


def test_tune_gc_applies_the_thresholds_and_freezes_what_exists() -> None:
    """The given thresholds are set, and what exists now is frozen out of the collector."""
    gc.unfreeze()
    tune_gc(thresholds=(12_345, 20, 30))
    assert gc.get_threshold() == (12_345, 20, 30)
    assert gc.get_freeze_count() > 0


def test_tune_gc_defaults_to_the_documented_thresholds() -> None:
    """Without an argument (runprogrock, rundelay) it applies (50_000, 50, 100)."""
    gc.set_threshold(700, 10, 10)
    tune_gc()
    assert gc.get_threshold() == GC_THRESHOLDS == (50_000, 50, 100)


@pytest.mark.parametrize("bad", [(1, 2), (0, 10, 10), ("1", 2, 3), 5, (True, 2, 3), None])
def test_bad_thresholds_are_refused_with_the_value(bad: object) -> None:
    """Anything but three positive integers is refused, quoting it, and changes nothing."""
    gc.set_threshold(700, 10, 10)
    with pytest.raises(ValueError, match=rf"thresholds must be .*got {re.escape(repr(bad))}"):
        tune_gc(thresholds=bad)  # type: ignore[arg-type]
    assert gc.get_threshold() == (700, 10, 10)
