"""The Python API (start_task, report_progress) and the HTTP API, on a real Redis and database."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.test import Client, override_settings

from progrock.api import TooManyTasks, report_progress, start_task
from progrock.models import Task
from tests.conftest import Beating

pytestmark = [pytest.mark.redis, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def wired(redis_url: str, live_processes: Beating) -> Iterator[str]:
    layers = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [redis_url]},
        }
    }
    with override_settings(
        PROGROCK={"REDIS_URL": redis_url, "MAX_RUNNING_PER_OWNER": 3}, CHANNEL_LAYERS=layers
    ):
        yield redis_url


class Listener:
    """Collect the fan-out messages of one task from a real pub/sub subscription."""

    def __init__(self, redis_url: str, task_id: str) -> None:
        self.client = redis.Redis.from_url(redis_url)
        self.pubsub = self.client.pubsub()
        self.pubsub.subscribe(f"progrock:u:{task_id}")
        self.pubsub.get_message(timeout=5)  # the subscribe confirmation

    def messages(self, count: int) -> list[dict[str, Any]]:
        out = []
        while len(out) < count:
            message = self.pubsub.get_message(timeout=5)
            if message is None:
                raise AssertionError(f"only {len(out)} of {count} messages arrived")
            if message["type"] == "message":
                out.append(json.loads(message["data"].decode().split(" ", 2)[2]))
        return out

    def close(self) -> None:
        self.pubsub.close()
        self.client.close()


def test_push_tasks_publish_progress_and_end(wired: str) -> None:
    """A push task reports progress and success through the same fan-out and database."""
    task_id = start_task("import", {"rows": 10}, owner="user:1", push=True)
    listener = Listener(wired, task_id)
    assert report_progress(task_id, 40, "4 of 10") == 2
    assert report_progress(task_id, status="complete", result={"rows": 10}) == 3
    messages = listener.messages(2)
    listener.close()
    assert messages[0]["type"] == "progress" and messages[0]["progress"] == 40
    assert messages[0]["message"] == "4 of 10" and messages[0]["seq"] == 2
    assert messages[1] == {
        "type": "complete",
        "task_id": task_id,
        "seq": 3,
        "complete": True,
        "progress": 100,
        "result": {"rows": 10},
    }
    task = Task.objects.get(pk=task_id)
    assert task.status == "succeeded" and task.result == {"rows": 10} and task.finished_at


def test_nothing_is_reported_after_the_end(wired: str) -> None:
    """After a push task failed, later reports are dropped (seq 0) and it stays failed."""
    task_id = start_task("import", owner="user:1", push=True)
    assert report_progress(task_id, status="failed", error="disk full") == 2
    assert report_progress(task_id, 90) == 0
    task = Task.objects.get(pk=task_id)
    assert task.status == "failed"
    assert task.error == {"code": "task_failed", "detail": "disk full"}


def test_report_progress_validates(wired: str) -> None:
    """Out-of-range progress and unknown tasks raise clear errors."""
    task_id = start_task("import", owner="user:1", push=True)
    with pytest.raises(ValueError, match="between 0 and 100"):
        report_progress(task_id, 120)
    with pytest.raises(Exception, match="no task"):
        report_progress(str(uuid.uuid4()), 10)


def test_start_task_forwards_polled_tasks_to_the_worker_channel(wired: str) -> None:
    """A polled task is created queued and its start request waits on prog-rocker."""
    task_id = start_task("rock", owner="session:abc")
    assert Task.objects.get(pk=task_id).status == "queued"
    message = async_to_sync(get_channel_layer().receive)("prog-rocker")
    assert len(message.pop("nonce")) == 32  # what a worker claims the message by
    assert message == {
        "type": "progrock.start",
        "task_id": task_id,
        "kind": "rock",
        "params": {},
        "owner": "session:abc",
        "reply_channel": None,
        "ref": None,
    }


def test_the_owner_limit_is_enforced(wired: str) -> None:
    """start_task refuses past MAX_RUNNING_PER_OWNER active tasks."""
    for _ in range(3):
        start_task("import", owner="user:7", push=True)
    with pytest.raises(TooManyTasks, match="limit 3"):
        start_task("import", owner="user:7", push=True)
    start_task("import", owner="user:8", push=True)  # others are not affected


def test_report_progress_works_from_another_thread(wired: str) -> None:
    """Code in a plain thread (a job runner) can report progress."""
    task_id = start_task("import", owner="user:1", push=True)
    results: list[int] = []
    thread = threading.Thread(target=lambda: results.append(report_progress(task_id, 10)))
    thread.start()
    thread.join(10)
    assert results == [2]


def test_http_api_creates_reads_and_cancels_under_ownership(wired: str) -> None:
    """The JSON API starts a task for the session, shows it to it only, and cancels it."""
    owner = Client(enforce_csrf_checks=False)
    created = owner.post(
        "/prog/api/tasks/", {"kind": "rock", "params": {"step": 5}}, content_type="application/json"
    )
    assert created.status_code == 201, created.content
    task_id = created.json()["task_id"]
    assert created.json()["status"] == "queued"
    assert owner.get(f"/prog/api/tasks/{task_id}/").json()["kind"] == "rock"
    assert [t["task_id"] for t in owner.get("/prog/api/tasks/").json()["tasks"]] == [task_id]
    stranger = Client()
    stranger.get("/")  # a session of its own
    assert stranger.get(f"/prog/api/tasks/{task_id}/").status_code == 404
    assert stranger.post(f"/prog/api/tasks/{task_id}/cancel/").status_code == 404
    assert owner.post(f"/prog/api/tasks/{task_id}/cancel/").status_code == 202


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ("{nope", 400, "bad_json"),
        ('{"kind": "nope"}', 400, "unknown_kind"),
        ('{"params": [1]}', 400, "invalid_field"),
        ("[]", 400, "bad_message"),
    ],
)
def test_http_api_rejects_bad_input_precisely(
    wired: str, body: str, status: int, code: str
) -> None:
    """Bad bodies get the protocol's error codes with a 4xx status."""
    response = Client().post("/prog/api/tasks/", body, content_type="application/json")
    assert response.status_code == status and response.json()["code"] == code


def test_http_api_checks_csrf(wired: str) -> None:
    """A POST without the CSRF token is refused like any Django form."""
    response = Client(enforce_csrf_checks=True).post(
        "/prog/api/tasks/", "{}", content_type="application/json"
    )
    assert response.status_code == 403
