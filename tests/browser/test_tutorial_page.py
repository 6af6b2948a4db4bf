"""The tutorial's page in Chromium: the project docs/tutorial.md builds, followed verbatim
(tests/e2e/tutorial.py), with the processes it names; a press of its button fills the bar."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.browser.browserkit import ms
from tests.e2e.tutorial import Followed, follow

pytestmark = [pytest.mark.browser, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def followed(tmp_path_factory: pytest.TempPathFactory, redis_server: str) -> Iterator[Followed]:
    """The tutorial followed to its end in a new folder, its processes running."""
    with follow(tmp_path_factory.mktemp("tutorial"), redis_server) as done:
        yield done


def test_pressing_rock_out_fills_the_bar_to_100(page: Any, followed: Followed) -> None:
    """On the tutorial's page, "Rock out" starts a task whose bar reaches 100 % and says
    Complete, over one WebSocket to /prog/."""
    sockets: list[str] = []
    page.on("websocket", lambda ws: sockets.append(ws.url))
    page.goto(followed.url + "/")
    bar = page.locator("[data-progrock-bar]")
    button = bar.locator("button[type=submit]")
    expect(button).to_have_text("Rock out")
    expect(button).to_be_enabled()
    button.click()
    expect(bar).to_have_attribute("data-status", "succeeded", timeout=ms(60))
    expect(bar.locator("progress")).to_have_js_property("value", 100)
    expect(bar.locator("[data-progrock-percent]")).to_have_text("100%")
    expect(bar.locator("[data-progrock-status]")).to_have_text("Complete")
    assert sockets == [followed.url.replace("http://", "ws://") + "/prog/"], sockets
