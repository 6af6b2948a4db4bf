"""progrock.state.rows.update_each on the real test database: values per row, one statement."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from progrock.models import Task
from progrock.protocol import Status
from progrock.state import tasks
from progrock.state.rows import update_each

pytestmark = pytest.mark.django_db


def rows(count: int, status: Status = Status.RUNNING) -> list[str]:
    ids = [str(uuid.uuid4()) for _ in range(count)]
    Task.objects.bulk_create(Task(id=i, owner="o", kind="k", status=status.value) for i in ids)
    return ids


def test_each_row_gets_its_own_values_adapted_by_its_field() -> None:
    ids = rows(3)
    at = datetime(2026, 11, 24, 12, 30, 15, 123456, tzinfo=UTC)
    update_each(
        ("result", "error", "finished_at", "seq"),
        [
            (ids[0], ({"n": [1, 2]}, None, at, 4)),
            (ids[1].upper(), (None, {"code": "x"}, None, 5)),  # any UUID form
            (uuid.UUID(ids[2]), ("text", None, at, 6)),
        ],
        status_in=(Status.RUNNING.value,),
    )
    got = {str(t.id): t for t in Task.objects.filter(pk__in=ids)}
    assert (got[ids[0]].result, got[ids[0]].error, got[ids[0]].finished_at) == (
        {"n": [1, 2]},
        None,
        at,
    )
    assert (got[ids[1]].result, got[ids[1]].error, got[ids[1]].seq) == (None, {"code": "x"}, 5)
    assert (got[ids[2]].result, got[ids[2]].seq) == ("text", 6)
    # None is SQL NULL, as the ORM writes it, not JSON null.
    assert set(
        Task.objects.filter(pk__in=ids, result__isnull=True).values_list("pk", flat=True)
    ) == {uuid.UUID(ids[1])}


def test_rows_in_other_statuses_or_missing_are_left_alone() -> None:
    (running,) = rows(1)
    (queued,) = rows(1, Status.QUEUED)
    update_each(
        ("seq",),
        [(running, (9,)), (queued, (9,)), (str(uuid.uuid4()), (9,))],
        status_in=(Status.QUEUED.value, Status.CANCELLED.value),
    )
    assert Task.objects.get(pk=running).seq == 0
    assert Task.objects.get(pk=queued).seq == 9


def test_no_rows_is_no_statement_and_no_fields_is_an_error() -> None:
    with CaptureQueriesContext(connection) as queries:
        update_each(("seq",), [], status_in=(Status.RUNNING.value,))
    assert len(queries) == 0
    with pytest.raises(ValueError, match="at least one field"):
        update_each((), [("x", ())], status_in=(Status.RUNNING.value,))


def test_a_burst_of_starts_costs_the_same_statements_for_1_or_400_rows() -> None:
    """One UPDATE (executemany) and one SELECT per 200 rows, whatever the count."""
    counts = []
    for n in (1, 400):
        ids = rows(n, Status.QUEUED)
        with CaptureQueriesContext(connection) as queries:
            moved = tasks.mark_running([(i, f"r{i}") for i in ids], datetime.now(UTC))
        assert moved == [True] * n
        counts.append(sum(1 for q in queries if "UPDATE " in q["sql"].upper()))
    assert counts == [1, 1]
