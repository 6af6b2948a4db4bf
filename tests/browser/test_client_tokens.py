"""progrock.js with a token, against the scripted fake WebSocket and fetch of
test_client_fallback.py: the auth message goes first, HTTP requests carry the
token, and a refused token (close 4401) is never retried as it is."""

from __future__ import annotations

from typing import Any

import pytest

from tests.browser.test_client_fallback import harness, run, snapshot

pytestmark = pytest.mark.browser

__all__ = ["harness"]

REFUSE = """
const refuse4401 = (s) => {
  s.deliver({ type: "error", code: "unauthenticated", action: "auth",
              detail: "token refused: unknown DRF token" });
  s.readyState = 3;
  s.onclose({ code: 4401, reason: "token refused: unknown DRF token" });
};
"""


def test_the_auth_message_goes_before_anything_else(harness: Any) -> None:
    """A start and a subscribe asked before the socket opens go out after the auth
    message, even when the token comes from an async function."""
    result = run(
        harness,
        """
        const client = make({ token: async () => "tok-1" });
        client.subscribe(TASK);
        const promise = client.start("rock");
        sock().open();
        await until(() => sock().sent.length >= 3, "three frames");
        return sock().sent.map((f) => f.action + (f.token ? ":" + f.token : ""));
        """,
    )
    assert result == ["auth:tok-1", "subscribe", "start"]


def test_a_refused_string_token_closes_the_client(harness: Any) -> None:
    """Close 4401 with a string token: the start rejects unauthenticated, the client
    closes, and no socket is opened again (the same token would be refused)."""
    result = run(
        harness,
        REFUSE
        + """
        const client = make({ token: "bad" });
        const promise = client.start("rock").then(() => "resolved", (e) => e.code);
        sock().open();
        refuse4401(sock());
        const outcome = await promise;
        await new Promise((r) => setTimeout(r, 100));  // any (wrong) reconnect
        return { outcome, state: client.state, sockets: FakeSocket.instances.length,
                 errors: log.filter((e) => e[0] === "client-error").map((e) => e[1]) };
        """,
    )
    assert result == {
        "outcome": "unauthenticated",
        "state": "closed",
        "sockets": 1,
        "errors": ["unauthenticated"],
    }


def test_a_token_function_is_asked_again_after_4401(harness: Any) -> None:
    """With a function, a 4401 is a reconnect: the next socket sends a fresh token."""
    result = run(
        harness,
        REFUSE
        + """
        let n = 0;
        const client = make({ token: () => `tok-${++n}` });
        client.subscribe(TASK);
        sock().open();
        refuse4401(sock());
        await until(() => FakeSocket.instances.length === 2, "a second socket");
        sock().open();
        await until(() => sock().sent.length >= 2, "auth and subscribe");
        return { sent: sock().sent.map((f) => f.token || f.action), state: client.state };
        """,
    )
    assert result == {"sent": ["tok-2", "subscribe"], "state": "open"}


def test_http_requests_carry_the_token_and_no_csrf_header(harness: Any) -> None:
    """In fallback, follow and start requests send Authorization: Bearer <token> (from the
    function, at each request) and no X-CSRFToken."""
    result = run(
        harness,
        f"""
        let n = 0;
        const client = makeFallback({{ token: () => `tok-${{++n}}` }});
        await refuse(2);
        await pendingFollow();
        const probe = fakeFetch.last();
        fakeFetch.answer(probe, 200, {{ messages: [] }});
        await until(() => client.state === "fallback", "fallback");
        const promise = client.start("rock");
        await until(() => fakeFetch.last()?.method === "POST", "the start POST");
        const post = fakeFetch.last();
        fakeFetch.answer(post, 201, {snapshot(0, "queued", 0)});
        await promise;
        return {{ probe: probe.headers, post: post.headers }};
        """,
    )
    assert result["probe"]["Authorization"] == "Bearer tok-1"
    assert result["post"]["Authorization"].startswith("Bearer tok-")
    assert result["post"]["Authorization"] != "Bearer tok-1"  # asked again
    assert "X-CSRFToken" not in result["post"] and "X-CSRFToken" not in result["probe"]


def test_the_tag_s_data_progrock_token_is_used(harness: Any) -> None:
    """A script tag's data-progrock-token ({% progrock_script token=... %}) is the default
    token; an explicit option wins over it."""
    result = run(
        harness,
        """
        const tag = document.createElement("script");
        tag.dataset.progrockToken = "tok-tag";
        document.head.append(tag);
        make();
        sock().open();
        await until(() => sock().sent.length > 0, "the tag's auth");
        const fromTag = sock().sent[0];
        make({ token: "tok-option" });
        sock().open();
        await until(() => sock().sent.length > 0, "the option's auth");
        return [fromTag, sock().sent[0]];
        """,
    )
    assert result == [
        {"action": "auth", "token": "tok-tag"},
        {"action": "auth", "token": "tok-option"},
    ]
