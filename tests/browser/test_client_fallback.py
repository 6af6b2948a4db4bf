"""progrock.js's fallback to the HTTP API, against a scripted fake WebSocket and fetch.

No server: like test_client.py, the test drives every socket event and every
HTTP answer, so the switching rules and the delivery guarantees on the HTTP
path (ordered seq, one terminal message) are checked exactly.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.browser.browserkit import ms
from tests.browser.test_client import HARNESS, LIBRARY, ORIGIN, OTHER, TASK

pytestmark = pytest.mark.browser

FAKE_FETCH = """<script type="module">
class FakeFetch {
  constructor() {
    this.calls = [];
    this.handler = null; // (call) => answer at once, or null: leave pending
    this.fn = (url, init = {}) => new Promise((resolve, reject) => {
      const call = { url: String(url), method: init.method || "GET", headers: init.headers || {},
                     body: init.body ? JSON.parse(init.body) : null, resolve, reject,
                     aborted: false };
      init.signal?.addEventListener("abort", () => {
        call.aborted = true;
        const error = new DOMException("aborted", "AbortError");
        reject(error);
        call.streamController?.error(error);
      });
      this.calls.push(call);
      if (this.handler) this.handler(call);
    });
  }
  open() { return this.calls.filter((c) => !c.aborted && !c.answered); }
  last() { return this.open()[this.open().length - 1]; }
  stream(call) {
    // Answer with an event stream the test writes to: call.push(text), call.end().
    call.answered = true;
    const encoder = new TextEncoder();
    const body = new ReadableStream({ start: (c) => { call.streamController = c; } });
    call.push = (text) => call.streamController.enqueue(encoder.encode(text));
    call.end = () => call.streamController.close();
    call.resolve(new Response(body, { status: 200,
                                      headers: { "Content-Type": "text/event-stream" } }));
  }
  answer(call, status, body) {
    call.answered = true;
    call.resolve(new Response(JSON.stringify(body),
                              { status, headers: { "Content-Type": "application/json" } }));
  }
}
window.fakeFetch = new FakeFetch();
window.makeFallback = (options = {}) => make({
  api: "/api/", fetch: fakeFetch.fn, csrfToken: "tok", followStream: false, followPace: 0,
  ...options,
});
window.refuse = async (count = 2) => {
  // `count` sockets in a row that close before opening (an upgrade refused).
  for (let i = 0; i < count; i++) {
    await until(() => FakeSocket.instances.length > i && sock().readyState === 0, "a socket");
    sock().drop();
  }
};
window.pendingFollow = () => until(
  () => fakeFetch.last()?.url.includes("/api/follow/"), "a follow request");
window.nextFollow = async (previous) => {
  await until(() => {
    const call = fakeFetch.last();
    return call && call !== previous && call.url.includes("/api/follow/");
  }, "the next follow request");
  return fakeFetch.last();
};
window.fallbackReady = true;
</script>
"""


@pytest.fixture
def harness(context: Any, page: Any) -> Iterator[Any]:
    """The test_client.py page plus a fake fetch and helpers for the fallback."""

    def serve(route: Any) -> None:
        path = route.request.url[len(ORIGIN) :]
        if path == "/progrock.js":
            route.fulfill(body=LIBRARY.read_text(), content_type="text/javascript")
        elif path == "/":
            route.fulfill(body=HARNESS + FAKE_FETCH, content_type="text/html")
        else:
            route.fulfill(status=404, body="")

    context.route(f"{ORIGIN}/**", serve)
    page.goto(f"{ORIGIN}/")
    page.wait_for_function("window.harnessReady && window.fallbackReady", timeout=ms(10))
    yield page


def run(page: Any, body: str) -> Any:
    """Run ``body`` (an async function body with ``TASK``/``OTHER``) in the page."""
    return page.evaluate(f"async ([TASK, OTHER]) => {{ {body} }}", [TASK, OTHER])


def snapshot(seq: int, status: str = "running", progress: float = 30) -> str:
    return (
        f'{{ type: "snapshot", task_id: TASK, seq: {seq}, status: "{status}", kind: "rock", '
        f"progress: {progress}, message: null, eta_s: null, rate: null, result: null, "
        "error: null }"
    )


def test_http_follows_after_sockets_die_before_first_message(harness: Any) -> None:
    """Two refused sockets: a probe, then state "fallback" and long-polls whose news is
    applied in seq order, an older seq dropped, the terminal message delivered once."""
    result = run(
        harness,
        f"""
        const client = makeFallback();
        const handle = track(client.subscribe(TASK));
        await refuse(2);
        await pendingFollow();
        const probe = fakeFetch.last();
        const stateWhileProbing = client.state;
        fakeFetch.answer(probe, 200, {{ messages: [{snapshot(3)}] }});
        const poll1 = await nextFollow(probe);
        fakeFetch.answer(poll1, 200, {{ messages: [
          {{ type: "progress", task_id: TASK, seq: 5, progress: 50, message: "m",
             eta_s: 1, rate: 10 }},
          {{ type: "progress", task_id: TASK, seq: 4, progress: 40 }} ] }});
        const poll2 = await nextFollow(poll1);
        const end = {{ type: "complete", task_id: TASK, seq: 6, complete: true, progress: 100,
                       result: 1 }};
        fakeFetch.answer(poll2, 200, {{ messages: [end, end] }});
        await until(() => handle.done, "the end");
        await new Promise((r) => setTimeout(r, 50));  // any (wrong) further request
        return {{ stateWhileProbing, state: client.state, transport: client.transport,
                  probe: probe.url, poll1: poll1.url, poll2: poll2.url,
                  follows: fakeFetch.calls.filter((c) => c.url.includes("follow")).length,
                  log: log.filter((e) => e[0] !== "connection"),
                  states: log.filter((e) => e[0] === "connection").map((e) => e[1]) }};
        """,
    )
    assert result["stateWhileProbing"] == "reconnecting"
    assert result["probe"] == f"{ORIGIN}/api/follow/?task={TASK}&wait=0"
    assert result["poll1"] == f"{ORIGIN}/api/follow/?task={TASK}%3A3&wait=25"
    assert result["poll2"] == f"{ORIGIN}/api/follow/?task={TASK}%3A5&wait=25"
    assert result["log"] == [
        ["snapshot", 3, 30],
        ["progress", 5, 50],
        ["complete", 6, 100],
        ["end", 6, 100],
    ]
    assert result["follows"] == 3  # finished: nothing left to follow
    assert (result["state"], result["transport"]) == ("fallback", "http")
    assert "fallback" in result["states"]


def test_silent_open_sockets_count_as_dead(harness: Any) -> None:
    """A socket that opens but says nothing within firstMessageTimeout counts as a failure."""
    result = run(
        harness,
        """
        const client = makeFallback({ firstMessageTimeout: 0.05 });
        client.subscribe(TASK);
        for (let i = 0; i < 2; i++) {
          await until(() => FakeSocket.instances.length > i && sock().readyState === 0, "socket");
          sock().open();
        }
        await pendingFollow();
        return { url: fakeFetch.last().url, closed: FakeSocket.instances[0].readyState };
        """,
    )
    assert result["url"].endswith("wait=0")
    assert result["closed"] == 3


def test_requests_go_over_http_in_fallback(harness: Any) -> None:
    """In fallback, start() POSTs with the CSRF token and resolves with the task's handle,
    which is then followed; cancel() POSTs, and its refusal reaches the handle."""
    result = run(
        harness,
        f"""
        const client = makeFallback();
        await refuse(2);
        await pendingFollow();
        fakeFetch.answer(fakeFetch.last(), 200, {{ messages: [] }});
        await until(() => client.state === "fallback", "fallback");
        const promise = client.start("rock", {{ step: 5 }});
        await until(() => fakeFetch.last()?.method === "POST", "the start POST");
        const post = fakeFetch.last();
        fakeFetch.answer(post, 201, {snapshot(0, "queued", 0)});
        const handle = track(await promise);
        await pendingFollow();
        const follow = fakeFetch.last().url;
        handle.cancel();
        await until(() => fakeFetch.last()?.url.endsWith("/cancel/"), "the cancel POST");
        const cancel = fakeFetch.last();
        fakeFetch.answer(cancel, 409, {{ type: "error", code: "not_cancellable",
          detail: "task is already succeeded", action: "cancel", task_id: TASK }});
        await until(() => log.some((e) => e[0] === "error"), "the handle's error");
        return {{ post: [post.url, post.body, post.headers["X-CSRFToken"]], id: handle.id,
                  status: handle.status, follow,
                  cancel: [cancel.url, cancel.headers["X-CSRFToken"]],
                  log: log.filter((e) => e[0] !== "connection") }};
        """,
    )
    assert result["post"] == [
        f"{ORIGIN}/api/tasks/",
        {"kind": "rock", "params": {"step": 5}},
        "tok",
    ]
    assert (result["id"], result["status"]) == (TASK, "queued")
    assert result["follow"] == f"{ORIGIN}/api/follow/?task={TASK}%3A0&wait=25"
    assert result["cancel"] == [f"{ORIGIN}/api/tasks/{TASK}/cancel/", "tok"]
    assert ["error", "not_cancellable", None] in result["log"]


def test_server_down_is_reconnecting_and_requests_wait(harness: Any) -> None:
    """When HTTP fails too (server down) the state stays "reconnecting", no error is
    raised, and a start waits in the queue; the first socket that speaks gets it."""
    result = run(
        harness,
        """
        fakeFetch.handler = (call) => call.reject(new TypeError("Failed to fetch"));
        const client = makeFallback();
        await refuse(2);
        await until(() => fakeFetch.calls.length >= 2, "two probes");
        const promise = client.start("rock");
        await new Promise((r) => setTimeout(r, 50));
        const posts = fakeFetch.calls.filter((c) => c.method === "POST").length;
        const stateDown = client.state;
        await until(() => sock().readyState === 0, "a socket attempt");
        sock().open();
        sock().deliver({ accept: true });
        const sent = sock().sent;
        return { posts, stateDown, state: client.state, transport: client.transport,
                 sent: sent.map((f) => f.action),
                 errors: log.filter((e) => e[0] === "client-error") };
        """,
    )
    assert result["posts"] == 0
    assert result["stateDown"] == "reconnecting"
    assert result["errors"] == []
    assert (result["state"], result["transport"]) == ("open", "websocket")
    assert result["sent"] == ["start"]


def test_first_socket_that_speaks_ends_the_fallback(harness: Any) -> None:
    """A socket that opens in fallback takes over at its first message: the long-poll is
    aborted, tasks are re-subscribed, and a stale snapshot cannot move a task back."""
    result = run(
        harness,
        f"""
        const client = makeFallback();
        const handle = track(client.subscribe(TASK));
        await refuse(2);
        await pendingFollow();
        fakeFetch.answer(fakeFetch.last(), 200, {{ messages: [{snapshot(3)}] }});
        await until(() => fakeFetch.last()?.url.includes("%3A3"), "a long-poll");
        const poll = fakeFetch.last();
        await until(() => sock().readyState === 0, "a socket attempt");
        sock().open();
        const stateAtOpen = client.state;
        const sentAtOpen = sock().sent.length;
        sock().deliver({{ accept: true }});
        sock().deliver({snapshot(2, "running", 20)});
        sock().deliver({{ type: "progress", task_id: TASK, seq: 4, progress: 45 }});
        return {{ stateAtOpen, sentAtOpen, aborted: poll.aborted, state: client.state,
                  transport: client.transport, sent: sock().sent, progress: handle.progress,
                  log: log.filter((e) => e[0] !== "connection") }};
        """,
    )
    assert (result["stateAtOpen"], result["sentAtOpen"]) == ("fallback", 0)
    assert result["aborted"] is True
    assert (result["state"], result["transport"]) == ("open", "websocket")
    assert result["sent"] == [{"action": "subscribe", "task_id": TASK}]
    assert result["log"] == [["snapshot", 3, 30], ["progress", 4, 45]]
    assert result["progress"] == 45


def test_forbidden_task_is_dropped_from_the_follow(harness: Any) -> None:
    """A forbidden error over HTTP reaches the handle and stops following that task."""
    result = run(
        harness,
        """
        const client = makeFallback();
        track(client.subscribe(TASK));
        client.subscribe(OTHER);
        await refuse(2);
        await pendingFollow();
        fakeFetch.answer(fakeFetch.last(), 200, { messages: [
          { type: "error", code: "forbidden", detail: "no task", action: "subscribe",
            task_id: TASK }] });
        await until(() => fakeFetch.last()?.url.includes("wait=25"), "a long-poll");
        return { url: fakeFetch.last().url, log: log.filter((e) => e[0] !== "connection") };
        """,
    )
    assert TASK not in result["url"] and OTHER in result["url"]
    assert result["log"] == [["error", "forbidden", None]]


def test_stream_follows_in_fallback(harness: Any) -> None:
    """With streams on, the live fallback opens one event stream whose events (split
    across chunks) are applied in seq order, an older seq dropped, the end once."""
    result = run(
        harness,
        f"""
        const client = makeFallback({{ followStream: true }});
        const handle = track(client.subscribe(TASK));
        await refuse(2);
        await pendingFollow();
        const probe = fakeFetch.last();
        fakeFetch.answer(probe, 200, {{ messages: [{snapshot(3)}] }});
        const stream = await nextFollow(probe);
        fakeFetch.stream(stream);
        stream.push(": ready\\n\\n");
        const progress = JSON.stringify({{ type: "progress", task_id: TASK, seq: 5,
                                           progress: 50, message: "m", eta_s: 1, rate: 10 }});
        stream.push("data: " + progress.slice(0, 20));
        stream.push(progress.slice(20) + "\\n\\n");
        stream.push("data: " + JSON.stringify({{ type: "progress", task_id: TASK, seq: 4,
                                                 progress: 40 }}) + "\\n\\n");
        const end = JSON.stringify({{ type: "complete", task_id: TASK, seq: 6, complete: true,
                                      progress: 100, result: 1 }});
        stream.push(`data: ${{end}}\\n\\ndata: ${{end}}\\n\\n`);
        stream.end();
        await until(() => handle.done, "the end");
        await new Promise((r) => setTimeout(r, 50));  // any (wrong) further request
        return {{ url: stream.url, accept: stream.headers.Accept,
                  follows: fakeFetch.calls.filter((c) => c.url.includes("follow")).length,
                  state: client.state, log: log.filter((e) => e[0] !== "connection") }};
        """,
    )
    assert result["url"] == f"{ORIGIN}/api/follow/?task={TASK}%3A3&wait=25&stream=1"
    assert result["accept"] == "text/event-stream"
    assert result["log"] == [
        ["snapshot", 3, 30],
        ["progress", 5, 50],
        ["complete", 6, 100],
        ["end", 6, 100],
    ]
    assert result["follows"] == 2
    assert result["state"] == "fallback"


def test_buffered_stream_turns_to_long_polls(harness: Any) -> None:
    """A stream whose first bytes do not come within streamTimeout (a buffering proxy)
    is dropped for long-polls, for good."""
    result = run(
        harness,
        f"""
        const client = makeFallback({{ followStream: true, streamTimeout: 0.1 }});
        client.subscribe(TASK);
        await refuse(2);
        await pendingFollow();
        const probe = fakeFetch.last();
        fakeFetch.answer(probe, 200, {{ messages: [{snapshot(3)}] }});
        const stream = await nextFollow(probe);
        fakeFetch.stream(stream);  // headers, then nothing
        const poll = await nextFollow(stream);
        fakeFetch.answer(poll, 200, {{ messages: [] }});
        const next = await nextFollow(poll);
        return {{ stream: stream.url, aborted: stream.aborted, poll: poll.url, next: next.url }};
        """,
    )
    assert result["stream"].endswith("&stream=1")
    assert result["aborted"] is True
    assert result["poll"] == f"{ORIGIN}/api/follow/?task={TASK}%3A3&wait=25"
    assert result["next"] == result["poll"]


def test_long_polls_are_paced(harness: Any) -> None:
    """With followPace, the next long-poll waits that long after the previous one started."""
    result = run(
        harness,
        f"""
        const client = makeFallback({{ followPace: 1 }});
        client.subscribe(TASK);
        await refuse(2);
        await pendingFollow();
        const probe = fakeFetch.last();
        fakeFetch.answer(probe, 200, {{ messages: [{snapshot(3)}] }});
        const first = await nextFollow(probe);
        fakeFetch.answer(first, 200, {{ messages: [
          {{ type: "progress", task_id: TASK, seq: 4, progress: 40 }}] }});
        await new Promise((r) => setTimeout(r, 100));
        const earlyCount = fakeFetch.calls.length;
        const second = await nextFollow(first);
        return {{ earlyCount, firstIndex: fakeFetch.calls.indexOf(first), second: second.url }};
        """,
    )
    assert result["earlyCount"] == result["firstIndex"] + 1  # nothing asked within 100 ms
    assert result["second"].endswith("%3A4&wait=25")


def test_sockets_closed_for_a_restart_never_lead_to_the_fallback(harness: Any) -> None:
    """Sockets closed with 1012 (service restart) before their first message, as by a
    web process that is stopping, are not failures: the client keeps reconnecting
    over WebSocket, asks nothing over HTTP, and re-subscribes on the socket that works."""
    result = run(
        harness,
        """
        const client = makeFallback();
        track(client.subscribe(TASK));
        for (let i = 0; i < 4; i++) {
          await until(() => FakeSocket.instances.length > i && sock().readyState === 0,
                      "a socket");
          const s = sock();
          s.open();
          s.readyState = 3;
          s.onclose({ code: 1012, reason: "server restarting; reconnect" });
        }
        await until(() => FakeSocket.instances.length > 4, "a fifth socket");
        sock().open();
        sock().deliver({ accept: true });
        return { fetches: fakeFetch.calls.length, state: client.state,
                 transport: client.transport, sent: sock().sent };
        """,
    )
    assert result["fetches"] == 0
    assert (result["state"], result["transport"]) == ("open", "websocket")
    assert result["sent"] == [{"action": "subscribe", "task_id": TASK}]
