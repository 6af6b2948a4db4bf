"""The Task admin over a real database and Redis, as a staff user: read-only state,
a cancel that goes the workers' way (watchers told), deleting only what has ended."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
import redis
import redis.asyncio as aioredis
from asgiref.sync import async_to_sync
from channels.layers import channel_layers, get_channel_layer
from django.contrib.auth.models import User
from django.test import Client, override_settings

from progrock.delay import DelayStore
from progrock.models import Task
from progrock.services.http import HttpTaskService
from progrock.state.live import TaskStore
from progrock.worker.cancel import cancel
from progrock.worker.context import Cadence, Worker

pytestmark = [pytest.mark.redis, pytest.mark.django_db(transaction=True)]

CHANGELIST = "/admin/progrock/task/"


@pytest.fixture
def wired(redis_url: str) -> Iterator[str]:
    layers = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [redis_url]},
        }
    }
    with override_settings(PROGROCK={"REDIS_URL": redis_url}, CHANNEL_LAYERS=layers):
        channel_layers.backends.clear()
        yield redis_url
    channel_layers.backends.clear()


@pytest.fixture
def staff() -> Client:
    User.objects.create_superuser("admin", "admin@example.com", "pw")
    client = Client()
    client.login(username="admin", password="pw")
    return client


def task(status: str, owner: str = "user:1", **fields: object) -> Task:
    ended = {"finished_at": datetime.now(UTC)} if status not in ("queued", "running") else {}
    return Task.objects.create(owner=owner, kind="rock", status=status, **{**ended, **fields})


def act(client: Client, action: str, *tasks: Task) -> list[str]:
    """Run an admin action on ``tasks``; the messages the admin showed."""
    response = client.post(
        CHANGELIST,
        {"action": action, "_selected_action": [str(t.pk) for t in tasks]},
        follow=True,
    )
    assert response.status_code == 200
    return [str(m) for m in response.context["messages"]]


def test_state_fields_are_read_only_and_tasks_are_not_added_here(wired: str, staff: Client) -> None:
    """The change form shows status, progress, seq, ... as text, not inputs; a posted
    status is ignored; there is no add page."""
    running = task("running", progress=40.0, seq=3)
    page = staff.get(f"{CHANGELIST}{running.pk}/change/").content.decode()
    for name in ("status", "progress", "seq", "result", "error", "backend_ref", "started_at"):
        assert f'name="{name}"' not in page, name
    assert 'name="owner"' in page
    staff.post(
        f"{CHANGELIST}{running.pk}/change/",
        {"owner": "user:1", "kind": "rock", "params": "{}", "status": "succeeded"},
    )
    running.refresh_from_db()
    assert (running.status, running.progress) == ("running", 40.0)
    assert staff.get(f"{CHANGELIST}add/").status_code == 403


def test_cancel_asks_a_worker_which_tells_the_watchers(wired: str, staff: Client) -> None:
    """The cancel action sends the user's cancel request to the worker channel; a worker
    handling it records the task cancelled and publishes `cancelled` to its watchers.
    An ended task in the selection is left alone."""
    queued, ended = task("queued"), task("succeeded")
    listener = redis.Redis.from_url(wired).pubsub()
    listener.subscribe(f"progrock:u:{queued.pk}")
    listener.get_message(timeout=5)  # the subscribe confirmation
    shown = act(staff, "cancel_tasks", queued, ended)
    assert any("cancel 1 task" in m for m in shown) and any("already ended" in m for m in shown)
    message = async_to_sync(get_channel_layer().receive)("prog-rocker")
    assert message["type"] == "progrock.cancel" and message["task_id"] == str(queued.pk)
    assert message["reply_channel"] is None and message["request_id"]

    async def work() -> None:
        client = aioredis.Redis.from_url(wired)
        delay = DelayStore.from_url(wired)
        service = HttpTaskService("http://127.0.0.1:9")  # a queued task has no backend ref
        try:
            worker = Worker(service, TaskStore(client), delay, Cadence.from_settings())
            await cancel(worker, message)
        finally:
            await service.aclose()
            await delay.aclose()
            await client.aclose()

    async_to_sync(work)()
    queued.refresh_from_db()
    assert queued.status == "cancelled"
    published = listener.get_message(timeout=5)
    assert published is not None and published["type"] == "message"
    body = json.loads(published["data"].decode().split(" ", 2)[2])
    assert body["type"] == "cancelled" and body["task_id"] == str(queued.pk)
    ended.refresh_from_db()
    assert ended.status == "succeeded"
    listener.close()


def test_delete_ended_keeps_queued_and_running_tasks(wired: str, staff: Client) -> None:
    """ "Delete the selected tasks that have ended" deletes only ended ones and says so;
    Django's own bulk delete is not offered, nor deleting a running task's page."""
    rows = [task(s) for s in ("queued", "running", "succeeded", "failed", "cancelled")]
    shown = act(staff, "delete_ended", *rows)
    assert "Deleted 3 ended task(s)." in shown
    assert any("2 selected task(s) are queued or running" in m for m in shown)
    assert sorted(Task.objects.values_list("status", flat=True)) == ["queued", "running"]
    page = staff.get(CHANGELIST).content.decode()
    assert 'value="delete_selected"' not in page and 'value="delete_ended"' in page
    assert staff.get(f"{CHANGELIST}{rows[1].pk}/delete/").status_code == 403


def test_filters_by_status_and_kind_and_search_by_owner_and_id(wired: str, staff: Client) -> None:
    """The list filters on status and kind, and finds a task by its owner or part of its id."""
    mine, other = task("running", owner="user:42"), task("failed", owner="session:zz")
    Task.objects.filter(pk=other.pk).update(kind="hash")

    def listed(query: str) -> set[str]:
        response = staff.get(f"{CHANGELIST}?{query}")
        return {str(t.pk) for t in response.context["cl"].result_list}

    assert listed("status__exact=failed") == {str(other.pk)}
    assert listed("kind=hash") == {str(other.pk)}
    assert listed("q=user:42") == {str(mine.pk)}
    assert listed(f"q={str(mine.pk)[:13]}") == {str(mine.pk)}
