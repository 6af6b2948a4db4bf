"""The 2017 ProgRock demo's own client, unchanged, still works against the server."""

from __future__ import annotations

import re
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.browser.browserkit import ms

pytestmark = pytest.mark.browser


def test_classic_page_reaches_100(page: Any, stack: Any) -> None:
    """On /classic/, the 2017 JavaScript's Rock Out button drives #prog-val to "100%"."""
    page.goto(stack.url + "/classic/")
    # The 2017 start() throws if the socket is still connecting: wait like a user would.
    page.wait_for_function("typeof socket !== 'undefined' && socket.readyState === 1")
    expect(page.locator("#prog-val")).to_have_text("0%")
    page.click("#go-button")
    expect(page.locator("#prog-val")).to_have_text(re.compile(r"^[1-9]\d?%$"), timeout=ms(10))
    expect(page.locator("#prog-val")).to_have_text("100%", timeout=ms(30))
    expect(page.locator("#prog-val")).to_have_class("complete")


def test_the_former_address_redirects_permanently(page: Any, stack: Any) -> None:
    """/seed/, the page's former address, answers 301 to /classic/, which serves the page."""
    response = page.goto(stack.url + "/seed/")
    assert response is not None and response.status == 200
    assert page.url == stack.url + "/classic/"
    first = response.request.redirected_from
    assert first is not None and first.url == stack.url + "/seed/"
    redirect = first.response()
    assert redirect is not None and redirect.status == 301


def test_demo_footer_links_to_the_classic_page(page: Any, stack: Any) -> None:
    """The demo's footer names the 2017 demo and its link opens /classic/."""
    page.goto(stack.url + "/")
    link = page.get_by_role("link", name="The 2017 demo's page")
    expect(link).to_have_attribute("href", "/classic/")
    link.click()
    expect(page).to_have_url(stack.url + "/classic/")
    expect(page.locator("#go-button")).to_have_text("Rock Out")
