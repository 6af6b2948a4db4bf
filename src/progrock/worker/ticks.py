"""When a task's poll ticks are due: pure arithmetic, in milliseconds since the epoch.

Ticks are due on a grid (``grid_ms``, ``TICK_GRID``; 0: none) so that tasks
share due times: the delay server merges their ticks into one message and the
worker polls them in one backend request. A new task's first tick is one
interval after the backend answered its create, rounded up to the grid; each
later one is one interval after the last one was due, so the cadence keeps
its phase against the backend's own steps however late a poll runs.

A leaf module: no settings, no clock, no I/O, no imports from the package.
The caller passes the interval, the grid and the time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Tick:
    """One poll of one task, due at ``due_ms``."""

    task_id: str
    due_ms: float


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


def on_grid(due_ms: float, grid_ms: float) -> float:
    """``due_ms`` rounded up to the grid (unchanged without one, ``grid_ms <= 0``)."""
    return due_ms if grid_ms <= 0 else ceil_to(due_ms, grid_ms)


def _skip(due_ms: float, at_ms: float, interval_ms: float) -> float:
    """``due_ms`` moved on by whole intervals to at or after ``at_ms`` (unchanged if not past)."""
    if at_ms > due_ms and interval_ms > 0:
        due_ms += interval_ms * math.ceil((at_ms - due_ms) / interval_ms)
    return due_ms


def _regrid(due_ms: float, interval_ms: float, grid_ms: float) -> float:
    """Back on the grid, if the interval is not a multiple of it (else unchanged:
    a task on the grid stays on it)."""
    if grid_ms > 0 and not is_multiple(interval_ms, grid_ms):
        # An interval off the grid would spread tasks over ever more due
        # times: each tick goes back on the grid (stretching the interval).
        return ceil_to(due_ms, grid_ms)
    return due_ms


def next_due(due_ms: float, at_ms: float, interval_ms: float, grid_ms: float) -> float:
    """The tick after one due at ``due_ms`` and handled at ``at_ms``.

    One interval after the last one was due (not after now), so the cadence
    does not drift under load. A poll handled more than an interval late
    skips ahead by whole intervals instead of starting a new rhythm: the task
    keeps its phase against the backend's own steps, which a shifted rhythm
    could straddle (polls that alternately see no step and two). With an
    interval that is not a multiple of the grid, every tick is rounded up to
    the grid, which stretches the interval (0.25 s on a 20 ms grid: 260 ms).
    """
    return _regrid(_skip(due_ms + interval_ms, at_ms, interval_ms), interval_ms, grid_ms)


def first_due(answered_ms: float, at_ms: float, interval_ms: float, grid_ms: float) -> float:
    """A new task's first tick: one interval after the backend answered its create
    (``answered_ms``), rounded up to the grid, as scheduled at ``at_ms``.

    Kept even if already past (the start took longer than an interval: it is
    delivered at once); moved on by whole intervals, keeping its phase, only
    once it is more than an interval past.
    """
    due = on_grid(answered_ms + interval_ms, grid_ms)
    later = _skip(due, at_ms - interval_ms, interval_ms)
    return due if later == due else _regrid(later, interval_ms, grid_ms)
