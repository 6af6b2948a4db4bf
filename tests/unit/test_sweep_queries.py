"""The sweep's database queries stay cheap as ended tasks pile up in the table."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection

from progrock.models import Task
from progrock.worker.sweep import recently_finished

pytestmark = pytest.mark.django_db


def test_recently_finished_reads_a_range_of_the_finished_at_index() -> None:
    """Not every ended task the table has kept (a scan by status would)."""
    query = recently_finished(time.time() - 600).query
    sql, params = query.sql_with_params()
    with connection.cursor() as cursor:
        cursor.execute(f"EXPLAIN QUERY PLAN {sql}", params)
        plan = " ".join(str(row[-1]) for row in cursor.fetchall())
    assert "progrock_status_finished" in plan and "finished_at>" in plan, plan


def test_recently_finished_returns_recent_ends_newest_first() -> None:
    now = datetime.now(UTC)
    for minutes, status in ((1, "succeeded"), (3, "failed"), (20, "succeeded"), (2, "running")):
        Task.objects.create(
            owner="user:1", kind="rock", status=status, finished_at=now - timedelta(minutes=minutes)
        )
    found = list(recently_finished(time.time() - 600))
    assert [t.status for t in found] == ["succeeded", "failed"]
    assert len(list(recently_finished(time.time() - 600, limit=1))) == 1
