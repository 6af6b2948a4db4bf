"""The texts and states of a server-rendered bar (progrock.web.bar)."""

from __future__ import annotations

import pytest

from progrock.protocol import Status, TaskView
from progrock.web import bar

TASK = "7d0e8a52-3c1b-4f6e-9a1d-2b5c6d7e8f90"


@pytest.mark.parametrize(
    ("eta", "text"),
    [
        (None, ""),
        (-1, ""),
        (float("inf"), ""),
        (0.2, "1 s left"),
        (59, "59 s left"),
        (60, "1 min left"),
        (125.5, "2 min 6 s left"),
        (3600, "1 h left"),
        (7440, "2 h 4 min left"),
    ],
)
def test_format_eta(eta: float | None, text: str) -> None:
    """ETAs read as seconds, minutes and hours, rounded up; unknown ones as nothing."""
    assert bar.format_eta(eta) == text


def test_format_percent_rounds_down_until_success() -> None:
    """99.9 % shows 99 %: only a succeeded task shows 100 %."""
    assert bar.format_percent(99.9, "running") == "99%"
    assert bar.format_percent(None, "queued") == "0%"
    assert bar.format_percent(40, "succeeded") == "100%"


@pytest.mark.parametrize(
    ("status", "result", "error", "text"),
    [
        ("succeeded", None, None, "Done"),
        ("succeeded", "42 rows", None, "42 rows"),
        ("succeeded", {"riffs": 34, "é": [1]}, None, '{"riffs":34,"é":[1]}'),
        ("failed", None, {"code": "backend_failed", "detail": "boom"}, "boom"),
        ("failed", None, {"code": "lost", "detail": ""}, "lost"),
        ("failed", None, None, "The task failed"),
        ("cancelled", None, None, "The task was cancelled"),
        ("running", None, None, ""),
    ],
)
def test_outcome_text(status: str, result: object, error: dict[str, str] | None, text: str) -> None:
    """The result slot shows the result (JSON as JavaScript writes it) or the error detail."""
    assert bar.outcome_text(status, result, error) == text


def test_view_bar_of_a_running_task() -> None:
    """A running task's picture has its progress, message and ETA, and a cancel URL."""
    view = TaskView(TASK, Status.RUNNING, "rock", seq=4, progress=42.5, message="m", eta_s=3)
    shown = bar.view_bar(view, cancel_url="/c/")
    assert (shown.status, shown.value, shown.percent, shown.eta) == (
        "running",
        "42.5",
        "42%",
        "3 s left",
    )
    assert shown.show_cancel and not shown.live


def test_view_bar_of_a_queued_task_is_indeterminate() -> None:
    """A queued task has no progress value: the <progress> is indeterminate."""
    shown = bar.view_bar(TaskView(TASK, Status.QUEUED, "rock"))
    assert shown.value is None
    assert 'value="' not in bar.render_bar(shown).split("<progress", 1)[1].split(">", 1)[0]


def test_view_bar_of_a_finished_task_shows_outcome_not_cancel() -> None:
    """A failed task shows its error and no cancel button; no ETA."""
    view = TaskView(
        TASK,
        Status.FAILED,
        "rock",
        seq=9,
        progress=50,
        eta_s=4,
        error={"code": "backend_failed", "detail": "boom at 50"},
    )
    html = bar.render_bar(bar.view_bar(view, cancel_url="/c/"))
    assert 'data-status="failed"' in html and "data-progrock-fragment" in html
    assert ">boom at 50</output>" in html
    assert "data-progrock-cancel hidden" in html
    assert "data-progrock-eta></span>" in html
