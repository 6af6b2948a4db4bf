"""The demo page at / in a real Chromium, against the whole running stack."""

from __future__ import annotations

import re
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.browser.browserkit import (
    FAST,
    SLOW,
    card,
    ms,
    open_demo,
    progress_of,
    start,
    wait_progress,
)

pytestmark = pytest.mark.browser


def test_rock_out_reaches_complete(page: Any, stack: Any) -> None:
    """The 2017 demo's Rock Out button runs a task whose bar reaches 100 % and shows complete."""
    open_demo(page, stack)
    page.click("#go-button")
    task = page.locator(".task[data-task-id]").first
    expect(task).to_have_attribute("data-status", "running")
    expect(task).to_have_attribute("data-status", "succeeded", timeout=ms(30))
    expect(task.locator(".bar")).to_have_attribute("aria-valuenow", "100")
    expect(task.locator(".status")).to_have_text("complete")
    expect(task.locator(".outcome")).to_contain_text("riffs")
    expect(task.locator(".cancel")).to_be_hidden()
    expect(page.locator("#prog-val")).to_have_text("100%")
    expect(page.locator("#prog-val")).to_have_class(re.compile(r"\bcomplete\b"))


def test_two_tasks_run_at_once(page: Any, stack: Any) -> None:
    """Two tasks started together both progress and both complete."""
    open_demo(page, stack)
    first, second = start(page, FAST, count=2)
    assert first != second
    for task_id in (first, second):
        expect(card(page, task_id)).to_have_attribute("data-status", "succeeded", timeout=ms(20))
        assert progress_of(page, task_id) == 100
    expect(page.locator("#task-count")).to_have_text("2")


def test_cancel_one_of_two(page: Any, stack: Any) -> None:
    """Cancelling one task shows it cancelled while the other keeps running."""
    open_demo(page, stack)
    keep, stop = start(page, SLOW, count=2)
    expect(card(page, stop)).to_have_attribute("data-status", "running")
    card(page, stop).locator(".cancel").click()
    expect(card(page, stop)).to_have_attribute("data-status", "cancelled", timeout=ms(10))
    expect(card(page, stop).locator(".outcome")).to_contain_text("Cancelled at")
    expect(card(page, stop).locator(".dismiss")).to_be_visible()
    expect(card(page, keep)).to_have_attribute("data-status", "running")
    wait_progress(page, keep, 19, timeout=20)
    assert progress_of(page, stop) < 100


def test_failure_shows_error(page: Any, stack: Any) -> None:
    """A task that fails shows the failed state and the backend's error."""
    open_demo(page, stack)
    (task_id,) = start(page, {"step": "10", "interval_ms": "50", "fail_at": "30"})
    expect(card(page, task_id)).to_have_attribute("data-status", "failed", timeout=ms(20))
    expect(card(page, task_id).locator(".outcome")).to_contain_text("backend_failed")
    assert progress_of(page, task_id) == 30


def test_hash_task_shows_digest(page: Any, stack: Any) -> None:
    """A hash task runs from the form and shows its result when it completes."""
    open_demo(page, stack)
    (task_id,) = start(page, {"mb": "4", "rate_mb_s": "16"}, kind="hash")
    expect(card(page, task_id).locator(".kind-tag")).to_have_text("hash")
    expect(card(page, task_id)).to_have_attribute("data-status", "succeeded", timeout=ms(20))
    expect(card(page, task_id).locator(".outcome dl")).to_be_visible()


def test_reload_resumes_running_task(page: Any, stack: Any) -> None:
    """After a reload mid-task, list() brings the task back and it runs to completion."""
    open_demo(page, stack)
    (task_id,) = start(page, SLOW)
    wait_progress(page, task_id, 0)
    page.reload()
    restored = card(page, task_id)
    expect(restored).to_have_attribute("data-status", "running", timeout=ms(10))
    assert progress_of(page, task_id) > 0  # the snapshot, not a fresh start
    expect(restored).to_have_attribute("data-status", "succeeded", timeout=ms(30))
    assert progress_of(page, task_id) == 100


def test_other_visitors_do_not_see_my_tasks(browser: Any, page: Any, stack: Any) -> None:
    """A second visitor (another session) gets an empty task list."""
    open_demo(page, stack)
    start(page, FAST)
    other = browser.new_context()
    try:
        stranger = other.new_page()
        stranger.goto(stack.url + "/")
        expect(stranger.locator("#tasks-empty")).to_have_text(re.compile("No tasks yet"))
        expect(stranger.locator(".task")).to_have_count(0)
    finally:
        other.close()


def test_out_of_range_parameters_are_refused_beside_the_field(page: Any, stack: Any) -> None:
    """step=-5 starts nothing: the field is marked invalid with the allowed range beside it;
    corrected, the error goes and the start goes ahead."""
    open_demo(page, stack)
    page.fill('input[name="step"]', "-5")
    page.fill('input[name="fail_at"]', "150")
    page.click("#start-button")
    step_error = page.locator("#step-error")
    expect(step_error).to_have_text("step must be between 0.1 and 100, got -5")
    expect(page.locator("#fail_at-error")).to_have_text(
        "fail at must be between 0 and 100, got 150"
    )
    expect(page.locator('input[name="step"]')).to_have_attribute("aria-invalid", "true")
    expect(page.locator('input[name="step"]')).to_be_focused()
    page.fill('input[name="fail_at"]', "")
    # Over the same socket, in order: a start sent by the refused click would answer first.
    [task_id] = start(page, FAST)
    expect(step_error).to_have_count(0)
    expect(card(page, task_id)).to_have_attribute("data-status", "succeeded", timeout=ms(20))
    expect(page.locator(".task[data-task-id]")).to_have_count(1)
