"""The demo page survives a restart of the web server without a reload."""

from __future__ import annotations

from typing import Any

import pytest
from playwright.sync_api import expect

from tests.browser.browserkit import FAST, card, ms, open_demo, progress_of, start, wait_progress

pytestmark = pytest.mark.browser


def test_page_reconnects_after_web_restart(page: Any, stack: Any) -> None:
    """Killing and restarting the web process mid-task: the page shows it reconnecting,
    reconnects by itself, sends what was asked offline, and the task finishes."""
    open_demo(page, stack)
    (task_id,) = start(page, {"step": "2", "interval_ms": "200"})
    wait_progress(page, task_id, 0)
    page.evaluate("window.notReloaded = true")
    stack.kill("web")
    expect(page.locator("#connection")).to_have_attribute(
        "data-state", "reconnecting", timeout=ms(10)
    )
    assert progress_of(page, task_id) < 100

    # A start asked while the server is down is queued and sent after the reconnect.
    for name, value in FAST.items():
        page.fill(f'input[name="{name}"]', value)
    page.click("#start-button")

    stack.restart("web")
    expect(page.locator("#connection")).to_have_attribute("data-state", "open", timeout=ms(30))
    expect(card(page, task_id)).to_have_attribute("data-status", "succeeded", timeout=ms(30))
    assert progress_of(page, task_id) == 100
    assert page.evaluate("window.notReloaded") is True
    expect(page.locator(".task[data-task-id]")).to_have_count(2)
    queued = page.locator(".task[data-task-id]").first
    expect(queued).to_have_attribute("data-status", "succeeded", timeout=ms(20))
