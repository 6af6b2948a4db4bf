"""Retention: deleting the rows of tasks that ended long ago.

Task rows are kept until something deletes them: ``manage.py progrock_cleanup
--older-than 30d`` by hand or from cron, or the worker sweep when
``PROGROCK["RETENTION"]`` is set (a few hundred rows per sweep, so a large
backlog never holds up a worker). Only ended tasks (succeeded, failed,
cancelled) are deleted, by when they ended: never a queued or running task's row.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Final

from django.db.models import QuerySet

from progrock.durations import DURATION_SHAPE, format_duration, parse_duration, retention_seconds
from progrock.models import Task
from progrock.protocol import TERMINAL

__all__ = [
    "DURATION_SHAPE",
    "delete_ended",
    "ended_before",
    "format_duration",
    "parse_duration",
    "retention_seconds",
]

#: Rows one sweep deletes at most (RETENTION); the next sweep goes on.
SWEEP_BATCH: Final = 500
#: Rows one DELETE statement removes at most (progrock_cleanup).
DELETE_BATCH: Final = 1000


def ended_before(seconds: float, now: datetime | None = None) -> QuerySet[Task]:
    """Tasks that ended more than ``seconds`` ago (a range of the status/finished_at index)."""
    cutoff = (now or datetime.now(UTC)) - timedelta(seconds=seconds)
    return Task.objects.filter(status__in=[s.value for s in TERMINAL], finished_at__lt=cutoff)


def delete_ended(seconds: float, *, limit: int | None = None, batch: int = DELETE_BATCH) -> int:
    """Delete the rows of tasks that ended more than ``seconds`` ago, ``batch`` rows per
    statement, at most ``limit`` in all; returns how many were deleted."""
    deleted = 0
    while limit is None or deleted < limit:
        size = batch if limit is None else min(batch, limit - deleted)
        ids = list(
            ended_before(seconds).order_by("finished_at").values_list("pk", flat=True)[:size]
        )
        if not ids:
            break
        # The status again: a row can only have become more ended, but say it in the DELETE.
        count, _ = Task.objects.filter(pk__in=ids, status__in=[s.value for s in TERMINAL]).delete()
        deleted += count
        if len(ids) < size:
            break
    return deleted
