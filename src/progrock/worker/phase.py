"""When to ask the backend to create tasks: just before a point of the tick grid.

A task's first poll is due one ``POLL_INTERVAL`` after the backend answered
its create call, rounded up to the tick grid so that tasks share due times
and are polled together (later polls keep that phase). The rounding delays
every poll of the task by the same 0 to one grid step against the backend's
own steps: a task created 1 ms after a point of a 20 ms grid is polled 19
ms after each of its steps, for its whole life.

Under light load a worker removes that offset by choosing when the creates
go out (:class:`Lead`, :func:`first_due`): it lets starts gather until a
batch can be prepared and its create calls sent ``lead`` milliseconds before
a grid point, ``lead`` being a little more than the slowest create of recent
batches. The answers then arrive just before the grid point.

Aiming is not exact: the lead carries a margin, so answers come up to a few
milliseconds before the point. With ``TICK_ALIGN`` (1 ms by default) a
light-load batch's first tick is one interval after its own answer, rounded
up to that step: the polls follow the backend's steps within a millisecond,
and a batch gets a phase of its own unless another's rounds to the same
point (more, smaller poll batches; the aiming still crowds them near the
grid's points, so batches a whole number of intervals apart often share).

With ``TICK_ALIGN`` 0 the first poll goes on the grid point (one interval
later), a few milliseconds after the backend's first step, in the point's
shared batch. A create answered after its grid point (or sent without
aiming, its batch's preparation having overrun) then goes up to the next
quarter of a fine grid step (:data:`MISS_STEPS`) instead: its batch's tasks
are polled at most 5 ms (by default) after the backend's steps rather than
up to a whole fine step (20 ms) later, for their whole life.

Light load also gets a coarser grid (:func:`grid_ms`, ``TICK_GRID_LIGHT``):
starts gather into fewer, larger batches, and their polls crowd near fewer
points, where each poll batch's fixed cost dominates. Both
cost start latency: a start waits for the next point of that grid (usually
less than one step, 100 ms by default; at most one and a half, when its
batch's preparation overruns) before its create goes out.

This module is pure (no I/O, no clock): the caller passes the time and does
the waiting.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence

#: Lead before anything is measured, in ms.
INITIAL_LEAD_MS = 10.0
#: The slowest recent time is scaled by this (a new slowest is likely early
#: on: with n batches seen, the next one is the slowest with odds 1/(n+1)).
SCALE = 1.25
#: Then this is added, in ms.
MARGIN_MS = 1.0
#: A warm-up round trip (:meth:`Lead.seed`) stands in for the lead until a
#: batch is timed, scaled by this, plus this many ms: it carries none of a
#: batch's work.
SEED_SCALE = 2.0
SEED_EXTRA_MS = 2.0
#: Without an align step (``TICK_ALIGN`` 0), a create answered after its grid
#: point, or sent without aiming, goes up to the next point of a grid this many
#: times finer than the fine tick grid.
MISS_STEPS = 4
#: How many recent batches the lead covers...
HISTORY = 64
#: ...if they are no older than this, in ms (one slow batch, a reconnect, is
#: forgotten after a minute however few batches follow it).
MAX_AGE_MS = 60_000.0


def ceil_to(value: float, step: float) -> float:
    """The first multiple of ``step`` (> 0) at or after ``value``: never before it, even
    where floating point rounds the quotient down by a hair."""
    up = math.ceil(value / step) * step
    return up if up >= value else up + step


def is_multiple(value: float, of: float) -> bool:
    """Whether ``value`` is a whole multiple of ``of`` (> 0), to a microsecond's tolerance."""
    if of <= 0:
        return False
    ratio = value / of
    return abs(ratio - round(ratio)) * of < 1e-6


class Lead:
    """How long something takes (a batch's creates, a batch's preparation), learnt.

    :attr:`lead_ms` is a little more than the slowest of the recent batches.
    Before the first batch, it comes from the initial guess, or from a
    :meth:`seed`. The first batch stands in only until the second: it also
    paid for opening connections.
    """

    def __init__(
        self,
        *,
        initial_ms: float = INITIAL_LEAD_MS,
        margin_ms: float = MARGIN_MS,
        history: int = HISTORY,
        max_age_ms: float = MAX_AGE_MS,
    ) -> None:
        if history < 1:
            raise ValueError(f"history must be at least 1, got {history!r}")
        self.initial_ms = initial_ms
        self.margin_ms = margin_ms
        self.max_age_ms = max_age_ms
        self._seen = 0  # batches recorded
        self._seed: float | None = None  # a warm-up round trip, until a batch is timed
        self._first: float | None = None  # the first batch, until a second is timed
        self._slowest: deque[tuple[float, float]] = deque(maxlen=history)  # (at_ms, ms)

    def lead_ms(self, now_ms: float) -> float:
        """A little more than the slowest recent batch (before any: the seed, else the guess)."""
        while len(self._slowest) > 1 and now_ms - self._slowest[0][0] > self.max_age_ms:
            self._slowest.popleft()
        if self._slowest:
            slowest = max(ms for _, ms in self._slowest)
        elif self._first is not None:
            slowest = self._first
        elif self._seed is not None:
            return self._seed * SEED_SCALE + SEED_EXTRA_MS + self.margin_ms
        else:
            slowest = self.initial_ms
        return slowest * SCALE + self.margin_ms

    def seed(self, took_ms: float) -> None:
        """Stand in for the initial guess with a lighter call's time (a warm-up
        round trip, at :data:`SEED_SCALE` plus :data:`SEED_EXTRA_MS`); ignored
        once a batch was timed."""
        if self._seen == 0:
            self._seed = max(0.0, took_ms)

    def record(self, now_ms: float, times_ms: Sequence[float]) -> None:
        """Note how long one batch's calls took (the first only until the second)."""
        if not times_ms:
            return
        self._seen += 1
        took = max(0.0, max(times_ms))
        if self._seen == 1:
            self._first = took
            return
        self._first = None
        self._slowest.append((now_ms, took))

    def wait_ms(
        self, now_ms: float, grid_ms: float, before_ms: float = 0.0, at_most_ms: float | None = None
    ) -> float | None:
        """How long to wait from ``now_ms``, or None: do not wait.

        After the wait, ``before_ms`` of other work, then what this lead
        measures ends just before the first grid point far enough away. None
        without a grid (``grid_ms <= 0``), when the lead and ``before_ms``
        take over half a grid step (calls that slow, a loaded backend, land
        too unevenly for the wait to pay), or when the wait would be longer
        than ``at_most_ms``.
        """
        lead = self.lead_ms(now_ms) + before_ms
        if grid_ms <= 0 or lead > grid_ms / 2:
            return None
        point = ceil_to(now_ms + lead, grid_ms)
        wait = max(0.0, point - lead - now_ms)
        if at_most_ms is not None and wait > at_most_ms:
            return None
        return wait


class LoadMeter:
    """How many polls a second this worker handles, or is about to.

    Each start counts as the ticks its task will bring in a second (one per
    poll interval), so a burst of starts reads as load before its polls
    begin. Counted in whole-second buckets; the rate is the larger of the last
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


def grid_ms(fine_ms: float, light_ms: float, interval_ms: float, light: bool) -> float:
    """The grid new tasks' first ticks go on: ``light_ms`` under light load, else ``fine_ms``.

    Under light load a poll batch holds few ticks, and its fixed cost (a delay
    pass, a channel hop, a backend request, a publish) dominates: a coarser
    grid makes fewer, larger batches. Under heavy load batches are full on
    the fine grid already. ``light_ms`` is used only when it is a multiple of
    ``fine_ms`` (so a task on the light grid is on the fine one too) and
    divides the poll interval (so its later ticks stay on the light grid).
    """
    if (
        not light
        or fine_ms <= 0
        or light_ms <= fine_ms
        or not is_multiple(light_ms, fine_ms)
        or not is_multiple(interval_ms, light_ms)
    ):
        return fine_ms
    return light_ms


def first_due(
    answered_ms: float,
    interval_ms: float,
    grid_ms: float,
    fine_ms: float,
    slack_ms: float,
    align_ms: float = 0.0,
) -> float:
    """A new task's first tick: one interval after its create was answered, on a grid.

    On the light grid (``grid_ms`` coarser than ``fine_ms``) with an
    ``align_ms`` (``TICK_ALIGN``), rounded up to that step, wherever the
    answer fell: the batch's polls come at most ``align_ms`` after the
    backend's steps, in a phase of their own unless another batch's rounds
    to the same point. (Creates are still aimed at the light grid, so these
    phases crowd near its points, and batches started a whole number of
    intervals apart often share them.)

    Otherwise rounded up to ``grid_ms`` when that adds at most ``slack_ms`` (a create
    sent in time, answered at most the lead before its grid point).
    Otherwise, on the light grid (``grid_ms`` coarser than ``fine_ms``: a
    create answered after its point, or sent without aiming because its
    batch's preparation overran), up to a grid :data:`MISS_STEPS` times finer
    than ``fine_ms``: the batch's tasks are polled at most that step after
    the backend's steps, rather than up to a whole fine step later, for their
    whole life (:meth:`progrock.worker.engine.Engine.next_due` keeps the phase), at
    the price of polls of their own (at most ``MISS_STEPS`` phases per fine
    step). On the fine grid (heavy load), up to ``fine_ms``, where the
    batches sent at once are polled together.
    """
    due = answered_ms + interval_ms
    if align_ms > 0 and grid_ms > fine_ms:
        return ceil_to(due, align_ms)
    if grid_ms > 0:
        up = ceil_to(due, grid_ms)
        if up - due <= slack_ms or fine_ms <= 0:
            return up
        if grid_ms > fine_ms:
            return ceil_to(due, fine_ms / MISS_STEPS)
    if fine_ms > 0:
        return ceil_to(due, fine_ms)
    return due
