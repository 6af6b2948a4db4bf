"""The demo page fits a laptop and a phone; saves artifacts/screenshots/demo*.png."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.browser.browserkit import FAST, card, ms, open_demo, start, wait_progress

pytestmark = pytest.mark.browser

NO_HORIZONTAL_SCROLL = "document.documentElement.scrollWidth <= window.innerWidth"


def populate(page: Any) -> None:
    """Tasks in every state: complete, failed, cancelled, and two running."""
    (done,) = start(page, FAST)
    expect(card(page, done)).to_have_attribute("data-status", "succeeded", timeout=ms(20))
    (failed,) = start(page, {"step": "10", "interval_ms": "50", "fail_at": "40"})
    expect(card(page, failed)).to_have_attribute("data-status", "failed", timeout=ms(20))
    page.fill('input[name="fail_at"]', "")
    (cancelled,) = start(page, {"step": "3", "interval_ms": "100"})
    wait_progress(page, cancelled, 20)
    card(page, cancelled).locator(".cancel").click()
    expect(card(page, cancelled)).to_have_attribute("data-status", "cancelled", timeout=ms(10))
    (hashing,) = start(page, {"mb": "256", "rate_mb_s": "16"}, kind="hash")
    page.click("#go-button")
    wait_progress(page, hashing, 3)


def test_demo_fits_laptop_and_phone(
    browser: Any, page: Any, stack: Any, screenshots_dir: Path
) -> None:
    """With tasks in every state, the page has no horizontal scroll on a laptop or a
    phone; the screenshots are saved for a human to look at."""
    open_demo(page, stack)
    populate(page)
    assert page.evaluate(NO_HORIZONTAL_SCROLL)
    page.screenshot(path=str(screenshots_dir / "demo.png"), full_page=True)

    cookies = page.context.cookies()
    phone = browser.new_context(
        viewport={"width": 390, "height": 844}, device_scale_factor=2, is_mobile=True
    )
    try:
        phone.add_cookies(cookies)  # the same visitor: their tasks are listed
        mobile = phone.new_page()
        mobile.goto(stack.url + "/")
        expect(mobile.locator(".task[data-task-id]")).to_have_count(
            page.locator(".task[data-task-id]").count()
        )
        assert mobile.evaluate(NO_HORIZONTAL_SCROLL)
        mobile.screenshot(path=str(screenshots_dir / "demo-phone.png"), full_page=True)
    finally:
        phone.close()
