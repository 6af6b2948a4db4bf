"""The sweep's database queries stay cheap as ended tasks pile up in the table."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection

from progrock.models import Task
from progrock.worker.sweep import recently_finished

pytestmark = pytest.mark.django_db


def plan(explain: str) -> str:
    """The database's plan for the sweep's query, as one string."""
    sql, params = recently_finished(time.time() - 600).query.sql_with_params()
    with connection.cursor() as cursor:
        cursor.execute(f"{explain} {sql}", params)
        return " ".join(str(row[-1]) for row in cursor.fetchall())


def test_recently_finished_reads_a_range_of_the_finished_at_index() -> None:
    """SQLite's planner picks the index for a range of finished_at, not a scan by status."""
    if connection.vendor != "sqlite":
        pytest.skip("SQLite-only: EXPLAIN QUERY PLAN is SQLite's (the PostgreSQL twin is below)")
    found = plan("EXPLAIN QUERY PLAN")
    assert "progrock_status_finished" in found and "finished_at>" in found, found


def test_recently_finished_can_use_the_finished_at_index_on_postgresql() -> None:
    """PostgreSQL serves the query from the index, given the choice (no seq scans)."""
    if connection.vendor != "postgresql":
        pytest.skip("PostgreSQL-only: its EXPLAIN (the SQLite twin is above)")
    # An empty table is scanned whatever its indexes: forbid that, so the plan
    # shows whether the index can serve the query's range at all.
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
    found = plan("EXPLAIN")
    assert "progrock_status_finished" in found and "finished_at >=" in found, found
    assert "Seq Scan" not in found, found


def test_recently_finished_returns_recent_ends_newest_first() -> None:
    """Terminal tasks of the window only, newest first, and at most ``limit`` of them."""
    now = datetime.now(UTC)
    for minutes, status in ((1, "succeeded"), (3, "failed"), (20, "succeeded"), (2, "running")):
        Task.objects.create(
            owner="user:1", kind="rock", status=status, finished_at=now - timedelta(minutes=minutes)
        )
    found = list(recently_finished(time.time() - 600))
    assert [t.status for t in found] == ["succeeded", "failed"]
    assert len(list(recently_finished(time.time() - 600, limit=1))) == 1
