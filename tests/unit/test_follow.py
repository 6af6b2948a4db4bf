"""The long-poll's query parsing and what it answers per task (progrock.web.follow)."""

from __future__ import annotations

import pytest

from progrock.protocol import Status, TaskView
from progrock.web.follow import (
    MAX_TASKS,
    BadQuery,
    Cursor,
    news,
    parse_cursor,
    parse_cursors,
    parse_wait,
)

TASK = "7d0e8a52-3c1b-4f6e-9a1d-2b5c6d7e8f90"


def test_parse_cursor_with_and_without_seq() -> None:
    """``<id>`` asks for a snapshot; ``<id>:<seq>`` for news after seq; ids are canonicalised."""
    assert parse_cursor(TASK.upper()) == Cursor(TASK, None)
    assert parse_cursor(f"{TASK}:17") == Cursor(TASK, 17)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("nope", "task must be <uuid> or <uuid>:<seq>, got 'nope'"),
        (f"{TASK}:", "seq must be an integer >= 0, got ''"),
        (f"{TASK}:-1", "seq must be an integer >= 0, got '-1'"),
        (f"{TASK}:1.5", "seq must be an integer >= 0, got '1.5'"),
        (f"{TASK}:٣", "seq must be an integer >= 0, got '٣'"),
    ],
)
def test_parse_cursor_rejects_bad_values(value: str, message: str) -> None:
    """A bad task parameter is refused with an error quoting it."""
    with pytest.raises(BadQuery, match=message):
        parse_cursor(value)


def test_parse_cursors_keeps_the_last_of_a_repeated_task_and_caps_count() -> None:
    """A task given twice is followed once (its last cursor); more than MAX_TASKS is refused."""
    assert parse_cursors([f"{TASK}:1", f"{TASK}:5"]) == [Cursor(TASK, 5)]
    with pytest.raises(BadQuery, match=f"at most {MAX_TASKS} times, got {MAX_TASKS + 1}"):
        parse_cursors([TASK] * (MAX_TASKS + 1))


@pytest.mark.parametrize(("value", "wait"), [(None, 25.0), ("", 25.0), ("0", 0.0), ("30", 30.0)])
def test_parse_wait_accepts_seconds_within_range(value: str | None, wait: float) -> None:
    """wait defaults to 25 s and accepts 0..30."""
    assert parse_wait(value) == wait


@pytest.mark.parametrize("value", ["31", "-1", "nan", "soon"])
def test_parse_wait_rejects_other_values(value: str) -> None:
    """A wait outside 0..30, or no number, is refused quoting it."""
    with pytest.raises(BadQuery, match=f"within 0..30, got '{value}'"):
        parse_wait(value)


RUNNING = TaskView(TASK, Status.RUNNING, "rock", seq=5, progress=40, message="m", eta_s=2, rate=8)
DONE = TaskView(TASK, Status.SUCCEEDED, "rock", seq=9, progress=100, result={"riffs": 3})


def test_news_without_seq_is_snapshot_then_terminal() -> None:
    """A cursor without seq gets a snapshot, and a finished task's terminal message after it."""
    assert [m["type"] for m in news(Cursor(TASK, None), RUNNING)] == ["snapshot"]
    messages = news(Cursor(TASK, None), DONE)
    assert [(m["type"], m["seq"]) for m in messages] == [("snapshot", 9), ("complete", 9)]


def test_news_after_a_seq_is_the_current_state_as_progress() -> None:
    """A newer seq is answered with a progress message of the current state and its seq."""
    (message,) = news(Cursor(TASK, 2), RUNNING)
    assert message == {
        "type": "progress",
        "task_id": TASK,
        "seq": 5,
        "progress": 40,
        "message": "m",
        "eta_s": 2,
        "rate": 8,
    }


def test_news_of_a_finished_task_is_its_terminal_message_only() -> None:
    """A cursor behind a finished task gets only the terminal message."""
    assert news(Cursor(TASK, 5), DONE) == [
        {
            "type": "complete",
            "task_id": TASK,
            "seq": 9,
            "complete": True,
            "progress": 100,
            "result": {"riffs": 3},
        }
    ]


@pytest.mark.parametrize("after", [5, 6])
def test_no_news_at_or_past_the_current_seq(after: int) -> None:
    """Nothing is answered for a cursor at the task's seq (or past it): never an older seq."""
    assert news(Cursor(TASK, after), RUNNING) == []
