"""progrock.js against a scripted fake WebSocket, in a real Chromium.

No server: the page and the module are served by Playwright's request
interception, and the socket is a fake the test drives message by message, so
every protocol rule of the client (seq, snapshots, reconnects) is checked
exactly.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.browser.browserkit import ROOT, ms

pytestmark = pytest.mark.browser

ORIGIN = "http://127.0.0.1:9"
LIBRARY = ROOT / "src" / "progrock" / "static" / "progrock" / "progrock.js"
HARNESS = """<!doctype html>
<script type="module">
import * as lib from "/progrock.js";

class FakeSocket {
  static instances = [];
  constructor(url) {
    this.url = url;
    this.sent = [];
    this.readyState = 0;
    FakeSocket.instances.push(this);
  }
  send(text) {
    if (this.readyState !== 1) throw new Error("send() on a socket that is not open");
    this.sent.push(JSON.parse(text));
  }
  close() { this.readyState = 3; }
  // Driven by the tests:
  open() { this.readyState = 1; this.onopen({}); }
  deliver(message) { this.onmessage({ data: JSON.stringify(message) }); }
  drop() { this.readyState = 3; this.onclose({ code: 1006 }); }
}

window.lib = lib;
window.FakeSocket = FakeSocket;
window.log = [];
window.make = (options = {}) => {
  const client = new lib.ProgRock({
    url: "/prog/", WebSocket: FakeSocket, backoff: { initial: 0.01, max: 0.02 },
    onConnectionChange: (state) => log.push(["connection", state]), ...options,
  });
  client.on("error", (error) => log.push(["client-error", error.code]));
  return client;
};
window.sock = () => FakeSocket.instances[FakeSocket.instances.length - 1];
window.track = (handle) => {
  for (const event of ["started", "progress", "complete", "failed", "cancelled",
                       "snapshot", "error", "end"]) {
    handle.on(event, (m) => log.push([event, m.seq ?? m.code ?? null, m.progress ?? null]));
  }
  return handle;
};
window.until = async (predicate, what) => {
  const deadline = performance.now() + 5000;
  while (!predicate()) {
    if (performance.now() > deadline) throw new Error("timed out waiting for " + what);
    await new Promise((r) => setTimeout(r, 5));
  }
};
window.harnessReady = true;
</script>
"""
TASK = "7d0e8a52-3c1b-4f6e-9a1d-2b5c6d7e8f90"
OTHER = "0b7f0c1e-8d2a-4c3b-9e4f-5a6b7c8d9e0f"


@pytest.fixture
def harness(context: Any, page: Any) -> Iterator[Any]:
    """A page with progrock.js loaded and a fake WebSocket to drive."""

    def serve(route: Any) -> None:
        path = route.request.url[len(ORIGIN) :]
        if path == "/progrock.js":
            route.fulfill(body=LIBRARY.read_text(), content_type="text/javascript")
        elif path == "/":
            route.fulfill(body=HARNESS, content_type="text/html")
        else:
            route.fulfill(status=404, body="")

    context.route(f"{ORIGIN}/**", serve)
    page.goto(f"{ORIGIN}/")
    page.wait_for_function("window.harnessReady === true", timeout=ms(10))
    yield page


def run(page: Any, body: str, arg: Any = None) -> Any:
    """Run ``body`` (an async function body with ``TASK``/``OTHER``/``arg``) in the page."""
    script = f"async ([TASK, OTHER, arg]) => {{ {body} }}"
    return page.evaluate(script, [TASK, OTHER, arg])


def test_start_matches_started_by_ref(harness: Any) -> None:
    """start() sends kind, params and a generated ref, and resolves on the matching started."""
    result = run(
        harness,
        """
        const client = make();
        sock().open();
        const promise = client.start("rock", { step: 5 });
        const sent = sock().sent[0];
        sock().deliver({ type: "started", task_id: OTHER, seq: 1, kind: "rock",
                         status: "running", progress: 0, ref: "someone-else" });
        sock().deliver({ type: "started", task_id: TASK, seq: 1, kind: "rock",
                         status: "running", progress: 0, ref: sent.ref });
        const handle = await promise;
        return { sent, id: handle.id, status: handle.status, kind: handle.kind };
        """,
    )
    assert result["sent"]["action"] == "start"
    assert result["sent"]["kind"] == "rock"
    assert result["sent"]["params"] == {"step": 5}
    assert isinstance(result["sent"]["ref"], str) and result["sent"]["ref"]
    assert result["id"] == TASK
    assert result["status"] == "running"
    assert result["kind"] == "rock"


def test_start_of_a_queued_job_resolves_on_its_queued_snapshot(harness: Any) -> None:
    """A task queue's job not begun: start() resolves on the snapshot echoing its ref
    (status queued, not running); the later started moves the handle to running."""
    result = run(
        harness,
        """
        const client = make();
        sock().open();
        const promise = client.start("export", { rows: 5 });
        const ref = sock().sent[0].ref;
        sock().deliver({ type: "snapshot", task_id: OTHER, seq: 0, kind: "export",
                         status: "queued", progress: 0, ref: "someone-else" });
        sock().deliver({ type: "snapshot", task_id: TASK, seq: 0, kind: "export",
                         status: "queued", progress: 0, ref });
        const handle = track(await promise);
        const queued = handle.status;
        sock().deliver({ type: "started", task_id: TASK, seq: 1, kind: "export",
                         status: "running", progress: 0 });
        return { id: handle.id, queued, status: handle.status, log,
                 others: client.tasks.has(OTHER) };
        """,
    )
    assert (result["id"], result["queued"], result["status"]) == (TASK, "queued", "running")
    assert ["started", 1, 0] in result["log"]
    assert result["others"] is False


def test_progress_zero_is_a_value(harness: Any) -> None:
    """A progress of 0 is applied and reported (the 2017 `if (data.progress)` bug is fixed)."""
    result = run(
        harness,
        """
        const client = make();
        sock().open();
        const handle = track(client.subscribe(TASK));
        sock().deliver({ type: "snapshot", task_id: TASK, seq: 3, status: "running",
                         kind: "rock", progress: 40, message: "x", eta_s: 2, rate: 10 });
        handle.progress = 55;  // stale local value the next message must overwrite
        sock().deliver({ type: "progress", task_id: TASK, seq: 4, progress: 0,
                         message: null, eta_s: null, rate: null });
        return { progress: handle.progress, log };
        """,
    )
    assert result["progress"] == 0
    assert ["progress", 4, 0] in result["log"]


def test_duplicates_are_dropped(harness: Any) -> None:
    """A message whose seq was already applied fires no event a second time."""
    result = run(
        harness,
        """
        const client = make();
        sock().open();
        const p = client.start("rock");
        const ref = sock().sent[0].ref;
        const started = { type: "started", task_id: TASK, seq: 1, kind: "rock",
                          status: "running", progress: 0, ref };
        sock().deliver(started);
        track(await p);
        const progress = { type: "progress", task_id: TASK, seq: 2, progress: 9,
                           message: null, eta_s: null, rate: null };
        sock().deliver(progress);
        sock().deliver(progress);
        sock().deliver({ ...started, ref: undefined });
        sock().deliver({ type: "complete", task_id: TASK, seq: 3, complete: true,
                         progress: 100, result: null });
        sock().deliver({ type: "complete", task_id: TASK, seq: 3, complete: true,
                         progress: 100, result: null });
        sock().deliver({ type: "progress", task_id: TASK, seq: 4, progress: 100 });
        return log.filter((e) => e[0] !== "connection");
        """,
    )
    assert result == [["progress", 2, 9], ["complete", 3, 100], ["end", 3, 100]]


def test_terminal_after_snapshot_is_delivered_once(harness: Any) -> None:
    """Subscribing to a finished task: its snapshot, then its terminal message with the
    same seq, delivered exactly once."""
    result = run(
        harness,
        """
        const client = make();
        sock().open();
        const handle = track(client.subscribe(TASK));
        const snapshot = { type: "snapshot", task_id: TASK, seq: 35, status: "succeeded",
                           kind: "rock", progress: 100, message: null, eta_s: null, rate: null,
                           result: { riffs: 34 }, error: null };
        const complete = { type: "complete", task_id: TASK, seq: 35, complete: true,
                           progress: 100, result: { riffs: 34 } };
        sock().deliver(snapshot);
        sock().deliver(complete);
        sock().deliver(complete);
        return { log: log.filter((e) => e[0] !== "connection"), done: handle.done,
                 status: handle.status, result: handle.result };
        """,
    )
    assert result["log"] == [["snapshot", 35, 100], ["complete", 35, 100], ["end", 35, 100]]
    assert result["done"] is True
    assert result["status"] == "succeeded"
    assert result["result"] == {"riffs": 34}


def test_gap_triggers_resubscribe(harness: Any) -> None:
    """A jump in seq applies the newer message and asks for a snapshot once."""
    result = run(
        harness,
        """
        const client = make();
        sock().open();
        const handle = track(client.subscribe(TASK));
        sock().deliver({ type: "snapshot", task_id: TASK, seq: 2, status: "running",
                         kind: "rock", progress: 3 });
        sock().deliver({ type: "progress", task_id: TASK, seq: 5, progress: 12 });
        sock().deliver({ type: "progress", task_id: TASK, seq: 7, progress: 18 });
        return { sent: sock().sent, progress: handle.progress };
        """,
    )
    subscribes = [m for m in result["sent"] if m["action"] == "subscribe"]
    assert subscribes == [{"action": "subscribe", "task_id": TASK}] * 2
    assert result["progress"] == 18


def test_messages_are_queued_until_open(harness: Any) -> None:
    """start, cancel, list and subscribe issued before the socket opens are sent on open."""
    result = run(
        harness,
        """
        const client = make();
        client.start("hash", { mb: 1 });
        client.cancel(OTHER);
        client.list();
        client.subscribe(TASK);
        const before = sock().sent.length;
        sock().open();
        return { before, sent: sock().sent.map((m) => m.action) };
        """,
    )
    assert result["before"] == 0
    assert sorted(result["sent"]) == ["cancel", "list", "start", "subscribe"]


def test_reconnect_resubscribes_unfinished_tasks(harness: Any) -> None:
    """After a drop the client reconnects, re-subscribes only unfinished tasks and
    applies their snapshots."""
    result = run(
        harness,
        """
        const client = make();
        sock().open();
        const running = track(client.subscribe(TASK));
        const finished = client.subscribe(OTHER);
        sock().deliver({ type: "snapshot", task_id: TASK, seq: 4, status: "running",
                         kind: "rock", progress: 9 });
        sock().deliver({ type: "snapshot", task_id: OTHER, seq: 9, status: "cancelled",
                         kind: "rock", progress: 20 });
        sock().deliver({ type: "cancelled", task_id: OTHER, seq: 9, progress: 20 });
        const first = sock();
        first.drop();
        await until(() => sock() !== first, "a new socket");
        sock().open();
        const resent = sock().sent;
        sock().deliver({ type: "snapshot", task_id: TASK, seq: 20, status: "running",
                         kind: "rock", progress: 57 });
        sock().deliver({ type: "progress", task_id: TASK, seq: 21, progress: 60 });
        return { resent, progress: running.progress, seq: running.seq,
                 states: log.filter((e) => e[0] === "connection").map((e) => e[1]),
                 finishedDone: finished.done };
        """,
    )
    assert result["resent"] == [{"action": "subscribe", "task_id": TASK}]
    assert result["progress"] == 60
    assert result["seq"] == 21
    assert result["finishedDone"] is True
    assert result["states"] == ["connecting", "open", "reconnecting", "open"]


def test_start_in_flight_fails_on_drop(harness: Any) -> None:
    """A start sent on a socket that drops before "started" rejects with connection_lost."""
    code = run(
        harness,
        """
        const client = make();
        sock().open();
        const promise = client.start("rock");
        sock().drop();
        try { await promise; return "resolved"; } catch (error) { return error.code; }
        """,
    )
    assert code == "connection_lost"


def test_server_errors_reach_promise_handle_and_client(harness: Any) -> None:
    """An error with our ref rejects start(); one with a task id goes to that handle;
    anything else to the client's "error" listeners."""
    result = run(
        harness,
        """
        const client = make();
        sock().open();
        const promise = client.start("nope");
        const ref = sock().sent[0].ref;
        sock().deliver({ type: "error", code: "unknown_kind", detail: "unknown kind 'nope'",
                         action: "start", ref });
        let startCode;
        try { await promise; } catch (error) { startCode = error.code; }
        const handle = track(client.subscribe(TASK));
        sock().deliver({ type: "error", code: "forbidden", detail: "no such task",
                         action: "subscribe", task_id: TASK });
        sock().deliver({ type: "error", code: "bad_json", detail: "not JSON" });
        const first = sock();
        first.drop();
        await until(() => sock() !== first, "a new socket");
        sock().open();
        return { startCode, log: log.filter((e) => e[0] !== "connection"),
                 resent: sock().sent };
        """,
    )
    assert result["startCode"] == "unknown_kind"
    assert result["log"] == [["error", "forbidden", None], ["client-error", "bad_json"]]
    assert result["resent"] == []  # a forbidden task is not re-subscribed


def test_list_resolves_with_snapshots(harness: Any) -> None:
    """list() resolves with the tasks array of the "tasks" reply."""
    result = run(
        harness,
        """
        const client = make();
        sock().open();
        const a = client.list();
        const b = client.list();
        const sent = sock().sent.length;
        sock().deliver({ type: "tasks", tasks: [{ type: "snapshot", task_id: TASK, seq: 2 }] });
        return { sent, a: await a, b: await b };
        """,
    )
    assert result["sent"] == 1
    assert result["a"] == result["b"] == [{"type": "snapshot", "task_id": TASK, "seq": 2}]


def test_backoff_is_capped_and_jittered(harness: Any) -> None:
    """Reconnect delays grow by the factor up to the cap, and jitter only shortens them."""
    result = run(
        harness,
        """
        const opts = { initial: 0.5, max: 30, factor: 1.618, jitter: 1 };
        const ceilings = [0, 1, 2, 10, 50].map((n) => lib.backoffDelay(n, opts, () => 0));
        const jittered = lib.backoffDelay(3, opts, () => 0.999);
        const half = lib.backoffDelay(0, { ...opts, jitter: 0.5 }, () => 1);
        return { ceilings, jittered, half };
        """,
    )
    assert result["ceilings"][:3] == pytest.approx([0.5, 0.809, 1.309], rel=1e-3)
    assert result["ceilings"][3] == pytest.approx(30)  # 0.5 * 1.618**10 = 61.4, capped
    assert result["ceilings"][4] == pytest.approx(30)
    assert 0 <= result["jittered"] < 0.01
    assert result["half"] == pytest.approx(0.25)


def test_websocket_url_follows_page_scheme(harness: Any) -> None:
    """A path becomes ws:// on http pages and wss:// on https pages; ws URLs pass through."""
    result = run(
        harness,
        """
        const u = lib.websocketUrl;
        return [
          u("/prog/", { href: "http://example.test:8000/x/" }),
          u("/prog/", { href: "https://example.test/" }),
          u("wss://other.test/prog/", { href: "http://example.test/" }),
        ];
        """,
    )
    assert result == [
        "ws://example.test:8000/prog/",
        "wss://example.test/prog/",
        "wss://other.test/prog/",
    ]


def test_close_rejects_pending_and_stops_reconnecting(harness: Any) -> None:
    """close() rejects pending requests with "closed" and opens no new socket."""
    result = run(
        harness,
        """
        const client = make();
        sock().open();
        const start = client.start("rock").catch((e) => e.code);
        const list = client.list().catch((e) => e.code);
        client.close();
        const count = FakeSocket.instances.length;
        await new Promise((r) => setTimeout(r, 100));  // several backoff periods
        return { start: await start, list: await list, state: client.state,
                 sockets: FakeSocket.instances.length - count };
        """,
    )
    assert result == {"start": "closed", "list": "closed", "state": "closed", "sockets": 0}


def test_late_end_listener_and_finished_promise(harness: Any) -> None:
    """A listener added after the task ended still gets the outcome, and finished()
    rejects with the failure code."""
    result = run(
        harness,
        """
        const client = make();
        sock().open();
        const handle = client.subscribe(TASK);
        sock().deliver({ type: "failed", task_id: TASK, seq: 8, progress: 30,
                         error: { code: "backend_failed", detail: "boom" } });
        const late = await new Promise((resolve) => handle.on("end", (m) => resolve(m.type)));
        const code = await handle.finished().then(() => "resolved", (e) => e.code);
        return { late, code, error: handle.error };
        """,
    )
    assert result == {
        "late": "failed",
        "code": "backend_failed",
        "error": {"code": "backend_failed", "detail": "boom"},
    }
