"""A token-authenticated page in Chromium, on the whole stack: the example project's
/tokens/ page has no session; its task belongs to the token's user."""

from __future__ import annotations

from typing import Any

import pytest
from playwright.sync_api import expect

from tests.browser.browserkit import ms
from tests.e2e.stackusers import user_with_token
from tests.e2e.taskrows import select, stored_id

pytestmark = pytest.mark.browser


def start_with(page: Any, stack: Any, token: str) -> Any:
    """Open /tokens/, paste ``token``, press start; return the status element."""
    page.goto(stack.url + "/tokens/")
    page.fill("#token", token)
    page.click("#start")
    return page.locator("#status")


def test_a_token_page_reaches_complete_as_the_token_s_user(
    page: Any, context: Any, stack: Any
) -> None:
    """With a signed token and no session, the task runs to complete over the socket,
    and its row's owner is the token's user."""
    pk, token = user_with_token(stack, "browser-token-user")
    sockets: list[str] = []
    page.on("websocket", lambda ws: sockets.append(ws.url))
    status = start_with(page, stack, token)
    expect(status).to_have_attribute("data-status", "complete", timeout=ms(30))
    expect(page.locator("#bar")).to_have_js_property("value", 100)
    task_id = status.get_attribute("data-task-id")
    owner = select(
        stack, "SELECT owner FROM progrock_task WHERE id = %s", stored_id(stack, task_id)
    )
    assert owner == [(f"user:{pk}",)]
    assert "sessionid" not in {c["name"] for c in context.cookies()}
    assert sockets and all("token" not in url for url in sockets)  # never in the URL


def test_a_made_up_token_is_refused_and_starts_nothing(page: Any, stack: Any) -> None:
    """An unknown token: the start fails unauthenticated (close 4401), no task is made."""
    before = select(stack, "SELECT count(*) FROM progrock_task")
    status = start_with(page, stack, "made-up")
    expect(status).to_have_attribute("data-status", "error: unauthenticated", timeout=ms(15))
    assert select(stack, "SELECT count(*) FROM progrock_task") == before
