"""When to ask the backend to create tasks: just before a point of the tick grid.

A task's first poll is due one ``POLL_INTERVAL`` after the backend answered
its create call, rounded up to the tick grid (``TICK_GRID``) so that tasks
share due times and are polled together. The rounding delays every poll of
the task by the same 0 to ``TICK_GRID`` seconds against the backend's own
steps: a task created 1 ms after a grid point is polled 19 ms after each of
its steps, for its whole life.

:class:`CreatePhase` removes that offset by choosing when the creates go
out: a batch's create calls are sent ``lead`` milliseconds before a grid
point, ``lead`` being a little more than the slowest create of the recent
batches, so the answers arrive just before the grid point and the first poll
(one interval later, on the grid) comes right after the backend's first
step. A start waits less than one grid step for this; a create slower than
the lead is polled on the next grid point, as before.

This module is pure (no I/O, no clock): the caller passes the time and does
the waiting.
"""

from __future__ import annotations

import math
from collections import deque

#: Lead before the first create's latency is known, in ms.
INITIAL_LEAD_MS = 10.0
#: The slowest recent create is scaled by this (a new slowest is likely
#: early on: with n batches seen, the next one is the slowest with odds 1/(n+1)).
SCALE = 1.25
#: Then this is added, in ms.
MARGIN_MS = 1.0
#: How many recent batches' slowest creates the lead covers.
HISTORY = 64


class CreatePhase:
    """The lead of create calls over the tick grid, learnt from recent batches."""

    def __init__(
        self,
        *,
        initial_ms: float = INITIAL_LEAD_MS,
        margin_ms: float = MARGIN_MS,
        history: int = HISTORY,
    ) -> None:
        if history < 1:
            raise ValueError(f"history must be at least 1, got {history!r}")
        self.margin_ms = margin_ms
        self._warm = False  # a batch has been recorded
        self._measured = False  # a batch after the first has been recorded
        self._slowest: deque[float] = deque([initial_ms], maxlen=history)

    @property
    def lead_ms(self) -> float:
        """How long before a grid point the creates go out."""
        return max(self._slowest) * SCALE + self.margin_ms

    def record(self, latencies_ms: list[float] | tuple[float, ...]) -> None:
        """Note how long one batch's create calls took (issue to answer).

        The first batch is left out: its creates also paid for opening the
        connections. Until a second batch is measured, the lead is the
        initial guess.
        """
        if not latencies_ms:
            return
        if not self._warm:
            self._warm = True
            return
        if not self._measured:
            self._measured = True
            self._slowest.clear()
        self._slowest.append(max(0.0, max(latencies_ms)))

    def wait_ms(self, now_ms: float, grid_ms: float, before_ms: float = 0.0) -> float | None:
        """How long to wait from ``now_ms`` (0 to ``grid_ms``), or None: do not wait.

        After the wait, ``before_ms`` of other work then the creates can go
        out ``lead_ms`` before the first grid point far enough away. None
        without a grid (``grid_ms <= 0``), or when the two take over half a
        grid step: creates that slow (a loaded backend) land too unevenly for
        the wait to pay.
        """
        lead = self.lead_ms + before_ms
        if grid_ms <= 0 or lead > grid_ms / 2:
            return None
        point = math.ceil((now_ms + lead) / grid_ms) * grid_ms
        return max(0.0, point - lead - now_ms)


class LoadMeter:
    """How many polls a second this worker handles, or is about to.

    Each start counts as the ticks its task will bring (one per poll
    interval), so a burst of starts reads as load before its polls begin.
    Counted in whole-second buckets; the rate is the larger of the last
    complete second and the current one.
    """

    def __init__(self) -> None:
        self._second = 0
        self._current = 0.0
        self._previous = 0.0

    def add(self, now_ms: float, ticks: float) -> None:
        self._roll(now_ms)
        self._current += ticks

    def per_second(self, now_ms: float) -> float:
        self._roll(now_ms)
        return max(self._current, self._previous)

    def _roll(self, now_ms: float) -> None:
        second = int(now_ms // 1000)
        if second != self._second:
            self._previous = self._current if second == self._second + 1 else 0.0
            self._current = 0.0
            self._second = second


def grid_ms(fine_ms: float, light_ms: float, ticks_per_second: float, light_below: float) -> float:
    """The tick grid: ``light_ms`` under light load, else ``fine_ms``.

    Under light load a poll batch holds few ticks, and its fixed cost (a delay
    pass, a channel hop, a backend request, a publish) dominates: a coarser
    grid makes fewer, larger batches. Under heavy load batches are full on
    the fine grid already. ``light_ms`` is used only when it is a multiple of
    ``fine_ms``, so a task on the light grid is on the fine one too and a
    change of load never moves a task's phase backwards.
    """
    if fine_ms <= 0 or light_ms <= fine_ms or ticks_per_second >= light_below:
        return fine_ms
    ratio = light_ms / fine_ms
    if abs(ratio - round(ratio)) > 1e-9:
        return fine_ms
    return light_ms


def first_due(answered_ms: float, interval_ms: float, grid_ms: float, fine_ms: float) -> float:
    """A new task's first tick: one interval after its create was answered, on a grid.

    Rounded up to ``grid_ms`` (the start grid) when that adds at most half
    of it, as it does for a create sent in time by :class:`CreatePhase`;
    otherwise (a create answered just after its grid point) to the finer
    ``fine_ms``, so that a late answer costs at most one fine step.
    """
    due = answered_ms + interval_ms
    if grid_ms > 0:
        up = math.ceil(due / grid_ms) * grid_ms
        if up - due <= grid_ms / 2 or fine_ms <= 0:
            return up
    if fine_ms > 0:
        return math.ceil(due / fine_ms) * fine_ms
    return due
