"""The long-poll endpoint (GET <prefix>/follow/) on a real Redis, hub and database."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from django.test import AsyncClient, override_settings

from progrock.api import areport_progress, astart_task
from progrock.local.redis_server import free_port
from progrock.web.fanout import get_hub

pytestmark = [pytest.mark.redis, pytest.mark.django_db(transaction=True)]
URL = "/prog/api/follow/"


@pytest.fixture
def wired(redis_url: str) -> Iterator[str]:
    layers = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [redis_url]},
        }
    }
    with override_settings(PROGROCK={"REDIS_URL": redis_url}, CHANNEL_LAYERS=layers):
        yield redis_url


@pytest.fixture
async def hub(wired: str) -> AsyncIterator[Any]:
    """This event loop's fan-out hub, closed after the test."""
    running = get_hub()
    yield running
    await running.aclose()


async def visitor() -> tuple[AsyncClient, str]:
    """A client with a session of its own, and its owner string."""
    client = AsyncClient()
    await client.get("/")  # the demo's page view creates the session
    return client, f"session:{client.cookies['sessionid'].value}"


async def follow(client: AsyncClient, *tasks: str, wait: float = 5) -> list[dict[str, Any]]:
    response = await client.get(URL, {"task": list(tasks), "wait": str(wait)})
    assert response.status_code == 200, response.content
    messages: list[dict[str, Any]] = response.json()["messages"]
    return messages


async def until(predicate: Any, what: str) -> None:
    for _ in range(500):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


async def test_a_waiting_follow_answers_when_progress_is_published(hub: Any) -> None:
    """A long-poll with no news waits on the hub and answers the next progress at once."""
    client, owner = await visitor()
    task_id = await astart_task("rock", owner=owner, push=True)
    request = asyncio.create_task(follow(client, f"{task_id}:1", wait=20))
    await until(lambda: hub.watched() == 1, "the request to subscribe")
    assert not request.done()
    await areport_progress(task_id, 30, "half way")
    messages = await asyncio.wait_for(request, 10)
    assert [(m["type"], m["seq"], m["progress"], m["message"]) for m in messages] == [
        ("progress", 2, 30, "half way")
    ]
    assert hub.watched() == 0  # unsubscribed once answered


async def test_a_follow_without_news_answers_empty_after_wait(hub: Any) -> None:
    """No news within ``wait``: an empty answer (the client asks again)."""
    client, owner = await visitor()
    task_id = await astart_task("rock", owner=owner, push=True)
    assert await follow(client, f"{task_id}:1", wait=0.2) == []


async def test_unknown_cursor_gets_snapshot_and_finished_task_its_end(hub: Any) -> None:
    """A task without seq gets a snapshot (and its terminal message if over) at once;
    a finished task behind the cursor gets only its terminal message."""
    client, owner = await visitor()
    running = await astart_task("rock", owner=owner, push=True)
    done = await astart_task("rock", owner=owner, push=True)
    await areport_progress(done, 100, status="succeeded", result={"n": 1})
    messages = await follow(client, running, done)
    assert [(m["type"], m["task_id"], m["seq"]) for m in messages] == [
        ("snapshot", running, 1),
        ("snapshot", done, 2),
        ("complete", done, 2),
    ]
    (end,) = await follow(client, f"{done}:1")
    assert (end["type"], end["result"]) == ("complete", {"n": 1})


async def test_someone_elses_task_is_forbidden_like_an_unknown_one(hub: Any) -> None:
    """Another visitor's task and an unknown task both get a forbidden error, at once."""
    _, owner = await visitor()
    theirs = await astart_task("rock", owner=owner, push=True)
    stranger, _ = await visitor()
    unknown = "0b7f0c1e-8d2a-4c3b-9e4f-5a6b7c8d9e0f"
    messages = await follow(stranger, f"{theirs}:0", unknown)
    assert [(m["type"], m["code"], m["task_id"]) for m in messages] == [
        ("error", "forbidden", theirs),
        ("error", "forbidden", unknown),
    ]
    assert messages[0]["detail"] == f"no task {theirs} that you may see"


async def test_a_request_without_tasks_is_an_immediate_probe(hub: Any) -> None:
    """No task parameter: an empty answer at once, even with a long wait."""
    client, _ = await visitor()
    response = await asyncio.wait_for(client.get(URL, {"wait": "30"}), 5)
    assert response.json() == {"messages": []}


@pytest.mark.parametrize(
    ("query", "detail"),
    [
        ({"task": "nope"}, "task must be <uuid> or <uuid>:<seq>, got 'nope'"),
        ({"wait": "99"}, "wait must be a number of seconds within 0..30, got '99'"),
        ({"stream": "2"}, "stream must be 0 or 1, got '2'"),
    ],
)
async def test_bad_queries_are_refused_precisely(
    hub: Any, query: dict[str, str], detail: str
) -> None:
    """A bad parameter is a 400 invalid_field error quoting it."""
    response = await AsyncClient().get(URL, query)
    assert response.status_code == 400
    assert response.json() == {"type": "error", "code": "invalid_field", "detail": detail}


async def test_a_stream_sends_news_as_it_comes_and_ends_with_the_tasks(hub: Any) -> None:
    """stream=1: a ready comment, then an event per message as it is published (a
    snapshot first for a task without seq), and the stream ends when its tasks end."""
    client, owner = await visitor()
    running = await astart_task("rock", owner=owner, push=True)
    fresh = await astart_task("rock", owner=owner, push=True)
    response = await client.get(URL, {"task": [f"{running}:1", fresh], "stream": "1"})
    assert response["Content-Type"].startswith("text/event-stream")
    assert response["X-Accel-Buffering"] == "no"
    chunks = aiter(response.streaming_content)

    async def event() -> Any:
        chunk = (await asyncio.wait_for(anext(chunks), 10)).decode()
        assert chunk.startswith("data: ") and chunk.endswith("\n\n"), chunk
        return json.loads(chunk[len("data: ") :])

    assert await asyncio.wait_for(anext(chunks), 10) == b": ready\n\n"
    snapshot = await event()
    assert (snapshot["type"], snapshot["task_id"]) == ("snapshot", fresh)
    await areport_progress(running, 30, "half way")
    progress = await event()
    assert (progress["type"], progress["seq"], progress["progress"]) == ("progress", 2, 30)
    await areport_progress(running, 100, status="succeeded")
    await areport_progress(fresh, 100, status="cancelled")
    ends = {(m["task_id"], m["type"]) for m in [await event(), await event()]}
    assert ends == {(running, "complete"), (fresh, "cancelled")}
    with pytest.raises(StopAsyncIteration):
        await asyncio.wait_for(anext(chunks), 10)
    assert hub.watched() == 0


async def test_redis_down_is_a_503_unavailable_error(redis_url: str) -> None:
    """Redis refusing connections: the long-poll and the stream answer the protocol's
    ``unavailable`` error (503 / an error event), not Django's error page."""
    closed = f"redis://127.0.0.1:{free_port()}/0"
    task_id = "0b7f0c1e-8d2a-4c3b-9e4f-5a6b7c8d9e0f"
    with override_settings(PROGROCK={"REDIS_URL": closed}):
        client, _ = await visitor()
        response = await client.get(URL, {"task": task_id, "wait": "1"})
        assert response.status_code == 503
        assert response.json()["code"] == "unavailable"
        stream = await client.get(URL, {"task": task_id, "stream": "1"})
        chunks = [chunk async for chunk in stream.streaming_content]
        assert len(chunks) == 1 and chunks[0].startswith(b"data: ")
        assert json.loads(chunks[0][len(b"data: ") :])["code"] == "unavailable"
        await get_hub().aclose()
