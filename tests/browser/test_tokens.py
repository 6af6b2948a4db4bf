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


OPEN_TWO = """async (token) => {
  const open = (protocols) => new Promise((resolve) => {
    const ws = new WebSocket(location.origin.replace(/^http/, "ws") + "/prog/", protocols);
    const got = { protocol: null, frames: [], code: null };
    ws.onopen = () => { got.protocol = ws.protocol; ws.send(JSON.stringify({ action: "list" })); };
    ws.onmessage = (e) => {
      got.frames.push(JSON.parse(e.data));
      if (got.frames.length === 2) ws.close(1000);
    };
    ws.onclose = (e) => { got.code = e.code; resolve(got); };
  });
  return { good: await open(["progrock.token", token]),
           bad: await open(["progrock.token", "made-up"]) };
}"""


def test_a_browser_socket_takes_the_subprotocol_and_sees_4401(page: Any, stack: Any) -> None:
    """A real WebSocket through the real server: offering progrock.token with a good token
    is accepted as progrock.token and served; a made-up one gets unauthenticated and 4401."""
    _, token = user_with_token(stack, "browser-subprotocol-user")
    page.goto(stack.url + "/tokens/")
    result = page.evaluate(OPEN_TWO, token)
    good, bad = result["good"], result["bad"]
    assert good["protocol"] == "progrock.token"
    assert good["frames"][0] == {"accept": True} and good["frames"][1]["type"] == "tasks"
    assert bad["protocol"] == "progrock.token" and bad["code"] == 4401
    assert [(f["type"], f["code"]) for f in bad["frames"]] == [("error", "unauthenticated")]
