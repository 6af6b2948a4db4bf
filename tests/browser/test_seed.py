"""The seed write-up's own client, unchanged, still works against the server."""

from __future__ import annotations

import re
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.browser.browserkit import ms

pytestmark = pytest.mark.browser


def test_seed_page_reaches_100(page: Any, stack: Any) -> None:
    """On /seed/, the 2017 JavaScript's Rock Out button drives #prog-val to "100%"."""
    page.goto(stack.url + "/seed/")
    # The seed's start() throws if the socket is still connecting: wait like a user would.
    page.wait_for_function("typeof socket !== 'undefined' && socket.readyState === 1")
    expect(page.locator("#prog-val")).to_have_text("0%")
    page.click("#go-button")
    expect(page.locator("#prog-val")).to_have_text(re.compile(r"^[1-9]\d?%$"), timeout=ms(10))
    expect(page.locator("#prog-val")).to_have_text("100%", timeout=ms(30))
    expect(page.locator("#prog-val")).to_have_class("complete")
