"""What a poll decides per task from the backend's answer (polls.PollPlan), without I/O."""

from __future__ import annotations

import logging

import pytest
from django.test import override_settings

from progrock.exceptions import ServiceError
from progrock.protocol import Status
from progrock.services.base import ServiceStatus
from progrock.state.live import LiveState
from progrock.worker.polls import PollPlan
from progrock.worker.ticks import Tick

NOW = 1_700_000_000.0
STATE = LiveState(
    status=Status.RUNNING,
    owner="user:1",
    ref="b-1",
    push=False,
    progress=40.0,
    seq=5,
    message="4 of 10",
    rate_progress=30.0,
    rate_time=NOW - 1.0,
    rate=10.0,
    db_written=NOW - 1.0,
    fails=0,
    fail_since=None,
)
FOLLOWING = NOW * 1000 + 200.0


def plan() -> PollPlan:
    return PollPlan(NOW, NOW * 1000, 20.0, db_interval=10.0)


def running(progress: float, message: str | None = "4 of 10") -> ServiceStatus:
    return ServiceStatus(ref="b-1", state="running", progress=progress, message=message)


def test_progress_is_announced_with_its_rate_and_the_chain_goes_on() -> None:
    """New progress: one change (with the rate estimate's bookkeeping) and the next tick."""
    p = plan()
    p.add("t1", STATE, running(50.0, "5 of 10"), FOLLOWING)
    [change] = p.changes
    assert (change.task_id, change.progress, change.status) == ("t1", 50.0, Status.RUNNING)
    assert change.message["message"] == "5 of 10" and change.message["rate"] is not None
    assert change.fields["rp"] == 50.0 and change.fields["rt"] == NOW
    assert p.next_ticks == [Tick("t1", FOLLOWING)]
    assert p.db_due == {} and p.endings == [] and p.bookkeeping == []


def test_progress_is_copied_to_the_database_once_the_interval_has_passed() -> None:
    """DB_PROGRESS_INTERVAL after the last copy, the change also marks the row's copy as due."""
    p = plan()
    p.add("t1", STATE._replace(db_written=NOW - 10.0), running(50.0), FOLLOWING)
    assert p.db_due == {"t1": "4 of 10"} and p.changes[0].fields["dbt"] == NOW


def test_nothing_new_announces_nothing() -> None:
    """The same progress and message: no change, no bookkeeping, but the chain goes on."""
    p = plan()
    p.add("t1", STATE, running(40.0), FOLLOWING)
    assert p.changes == [] and p.bookkeeping == [] and p.next_ticks == [Tick("t1", FOLLOWING)]


def test_an_answer_after_failures_clears_them() -> None:
    """A task that had failed polls has its failure count cleared by the next good answer."""
    p = plan()
    p.add("t1", STATE._replace(fails=3, fail_since=NOW - 5.0), running(40.0), FOLLOWING)
    assert p.bookkeeping == [("t1", {"fails": "", "fail_since": ""})]


def test_backend_trouble_backs_off_to_a_tick_on_the_grid() -> None:
    """A failed poll retries after the backoff, on the tick grid, counting the failure."""
    p = plan()
    with override_settings(PROGROCK={"FAILURE_BUDGET": 30}):
        p.add("t1", STATE._replace(fails=1, fail_since=NOW - 3.0), ServiceError("down"), FOLLOWING)
    [tick] = p.next_ticks
    assert tick.due_ms == NOW * 1000 + 400.0  # second failure: 0.4 s, on the 20 ms grid
    assert p.bookkeeping == [("t1", {"fails": 2, "fail_since": NOW - 3.0, "nd": tick.due_ms})]
    assert p.endings == []


def test_backend_trouble_past_the_budget_fails_the_task() -> None:
    """Failing polls for FAILURE_BUDGET seconds end the task: backend_unreachable."""
    p = plan()
    with override_settings(PROGROCK={"FAILURE_BUDGET": 30}):
        p.add("t1", STATE._replace(fails=9, fail_since=NOW - 31.0), ServiceError("down"), FOLLOWING)
    [ending] = p.endings
    assert ending.status == Status.FAILED and ending.error is not None
    assert (
        ending.error["code"] == "backend_unreachable"
        and "10 failed polls" in ending.error["detail"]
    )
    assert (ending.progress, ending.seq_hint) == (40.0, 5)
    assert p.next_ticks == []


def test_a_task_the_backend_forgot_is_lost() -> None:
    """The backend no longer knows the task: it fails with code lost, and its chain ends."""
    p = plan()
    p.add("t1", STATE, None, FOLLOWING)
    [ending] = p.endings
    assert ending.error is not None and ending.error["code"] == "lost"
    assert p.next_ticks == []


def test_a_task_lost_right_after_its_create_is_logged_with_the_likely_cause(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Unknown to the backend at the first polls (seq 1: only `started`): a warning names
    the task and says that any worker may poll any task; later, a plain warning."""
    with caplog.at_level(logging.WARNING, logger="progrock.worker"):
        plan().add("t1", STATE._replace(seq=1, progress=0.0), None, FOLLOWING)
        plan().add("t2", STATE, None, FOLLOWING)
    first, later = (r.getMessage() for r in caplog.records)
    assert "t1" in first and "right after creating it" in first
    assert "any worker may poll any task" in first and "docs/backend.md" in first
    assert later == "task t2 failed as lost: the backend no longer knows 'b-1'"


def test_an_end_the_backend_reports_ends_the_task() -> None:
    """Succeeded at the backend: the task ends succeeded at 100 with the backend's result."""
    p = plan()
    done = ServiceStatus(ref="b-1", state="succeeded", progress=100, result={"riffs": 3})
    p.add("t1", STATE, done, FOLLOWING)
    [ending] = p.endings
    assert (ending.status, ending.progress, ending.result, ending.seq_hint) == (
        Status.SUCCEEDED,
        100,
        {"riffs": 3},
        5,
    )
    assert p.changes == [] and p.next_ticks == []
