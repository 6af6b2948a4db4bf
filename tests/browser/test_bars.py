"""{% progrock_bar %} on the example project's /bars/ page, in Chromium, on the whole stack.

The page has no JavaScript of its own: everything the bars do comes from the
tag's markup and progrock-bar.js.
"""

from __future__ import annotations

import json
import re
import uuid
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.browser.browserkit import ms

pytestmark = pytest.mark.browser

CLIENT = "globalThis[Symbol.for('progrock.sharedClient')]"
RECORD_EVENTS = """() => {
  window.events = [];
  for (const name of ["update", "complete", "failed", "cancelled", "error"]) {
    document.addEventListener(`progrock:${name}`, (e) => window.events.push(
      [name, e.target.dataset.taskId || null, e.detail.type || e.detail.code || null]));
  }
}"""


def sockets_of(page: Any) -> list[str]:
    """The URLs of the WebSockets ``page`` opens from now on."""
    urls: list[str] = []
    page.on("websocket", lambda ws: urls.append(ws.url))
    return urls


def start_three(page: Any, stack: Any) -> Any:
    """Open /bars/, press "Start three tasks"; return the three server-started bars."""
    page.goto(stack.url + "/bars/")
    page.click("#start-three")
    bars = page.locator("#task-bars [data-progrock-bar]")
    expect(bars).to_have_count(3)
    return bars


def expect_all_succeeded(bars: Any, timeout: float = 30) -> None:
    for i in range(bars.count()):
        bar = bars.nth(i)
        expect(bar).to_have_attribute("data-status", "succeeded", timeout=ms(timeout))
        expect(bar.locator("progress")).to_have_js_property("value", 100)
        expect(bar.locator("[data-progrock-percent]")).to_have_text("100%")
        expect(bar.locator("[data-progrock-status]")).to_have_text("Complete")


def test_three_bars_reach_100_on_one_socket_without_page_script(page: Any, stack: Any) -> None:
    """Three tag-rendered bars on one page all reach 100 % over a single WebSocket, with
    no script on the page but the tag's own."""
    sockets = sockets_of(page)
    bars = start_three(page, stack)
    assert re.search(r"/bars/\?task=[0-9a-f-]{36}&task=", page.url)
    expect(bars.first).to_have_attribute("data-status", re.compile("queued|running|succeeded"))
    expect_all_succeeded(bars)
    assert len(sockets) == 1, sockets
    assert sockets[0].endswith("/prog/")
    scripts = page.evaluate(
        "[...document.scripts].map((s) => s.src ? new URL(s.src).pathname : 'inline')"
    )
    assert scripts == ["/static/progrock/progrock-bar.js"]


def test_start_button_bars_dispatch_events(page: Any, stack: Any) -> None:
    """A start-button bar starts its kind on click and dispatches bubbling progrock:update
    events and exactly one terminal event; a failing task shows its error."""
    page.goto(stack.url + "/bars/")
    page.evaluate(RECORD_EVENTS)
    rock, failing = page.locator("#start-bars [data-progrock-bar]").all()[:2]  # then Export
    expect(rock.locator("button[type=submit]")).to_be_enabled()
    rock.locator("button[type=submit]").click()
    failing.locator("button[type=submit]").click()
    expect(rock).to_have_attribute("data-status", "succeeded", timeout=ms(30))
    expect(failing).to_have_attribute("data-status", "failed", timeout=ms(30))
    expect(failing.locator("[data-progrock-outcome]")).to_be_visible()
    expect(failing.locator("[data-progrock-outcome]")).not_to_be_empty()
    rock_id = rock.get_attribute("data-task-id")
    failing_id = failing.get_attribute("data-task-id")
    events = page.evaluate("window.events")
    assert ["update", rock_id, "snapshot"] in events
    ends = [e for e in events if e[0] in ("complete", "failed", "cancelled")]
    assert sorted(ends) == sorted(
        [["complete", rock_id, "complete"], ["failed", failing_id, "failed"]]
    )
    # Finished: the button may start another run.
    expect(rock.locator("button[type=submit]")).to_be_enabled()


def test_a_start_answered_by_failed_alone_ends_the_bar(context: Any, page: Any, stack: Any) -> None:
    """A start whose first and only message is `failed` (backend unreachable, no `started`)
    ends the bar: status Failed, the error shown, the button enabled, one progrock:failed."""
    task_id = str(uuid.uuid4())

    def upgrade(ws: Any) -> None:
        server = ws.connect_to_server()

        def from_page(text: Any) -> None:
            frame = json.loads(text)
            if frame.get("action") != "start":
                server.send(text)
                return
            # What a worker sends after FAILURE_BUDGET of an unreachable backend.
            detail = "the backend did not answer"
            error = {"code": "backend_unreachable", "detail": detail}
            ws.send(
                json.dumps(
                    {
                        "type": "failed",
                        "task_id": task_id,
                        "seq": 1,
                        "progress": 0,
                        "ref": frame["ref"],
                        "error": error,
                    }
                )
            )

        ws.on_message(from_page)

    context.route_web_socket(re.compile(r"/prog/$"), upgrade)
    page.goto(stack.url + "/bars/")
    page.evaluate(RECORD_EVENTS)
    bar = page.locator("#start-bars [data-progrock-bar]").first
    bar.locator("button[type=submit]").click()
    expect(bar).to_have_attribute("data-status", "failed", timeout=ms(15))
    expect(bar.locator("[data-progrock-status]")).to_have_text("Failed")
    expect(bar.locator("[data-progrock-outcome]")).to_have_text("the backend did not answer")
    expect(bar.locator("button[type=submit]")).to_be_enabled()
    assert bar.get_attribute("data-task-id") == task_id
    ends = [e for e in page.evaluate("window.events") if e[0] == "failed"]
    assert ends == [["failed", task_id, "failed"]]


def test_cancel_button_cancels(page: Any, stack: Any) -> None:
    """The bar's cancel button cancels its task: status Cancelled, one progrock:cancelled."""
    bar = start_three(page, stack).first
    page.evaluate(RECORD_EVENTS)
    expect(bar).to_have_attribute("data-status", "running", timeout=ms(20))
    bar.locator("[data-progrock-cancel]").click()
    expect(bar).to_have_attribute("data-status", "cancelled", timeout=ms(20))
    expect(bar.locator("[data-progrock-cancel]")).to_be_hidden()
    task_id = bar.get_attribute("data-task-id")
    ends = [e for e in page.evaluate("window.events") if e[1] == task_id and e[0] != "update"]
    assert ends == [["cancelled", task_id, "cancelled"]]


def test_bad_task_id_renders_an_inert_bar(page: Any, stack: Any) -> None:
    """?task=nope renders an inert bar quoting the id; no client is created for it."""
    page.goto(stack.url + "/bars/?task=nope")
    bar = page.locator("#task-bars [data-progrock-bar]")
    expect(bar).to_have_attribute("data-status", "invalid")
    expect(bar.locator("[data-progrock-outcome]")).to_have_text(
        "task id must be a UUID, got 'nope'"
    )
    expect(bar.locator("[data-progrock-status]")).to_have_text("Unavailable")
    # The module ran (the start buttons are wired) and opened no socket for the inert bar.
    expect(page.locator("#start-bars button[type=submit]").first).to_be_enabled()
    assert page.evaluate(f"{CLIENT} === undefined") is True


def test_fallback_when_websockets_are_blocked_then_back(
    context: Any, page: Any, stack: Any
) -> None:
    """With every WebSocket upgrade refused the bars follow their tasks over an HTTP event
    stream to 100 %; once sockets work again the page switches back to one, and a task
    that runs across the switch ends exactly once."""
    blocked = {"on": True}
    refused: list[str] = []

    def upgrade(ws: Any) -> None:
        if blocked["on"]:
            refused.append(ws.url)
            ws.close(code=1011, reason="blocked by the test")
        else:
            ws.connect_to_server()

    context.route_web_socket(re.compile(r"/prog/$"), upgrade)
    follows: list[str] = []
    page.on("request", lambda r: follows.append(r.url) if "/follow/" in r.url else None)
    bars = start_three(page, stack)
    page.evaluate(RECORD_EVENTS)  # before any can end: they run for about 5 s
    page.wait_for_function(f"{CLIENT}?.state === 'fallback'", timeout=ms(15))
    assert page.evaluate(f"{CLIENT}.transport") == "http"
    assert len(refused) >= 2
    expect_all_succeeded(bars)
    # Followed over one event stream at a time (a probe first), not a request per bar.
    streams = [url for url in follows if url.endswith("&stream=1")]
    assert streams and all(url.count("task=") == 3 for url in streams), follows

    # A slow task started over HTTP, then sockets come back mid-task.
    rock = page.locator("#start-bars [data-progrock-bar]").nth(1)  # fails at 50 %
    rock.locator("button[type=submit]").click()
    expect(rock).to_have_attribute("data-status", "running", timeout=ms(15))
    blocked["on"] = False
    page.evaluate("window.dispatchEvent(new Event('online'))")  # skip the backoff
    page.wait_for_function(f"{CLIENT}.state === 'open'", timeout=ms(15))
    assert page.evaluate(f"{CLIENT}.transport") == "websocket"
    expect(rock).to_have_attribute("data-status", "failed", timeout=ms(30))
    task_id = rock.get_attribute("data-task-id")
    events = page.evaluate("window.events")
    ends = [e for e in events if e[0] in ("complete", "failed", "cancelled")]
    assert ends.count(["failed", task_id, "failed"]) == 1
    assert len(ends) == 4, ends  # three completes and one failure, each once
