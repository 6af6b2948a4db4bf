"""The web's liveness cache (pure logic: a fake read and a fake clock)."""

from __future__ import annotations

import logging

import pytest

from progrock.web.liveness import Liveness, unavailable_detail


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Reads:
    """Answers the liveness read with a settable set of live kinds, counting reads."""

    def __init__(self, *live: str) -> None:
        self.live = frozenset(live)
        self.count = 0

    async def __call__(self) -> frozenset[str]:
        self.count += 1
        return self.live


async def test_a_healthy_answer_is_cached_for_fresh_for_seconds() -> None:
    """While worker and delay live, one read serves every start of the next 2 s."""
    reads, clock = Reads("worker", "delay", "web"), Clock()
    liveness = Liveness(reads, fresh_for=2.0, clock=clock)
    for _ in range(100):
        assert await liveness.missing() == ()
    clock.now += 1.9
    assert await liveness.missing() == ()
    assert reads.count == 1
    clock.now += 0.2
    assert await liveness.missing() == ()
    assert reads.count == 2


async def test_a_missing_kind_is_refused_once_confirmed_and_its_return_noticed_at_once() -> None:
    """A delay server found missing is read again every recheck_after; starts are refused
    once it has been missing for confirm_after, and accepted again at its first beat."""
    reads, clock = Reads("worker"), Clock()
    liveness = Liveness(reads, fresh_for=2.0, recheck_after=0.25, confirm_after=3.0, clock=clock)
    assert await liveness.missing() == ()  # suspected, not yet confirmed
    assert await liveness.missing() == ()
    assert reads.count == 1  # within recheck_after: the same reading
    clock.now += 2.9
    assert await liveness.missing() == ()
    clock.now += 0.3
    assert await liveness.missing() == ("delay",)
    assert reads.count == 3
    reads.live = frozenset({"worker", "delay"})
    clock.now += 0.3
    assert await liveness.missing() == ()


async def test_a_moment_without_beats_is_not_an_outage(caplog: pytest.LogCaptureFixture) -> None:
    """Every beat old for a moment (Redis stalled), fresh again within confirm_after: no
    start is refused and nothing is logged; gone again later, the window starts anew."""
    reads, clock = Reads(), Clock()
    liveness = Liveness(reads, recheck_after=0.25, confirm_after=3.0, clock=clock)
    with caplog.at_level(logging.WARNING, logger="progrock.web"):
        for _ in range(5):
            assert await liveness.missing() == ()
            clock.now += 0.5
        reads.live = frozenset({"worker", "delay"})
        assert await liveness.missing() == ()
        clock.now += 3.0
        reads.live = frozenset({"worker"})
        assert await liveness.missing() == ()
    assert caplog.records == []


async def test_an_outage_is_logged_once_when_it_begins_and_once_when_it_ends(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Many refused starts make one warning naming the command; the return makes one more."""
    reads, clock = Reads(), Clock()
    liveness = Liveness(reads, recheck_after=0.25, confirm_after=1.0, clock=clock)
    with caplog.at_level(logging.WARNING, logger="progrock.web"):
        assert await liveness.missing() == ()  # suspected
        for _ in range(10):
            clock.now += 1.0
            assert await liveness.missing() == ("worker", "delay")
        reads.live = frozenset({"worker", "delay"})
        clock.now += 0.3
        assert await liveness.missing() == ()
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "no worker process is running (start `manage.py runprogrock`); "
        "starts are refused with 'unavailable' until one runs",
        "no delay server is running (start `manage.py rundelay`); "
        "starts are refused with 'unavailable' until one runs",
        "a worker process is running again; starts are accepted",
        "a delay server is running again; starts are accepted",
    ]


async def test_settled_waits_out_a_suspicion_instead_of_accepting() -> None:
    """A fresh cache finding no delay server re-reads until confirm_after has passed and
    then answers it missing: the first start of a process is not waved through."""
    reads, clock = Reads("worker"), Clock()

    async def sleep(seconds: float) -> None:
        clock.now += seconds

    liveness = Liveness(reads, recheck_after=0.25, confirm_after=3.0, clock=clock, sleep=sleep)
    assert await liveness.settled() == ("delay",)
    assert reads.count == 13  # one read, then one every 0.25 s for 3 s
    reads.live = frozenset({"worker"})
    fresh = Liveness(reads, recheck_after=0.25, confirm_after=3.0, clock=clock, sleep=sleep)

    async def back_soon(seconds: float) -> None:
        clock.now += seconds
        reads.live = frozenset({"worker", "delay"})  # the beat was only late

    fresh.sleep = back_soon
    assert await fresh.settled() == ()


def test_the_detail_names_each_missing_kind_and_its_command() -> None:
    """The error detail says what is missing and how to start it."""
    assert unavailable_detail(("worker",)) == (
        "no worker process is running (start `manage.py runprogrock`)"
    )
    assert "`manage.py rundelay`" in unavailable_detail(("worker", "delay"))
