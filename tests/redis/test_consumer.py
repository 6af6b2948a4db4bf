"""The socket consumer's defences, in process over a real Redis: whatever fails
fails one request (an error frame, the socket stays open), and per-address limits."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from channels.layers import channel_layers
from channels.testing import WebsocketCommunicator
from django.test import override_settings
from redis.exceptions import ConnectionError as RedisConnectionError

from progrock.protocol import FLAG_PROGRESS, FLAG_STARTED
from progrock.web import consumer as consumer_module
from progrock.web import limits, restart
from progrock.web.consumer import ProgressConsumer
from tests.conftest import Beating

pytestmark = pytest.mark.redis

ADDRESS = "203.0.113.9"


@pytest.fixture
def wired(redis_url: str, live_processes: Beating) -> Iterator[str]:
    layers = {
        "default": {
            "BACKEND": "progrock.contrib.layer.RedisChannelLayer",
            "CONFIG": {"hosts": [redis_url]},
        }
    }
    with override_settings(PROGROCK={"REDIS_URL": redis_url}, CHANNEL_LAYERS=layers):
        channel_layers.backends.clear()
        yield redis_url
    channel_layers.backends.clear()


def communicator(address: str = ADDRESS) -> WebsocketCommunicator:
    socket = WebsocketCommunicator(ProgressConsumer.as_asgi(), "/prog/")
    socket.scope["client"] = [address, 40_000]
    return socket


@pytest.fixture
async def socket(wired: str) -> AsyncIterator[WebsocketCommunicator]:
    opened = communicator()
    connected, _ = await opened.connect()
    assert connected
    assert json.loads(await opened.receive_from()) == {"accept": True}
    yield opened
    await opened.disconnect()


async def ask(socket: WebsocketCommunicator, message: dict[str, Any]) -> dict[str, Any]:
    await socket.send_to(text_data=json.dumps(message))
    answer: dict[str, Any] = json.loads(await socket.receive_from(timeout=10))
    return answer


async def test_a_bug_in_a_request_is_internal_error_and_the_socket_lives(
    socket: WebsocketCommunicator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An unexpected exception answers internal_error (no traceback, no internals in
    the detail) and the next request on the socket is served."""

    async def broken(task_id: str) -> None:
        raise RuntimeError("secret at /srv/app/settings.py")

    monkeypatch.setattr(consumer_module.reads, "aget_view_and_owner", broken)
    task_id = str(uuid.uuid4())
    answer = await ask(socket, {"action": "subscribe", "task_id": task_id})
    assert answer["code"] == "internal_error" and answer["task_id"] == task_id
    assert "secret" not in answer["detail"] and "/srv" not in answer["detail"]
    assert await ask(socket, {"action": "unsubscribe", "task_id": task_id}) == {
        "type": "unsubscribed",
        "task_id": task_id,
    }


async def test_a_redis_failure_is_unavailable_without_its_address(
    socket: WebsocketCommunicator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Redis failing a request answers unavailable; its address stays in the log."""

    async def down(task_id: str) -> None:
        raise RedisConnectionError("Error 111 connecting to 10.9.8.7:6379. Connection refused.")

    monkeypatch.setattr(consumer_module.reads, "aget_view_and_owner", down)
    answer = await ask(socket, {"action": "cancel", "task_id": str(uuid.uuid4())})
    assert answer["code"] == "unavailable" and answer["action"] == "cancel"
    assert "10.9.8.7" not in answer["detail"] and "6379" not in answer["detail"]


async def test_starts_beyond_the_rate_are_rate_limited(
    socket: WebsocketCommunicator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past its starts-per-minute, a start is refused rate_limited, with its ref."""
    monkeypatch.setattr(limits, "starts", limits.StartLimits(per_owner=0))
    answer = await ask(socket, {"action": "start", "ref": "r9"})
    assert answer["code"] == "rate_limited" and answer["ref"] == "r9"


async def test_sockets_beyond_an_address_s_limit_are_closed_1013(
    wired: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An address's socket beyond MAX_SOCKETS_PER_ADDRESS gets too_many_sockets and
    close 1013; once one of its sockets closes, the next is accepted."""
    monkeypatch.setattr(limits, "sockets", limits.SocketCounter(limit=2))
    first, second, third = communicator(), communicator(), communicator()
    for accepted in (first, second):
        assert (await accepted.connect())[0]
        assert json.loads(await accepted.receive_from()) == {"accept": True}
    assert (await third.connect())[0]
    refused = json.loads(await third.receive_from())
    assert refused["code"] == "too_many_sockets"
    assert await third.receive_output() == {"type": "websocket.close", "code": 1013}
    await third.disconnect(code=1013)
    other = communicator("198.51.100.4")  # another address is not affected
    assert (await other.connect())[0]
    assert json.loads(await other.receive_from()) == {"accept": True}
    await first.disconnect()
    fourth = communicator()
    assert (await fourth.connect())[0]
    assert json.loads(await fourth.receive_from()) == {"accept": True}
    for still in (second, other, fourth):
        await still.disconnect()
    assert limits.sockets.open == {}


async def test_a_server_that_refuses_1013_gets_1000_and_one_warning(
    wired: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Where the server refuses close code 1013 (Daphne without the contrib raises),
    the refused socket is still closed, with 1000, and the log names the fix."""
    monkeypatch.setattr(limits, "sockets", limits.SocketCounter(limit=0))
    monkeypatch.setattr(restart, "_refusal_logged", False)
    real_close = ProgressConsumer.close

    async def autobahn_close(self: ProgressConsumer, code: Any = None, reason: Any = None) -> None:
        if code not in (1000, None) and not 3000 <= code <= 4999:
            raise Exception(f"invalid close code {code}")  # what Autobahn's sendClose says
        await real_close(self, code=code, reason=reason)

    monkeypatch.setattr(ProgressConsumer, "close", autobahn_close)
    refused = communicator()
    assert (await refused.connect())[0]
    assert json.loads(await refused.receive_from())["code"] == "too_many_sockets"
    assert await refused.receive_output() == {"type": "websocket.close", "code": 1000}
    await refused.disconnect(code=1000)
    assert "refused close code 1013" in caplog.text
    assert "daphne_close_codes" in caplog.text


async def test_closing_for_a_restart_answers_starts_in_flight_then_closes_1012(
    socket: WebsocketCommunicator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A socket closing for a restart first waits for the answer to the start it
    forwarded (a start sent meanwhile is refused unavailable, with its ref), passes
    it on, then closes with 1012 and the reason; nothing is sent after the close."""
    monkeypatch.setattr(consumer_module, "START_ANSWER_WAIT", 30.0)
    await socket.send_to(text_data=json.dumps({"action": "start", "ref": "r1"}))
    async with asyncio.timeout(10):  # until the start was forwarded
        while not (forwarded := [s for s in restart.drain.sockets if s.refs]):  # type: ignore[attr-defined]
            await asyncio.sleep(0.01)
    [consumer] = forwarded
    [task_id] = list(consumer.refs)
    closing = asyncio.create_task(consumer.close_for_restart())
    refused = await ask(socket, {"action": "start", "ref": "r2"})
    assert (refused["code"], refused["ref"]) == ("unavailable", "r2")
    assert not closing.done()  # r1's answer has not come yet
    started = {"type": "started", "task_id": task_id, "seq": 1, "progress": 0}
    await consumer.hub_message(task_id, 1, FLAG_STARTED, json.dumps(started))
    assert json.loads(await socket.receive_from()) == {**started, "ref": "r1"}
    await asyncio.wait_for(closing, 10)
    assert await socket.receive_output() == {
        "type": "websocket.close",
        "code": 1012,
        "reason": "server restarting; reconnect",
    }
    await consumer.hub_message(task_id, 2, FLAG_PROGRESS, json.dumps({**started, "seq": 2}))
    assert await socket.receive_nothing()
