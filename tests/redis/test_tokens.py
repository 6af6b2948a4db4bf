"""Token authentication on the socket and the HTTP API, over a real Redis and database:
a good token owns its user's tasks, a bad one is refused (4401, 401), never anonymous."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.layers import channel_layers
from channels.testing import WebsocketCommunicator
from django.contrib.auth import get_user_model
from django.core import signing
from django.db import DatabaseError
from django.test import Client, override_settings

from progrock import auth
from progrock.api import astart_task
from progrock.models import Task
from progrock.web.consumer import ProgressConsumer
from progrock.web.fanout import get_hub
from tests.conftest import Beating

pytestmark = [pytest.mark.redis, pytest.mark.django_db(transaction=True)]

AUTHENTICATORS = ["progrock.auth.DRFTokenAuthenticator", "progrock.auth.SignedTokenAuthenticator"]
TASKS = "/prog/api/tasks/"


def _layers(url: str) -> dict[str, Any]:
    return {
        "default": {
            "BACKEND": "progrock.contrib.layer.RedisChannelLayer",
            "CONFIG": {"hosts": [url]},
        }
    }


@pytest.fixture
def wired(redis_url: str, live_processes: Beating) -> Iterator[str]:
    settings = {"REDIS_URL": redis_url, "AUTHENTICATORS": AUTHENTICATORS}
    with override_settings(PROGROCK=settings, CHANNEL_LAYERS=_layers(redis_url)):
        channel_layers.backends.clear()
        yield redis_url
    channel_layers.backends.clear()


@pytest.fixture
async def hub(wired: str) -> AsyncIterator[Any]:
    running = get_hub()
    yield running
    await running.aclose()


@pytest.fixture
def user(wired: str) -> Any:
    return get_user_model().objects.create_user("ada", password="x")


@pytest.fixture
async def auser(wired: str) -> Any:
    return await sync_to_async(get_user_model().objects.create_user)("ada", password="x")


def drf_key(user: Any) -> str:
    from rest_framework.authtoken.models import Token

    return str(Token.objects.create(user=user).key)


def expired_token(user: Any, monkeypatch: pytest.MonkeyPatch) -> str:
    """A signed token issued ten minutes ago (max age five): no sleeping."""
    then = signing.b62_encode(int(time.time()) - 600)
    with monkeypatch.context() as patch:
        patch.setattr(signing.TimestampSigner, "timestamp", lambda self: then)
        return auth.issue_token(user)


async def opened(
    path: str = "/prog/", subprotocols: list[str] | None = None, *, greeted: bool = True
) -> Any:
    socket = WebsocketCommunicator(ProgressConsumer.as_asgi(), path, subprotocols=subprotocols)
    socket.scope["client"] = ["203.0.113.5", 40_000]
    connected, chosen = await socket.connect()
    assert connected
    if greeted:  # a socket refused in its handshake gets the error instead
        assert json.loads(await socket.receive_from()) == {"accept": True}
    socket.chosen = chosen
    return socket


async def ask(socket: Any, message: dict[str, Any]) -> dict[str, Any]:
    await socket.send_to(text_data=json.dumps(message))
    answer: dict[str, Any] = json.loads(await socket.receive_from(timeout=10))
    return answer


async def refused(socket: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """The error frame and the close message of a socket whose token was refused."""
    error = json.loads(await socket.receive_from(timeout=10))
    closing = await socket.receive_output(timeout=10)
    return error, closing


# -- the socket ----------------------------------------------------------------


async def test_an_auth_first_message_owns_the_user_s_tasks(hub: Any, auser: Any) -> None:
    """After {"action": "auth"} with a signed token the socket sees the user's tasks (as
    that user's session would); the same socket without it sees none."""
    task_id = await astart_task("rock", owner=f"user:{auser.pk}", push=True)
    token = auth.issue_token(auser)
    anonymous = await opened()
    assert (await ask(anonymous, {"action": "subscribe", "task_id": task_id}))["code"] == (
        "forbidden"
    )
    await anonymous.disconnect()
    socket = await opened()
    await socket.send_to(text_data=json.dumps({"action": "auth", "token": token}))
    listed = await ask(socket, {"action": "list"})
    assert [t["task_id"] for t in listed["tasks"]] == [task_id]
    snapshot = await ask(socket, {"action": "subscribe", "task_id": task_id})
    assert (snapshot["type"], snapshot["task_id"]) == ("snapshot", task_id)
    await socket.disconnect()


async def test_a_subprotocol_token_is_accepted_as_progrock_token(hub: Any, auser: Any) -> None:
    """Sec-WebSocket-Protocol "progrock.token, <DRF key>": accepted with the subprotocol
    progrock.token (never the token), and the socket owns the user's tasks."""
    task_id = await astart_task("rock", owner=f"user:{auser.pk}", push=True)
    key = await sync_to_async(drf_key)(auser)
    socket = await opened(subprotocols=["progrock.token", key])
    assert socket.chosen == "progrock.token"
    snapshot = await ask(socket, {"action": "subscribe", "task_id": task_id})
    assert snapshot["type"] == "snapshot"
    await socket.disconnect()


@pytest.mark.parametrize("how", ["message", "subprotocol"])
async def test_a_made_up_token_closes_4401_with_the_reason(hub: Any, how: str) -> None:
    """An unknown token, by message or header: error unauthenticated, then close 4401
    with the reason; the token is not quoted."""
    if how == "message":
        socket = await opened()
        await socket.send_to(text_data=json.dumps({"action": "auth", "token": "made-up"}))
    else:
        socket = await opened(subprotocols=["progrock.token", "made-up"], greeted=False)
        assert socket.chosen == "progrock.token"  # accepted, so the close code reaches it
    error, closing = await refused(socket)
    assert (error["code"], error["action"]) == ("unauthenticated", "auth")
    assert error["detail"] == "token refused: unknown DRF token; not a signed token of this server"
    assert closing == {"type": "websocket.close", "code": 4401, "reason": error["detail"]}
    assert "made-up" not in error["detail"]


async def test_an_expired_token_closes_4401(
    hub: Any, auser: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A signed token older than its max age: 4401, the reason saying it expired."""
    token = await sync_to_async(expired_token)(auser, monkeypatch)
    socket = await opened()
    await socket.send_to(text_data=json.dumps({"action": "auth", "token": token}))
    error, closing = await refused(socket)
    assert "signed token expired (valid for 300 s)" in error["detail"]
    assert closing["code"] == 4401


async def test_after_a_refused_token_nothing_is_served(hub: Any, auser: Any) -> None:
    """Frames already in flight behind a refused auth are not served (no anonymous owner)."""
    await astart_task("rock", owner="anyone", push=True)
    socket = await opened()
    await socket.send_to(text_data=json.dumps({"action": "auth", "token": "made-up"}))
    await socket.send_to(text_data=json.dumps({"action": "list"}))
    await refused(socket)
    assert await socket.receive_nothing(timeout=0.3)


async def test_a_token_in_the_query_string_is_ignored(hub: Any, auser: Any) -> None:
    """/prog/?token=<valid token> authenticates nothing: the user's task stays forbidden."""
    task_id = await astart_task("rock", owner=f"user:{auser.pk}", push=True)
    socket = await opened(f"/prog/?token={auth.issue_token(auser)}")
    answer = await ask(socket, {"action": "subscribe", "task_id": task_id})
    assert answer["code"] == "forbidden"
    assert (await ask(socket, {"action": "list"}))["tasks"] == []
    await socket.disconnect()


@pytest.mark.parametrize(
    "frames",
    [
        [{"action": "list"}, {"action": "auth", "token": "T"}],
        [{"action": "auth", "token": "T"}, {"action": "auth", "token": "T"}],
    ],
    ids=["after-a-request", "twice"],
)
async def test_auth_only_as_the_first_message(
    hub: Any, auser: Any, frames: list[dict[str, Any]]
) -> None:
    """An auth message after another message (even a good auth) closes 4401."""
    token = auth.issue_token(auser)
    socket = await opened()
    for frame in frames:
        filled = {k: (token if v == "T" else v) for k, v in frame.items()}
        await socket.send_to(text_data=json.dumps(filled))
    if frames[0]["action"] == "list":
        assert json.loads(await socket.receive_from(timeout=10))["type"] == "tasks"
    error, closing = await refused(socket)
    assert "auth must be the socket's first message" in error["detail"]
    assert closing["code"] == 4401


async def test_an_auth_after_a_subprotocol_token_closes_4401(hub: Any, auser: Any) -> None:
    """A socket authenticated by its header takes no auth message."""
    token = auth.issue_token(auser)
    socket = await opened(subprotocols=["progrock.token", token])
    await socket.send_to(text_data=json.dumps({"action": "auth", "token": token}))
    error, closing = await refused(socket)
    assert closing["code"] == 4401 and "first message" in error["detail"]


@pytest.mark.parametrize("token", [None, "", 5], ids=["missing", "empty", "number"])
async def test_a_malformed_auth_message_closes_4401(hub: Any, token: object) -> None:
    """An auth message whose token is no string: 4401 too, naming what it got."""
    socket = await opened()
    message: dict[str, Any] = {"action": "auth"}
    if token is not None:
        message["token"] = token
    await socket.send_to(text_data=json.dumps(message))
    error, closing = await refused(socket)
    assert (
        error["code"] == "unauthenticated"
        and "token must be a non-empty string" in (error["detail"])
    )
    assert closing["code"] == 4401


async def test_a_server_without_authenticators_refuses_tokens(
    redis_url: str, live_processes: Beating
) -> None:
    """AUTHENTICATORS empty: a token is refused with 4401, never taken as anonymous."""
    with override_settings(PROGROCK={"REDIS_URL": redis_url}, CHANNEL_LAYERS=_layers(redis_url)):
        channel_layers.backends.clear()
        socket = await opened()
        await socket.send_to(text_data=json.dumps({"action": "auth", "token": "x"}))
        error, closing = await refused(socket)
        await get_hub().aclose()
    channel_layers.backends.clear()
    assert "takes no tokens" in error["detail"] and closing["code"] == 4401


async def test_a_token_that_cannot_be_checked_closes_1013(
    hub: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The database failing the token's check: unavailable and close 1013 (try again
    later), not a socket left open with another owner."""

    def down(token: object) -> str:
        raise DatabaseError("could not connect to server at 10.1.2.3")

    monkeypatch.setattr(auth, "owner_for_token", down)
    socket = await opened()
    await socket.send_to(text_data=json.dumps({"action": "auth", "token": "t"}))
    error, closing = await refused(socket)
    assert (error["code"], closing["code"]) == ("unavailable", 1013)
    assert "10.1.2.3" not in error["detail"]


# -- the HTTP API --------------------------------------------------------------


def test_a_token_post_starts_for_its_user_without_csrf(user: Any) -> None:
    """POST tasks/ with Authorization: Token <key> and no CSRF token: 201, owned by the
    user; the same POST without the token is refused by the CSRF check."""
    client = Client(enforce_csrf_checks=True)
    headers = {"Authorization": f"Token {drf_key(user)}"}
    created = client.post(TASKS, {}, content_type="application/json", headers=headers)
    assert created.status_code == 201, created.content
    assert Task.objects.get(pk=created.json()["task_id"]).owner == f"user:{user.pk}"
    assert "sessionid" not in created.cookies  # a token user needs no session
    refused_post = client.post(TASKS, {}, content_type="application/json")
    assert (refused_post.status_code, refused_post.json()["code"]) == (403, "csrf_failed")


def test_a_bearer_token_sees_the_tasks_of_the_user_s_session(user: Any) -> None:
    """A task started by the user's session is listed for the user's Bearer token."""
    session = Client()
    session.force_login(user)
    session.post(TASKS, {}, content_type="application/json")
    bearer = {"Authorization": f"Bearer {auth.issue_token(user)}"}
    listed = Client().get(TASKS, headers=bearer).json()["tasks"]
    assert len(listed) == 1 and Task.objects.get().owner == f"user:{user.pk}"
    assert Client().get(TASKS).json()["tasks"] == []


@pytest.mark.parametrize("path", [TASKS, "/prog/api/follow/"])
def test_a_bad_token_is_401_json_even_with_a_session(user: Any, path: str) -> None:
    """An unknown token is 401 unauthenticated (JSON, WWW-Authenticate), although the
    client also holds a logged-in session: no fallback to the cookie."""
    client = Client()
    client.force_login(user)
    response = client.get(path, headers={"Authorization": "Token 0123456789abcdef"})
    assert response.status_code == 401
    assert response.json() == {
        "type": "error",
        "code": "unauthenticated",
        "detail": "token refused: unknown DRF token; not a signed token of this server",
    }
    assert response["WWW-Authenticate"].startswith("Bearer")


def test_an_expired_token_post_starts_nothing(user: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """POST with an expired signed token: 401 saying so, and no task."""
    headers = {"Authorization": f"Bearer {expired_token(user, monkeypatch)}"}
    response = Client().post(TASKS, {}, content_type="application/json", headers=headers)
    assert response.status_code == 401 and "expired" in response.json()["detail"]
    assert Task.objects.count() == 0


def test_a_bad_token_on_the_fragment_is_401_with_an_inert_bar(user: Any) -> None:
    """The HTML fragment answers a bad token 401 with an inert bar saying why."""
    response = Client().get(
        "/prog/api/tasks/8c1b6e0e-5b0a-4d5e-9d6a-2f1f7f1c0a11/fragment/",
        headers={"Authorization": "Bearer nope"},
    )
    assert response.status_code == 401
    assert "token refused" in response.content.decode()


def test_a_follow_with_a_token_gets_the_user_s_task(user: Any) -> None:
    """follow/ with a token answers the user's task's snapshot."""
    session = Client()
    session.force_login(user)
    task_id = session.post(TASKS, {}, content_type="application/json").json()["task_id"]
    response = Client().get(
        "/prog/api/follow/",
        {"task": task_id, "wait": "0"},
        headers={"Authorization": f"Bearer {auth.issue_token(user)}"},
    )
    assert [m["type"] for m in response.json()["messages"]] == ["snapshot"]


@pytest.mark.parametrize(
    ("authenticators", "header"),
    [([], "Bearer anything"), (AUTHENTICATORS, "Basic dXNlcjpwYXNz")],
    ids=["tokens-off", "basic-scheme"],
)
def test_a_header_that_is_not_our_token_leaves_the_csrf_check_on(
    redis_url: str, live_processes: Beating, authenticators: list[str], header: str
) -> None:
    """With tokens off, or another scheme, an Authorization header changes nothing: a
    POST without a CSRF token is still 403, a GET acts for the session."""
    settings = {"REDIS_URL": redis_url, "AUTHENTICATORS": authenticators}
    with override_settings(PROGROCK=settings, CHANNEL_LAYERS=_layers(redis_url)):
        client = Client(enforce_csrf_checks=True)
        headers = {"Authorization": header}
        post = client.post(TASKS, {}, content_type="application/json", headers=headers)
        got = client.get(TASKS, headers=headers)
    assert (post.status_code, post.json()["code"]) == (403, "csrf_failed")
    assert got.status_code == 200 and Task.objects.count() == 0
