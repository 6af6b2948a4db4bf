"""Bulk row transitions (start and end bursts) on the real test database."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from progrock.models import Task
from progrock.protocol import Status, failure
from progrock.state import tasks
from progrock.state.rows import ended_statuses
from progrock.worker.progress_copy import copy_progress

pytestmark = pytest.mark.django_db


def rows(count: int, status: Status = Status.QUEUED) -> list[str]:
    ids = [str(uuid.uuid4()) for _ in range(count)]
    Task.objects.bulk_create(
        Task(id=i, owner="o", kind="rock", status=status.value, seq=0) for i in ids
    )
    return ids


def test_mark_running_moves_only_queued_rows_each_with_its_ref() -> None:
    ids = rows(250)  # more than one statement's worth
    Task.objects.filter(pk=ids[3]).update(status=Status.CANCELLED.value)  # cancelled meanwhile
    at = datetime.now(UTC)
    moved = tasks.mark_running([(i, f"ref-{n}") for n, i in enumerate(ids)], at)
    assert moved == [n != 3 for n in range(250)]
    by_id = {str(t.id): t for t in Task.objects.filter(pk__in=ids)}
    assert by_id[ids[3]].status == Status.CANCELLED.value and by_id[ids[3]].backend_ref is None
    for n, task_id in enumerate(ids):
        if n != 3:
            task = by_id[task_id]
            assert (task.status, task.backend_ref, task.seq) == ("running", f"ref-{n}", 1)
            assert task.started_at == at


def test_a_second_mark_running_moves_nothing() -> None:
    ids = rows(2)
    assert tasks.mark_running([(ids[0], "a"), (ids[1], "b")], datetime.now(UTC)) == [True, True]
    assert tasks.mark_running([(ids[0], "c")], datetime.now(UTC)) == [False]
    assert Task.objects.get(pk=ids[0]).backend_ref == "a"


def test_endings_write_each_rows_own_values_and_skip_finished_rows() -> None:
    ids = rows(5, Status.RUNNING)
    Task.objects.filter(pk=ids[4]).update(status=Status.SUCCEEDED.value)
    err = failure("backend_failed", "boom")
    endings = [
        tasks.Ending(ids[0], Status.SUCCEEDED, 100, {"n": 1}, seq_hint=7),
        tasks.Ending(ids[1], Status.SUCCEEDED, 100, {"n": 1}, seq_hint=9),
        tasks.Ending(ids[2], Status.FAILED, 40, error=err, seq_hint=3),
        tasks.Ending(ids[3], Status.CANCELLED, 12.5, seq_hint=2),
        tasks.Ending(ids[4], Status.FAILED, 50, error=err, seq_hint=1),  # already over
    ]
    written = tasks._write_endings(endings, datetime.now(UTC))
    assert written == [True, True, True, True, False]
    got = {str(t.id): t for t in Task.objects.filter(pk__in=ids)}
    assert (got[ids[0]].status, got[ids[0]].result, got[ids[0]].seq) == ("succeeded", {"n": 1}, 8)
    assert (got[ids[1]].seq, got[ids[1]].progress) == (10, 100)
    assert (got[ids[2]].status, got[ids[2]].error, got[ids[2]].progress) == ("failed", err, 40)
    assert (got[ids[3]].status, got[ids[3]].progress, got[ids[3]].seq) == ("cancelled", 12.5, 3)
    assert got[ids[4]].status == "succeeded" and got[ids[4]].error is None


def test_an_end_moves_a_row_only_from_where_the_protocol_allows_it() -> None:
    """A queued row may fail or be cancelled in one batch, but not succeed: it never ran."""
    ids = rows(3)
    endings = [
        tasks.Ending(ids[0], Status.SUCCEEDED, 100, {"n": 1}),
        tasks.Ending(ids[1], Status.FAILED, error=failure("not_started", "lost")),
        tasks.Ending(ids[2], Status.CANCELLED),
    ]
    assert tasks._write_endings(endings, datetime.now(UTC)) == [False, True, True]
    got = {str(t.id): t.status for t in Task.objects.filter(pk__in=ids)}
    assert got == {ids[0]: "queued", ids[1]: "failed", ids[2]: "cancelled"}


def test_from_statuses_narrows_which_rows_an_end_may_move() -> None:
    """A failed start ends only rows still queued: a row another attempt started is left alone."""
    queued, running = rows(1)[0], rows(1, Status.RUNNING)[0]
    endings = [
        tasks.Ending(i, Status.FAILED, error=failure("not_started", "x")) for i in (queued, running)
    ]
    written = tasks._write_endings(endings, datetime.now(UTC), from_statuses=(Status.QUEUED,))
    assert written == [True, False]
    assert Task.objects.get(pk=running).status == "running"


def test_copy_progress_writes_each_running_rows_own_values_only() -> None:
    ids = rows(150, Status.RUNNING)  # more than one statement's worth
    Task.objects.filter(pk=ids[7]).update(status=Status.SUCCEEDED.value, progress=100, seq=40)
    copies = [
        Task(id=task_id, progress=n / 2, message=f"step {n}" if n % 3 else None, seq=n + 1)
        for n, task_id in enumerate(ids)
    ]
    copy_progress(copies)
    got = {str(t.id): t for t in Task.objects.filter(pk__in=ids)}
    for n, task_id in enumerate(ids):
        if n == 7:  # finished meanwhile: untouched
            assert (got[task_id].status, got[task_id].progress, got[task_id].seq) == (
                "succeeded",
                100,
                40,
            )
        else:
            assert (got[task_id].progress, got[task_id].message, got[task_id].seq) == (
                n / 2,
                f"step {n}" if n % 3 else None,
                n + 1,
            )


def test_mark_running_compares_refs_as_the_text_the_column_holds() -> None:
    """A custom service may return a non-string ref: the row moves, and says so."""
    (task_id,) = rows(1)
    assert tasks.mark_running([(task_id, 42)], datetime.now(UTC)) == [True]  # type: ignore[list-item]
    assert Task.objects.get(pk=task_id).backend_ref == "42"


def test_endings_accept_task_ids_in_any_uuid_form() -> None:
    (task_id,) = rows(1, Status.RUNNING)
    ending = tasks.Ending(task_id.upper(), Status.SUCCEEDED, 100)
    assert tasks._write_endings([ending], datetime.now(UTC)) == [True]
    assert Task.objects.get(pk=task_id).status == "succeeded"


def test_an_end_already_recorded_with_the_same_status_is_not_written_again() -> None:
    """Read back by the end's own finish time: a row another worker already moved
    to the same terminal status (a duplicated tick, a sweep) does not count as moved."""
    ids = rows(2, Status.RUNNING)
    first = [tasks.Ending(ids[0], Status.SUCCEEDED, 100, {"n": 1}, seq_hint=4)]
    assert tasks._write_endings(first, datetime.now(UTC)) == [True]
    again = [
        tasks.Ending(ids[0], Status.SUCCEEDED, 100, {"n": 2}, seq_hint=4),
        tasks.Ending(ids[1], Status.SUCCEEDED, 100, {"n": 2}, seq_hint=4),
    ]
    assert tasks._write_endings(again, datetime.now(UTC)) == [False, True]
    assert Task.objects.get(pk=ids[0]).result == {"n": 1}


def test_ended_statuses_reads_only_rows_ended_at_that_time_in_any_id_form() -> None:
    ids = rows(3, Status.RUNNING)
    at = datetime.now(UTC)
    tasks._write_endings([tasks.Ending(ids[0], Status.SUCCEEDED, 100, seq_hint=1)], at)
    tasks._write_endings([tasks.Ending(ids[1], Status.FAILED, 10, seq_hint=1)], datetime.now(UTC))
    missing = str(uuid.uuid4())
    asked = [ids[0].upper(), uuid.UUID(ids[1]).hex, ids[2], missing]
    # ids[1] ended at another time, ids[2] is still running, `missing` has no row.
    assert ended_statuses(asked, at) == {ids[0]: "succeeded"}
    assert ended_statuses([], at) == {}
