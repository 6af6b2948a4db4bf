"""The HTTP API's defences: poison bodies, unknown sessions, rate limits, outages."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from django.test import Client, override_settings

from progrock.local.redis_server import free_port
from progrock.models import Task
from progrock.web import limits
from tests.conftest import Beating

pytestmark = [pytest.mark.redis, pytest.mark.django_db(transaction=True)]


def _layers(url: str) -> dict[str, object]:
    return {
        "default": {"BACKEND": "channels_redis.core.RedisChannelLayer", "CONFIG": {"hosts": [url]}}
    }


@pytest.fixture
def wired(redis_url: str, live_processes: Beating) -> Iterator[str]:
    with override_settings(PROGROCK={"REDIS_URL": redis_url}, CHANNEL_LAYERS=_layers(redis_url)):
        yield redis_url


@pytest.fixture
def fresh_limits(monkeypatch: pytest.MonkeyPatch) -> limits.StartLimits:
    start_limits = limits.StartLimits(per_owner=2, per_address=3)
    monkeypatch.setattr(limits, "starts", start_limits)
    return start_limits


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ('{"params": {"n": ' + str(2**70) + "}}", "params.n must be an integer"),
        ('{"params": {"s": "\\ud800"}}', "params.s must be valid Unicode"),
        ('{"params": {"deep": ' + "[" * 40 + "]" * 40 + "}}", "deeper than 32"),
    ],
    ids=["int-70-bits", "lone-surrogate", "too-deep"],
)
def test_poison_bodies_are_refused_before_anything_is_stored(
    wired: str, body: str, words: str
) -> None:
    """A start body the transport cannot carry is 400 invalid_field naming the field,
    and no task is created."""
    response = Client().post("/prog/api/tasks/", body, content_type="application/json")
    assert response.status_code == 400, response.content
    assert response.json()["code"] == "invalid_field" and words in response.json()["detail"]
    assert Task.objects.count() == 0


def test_a_session_cookie_the_server_never_issued_is_no_owner(wired: str) -> None:
    """A made-up session key reads nothing and starts nothing under that key: the
    task belongs to a session the server creates (and sets as the cookie)."""
    made_up = "madeupsessionkey0123456789abcdef"
    client = Client()
    client.cookies["sessionid"] = made_up
    assert client.get("/prog/api/tasks/").json()["tasks"] == []
    created = client.post("/prog/api/tasks/", {"kind": "rock"}, content_type="application/json")
    assert created.status_code == 201, created.content
    owner = Task.objects.get(pk=created.json()["task_id"]).owner
    assert owner != f"session:{made_up}" and owner.startswith("session:")
    assert created.cookies["sessionid"].value == owner.removeprefix("session:")


def test_starts_beyond_the_owner_s_rate_are_429(
    wired: str, fresh_limits: limits.StartLimits
) -> None:
    """Past the starts-per-minute limit of its owner, a start is 429 rate_limited."""
    client = Client()
    codes = [
        client.post("/prog/api/tasks/", {}, content_type="application/json").status_code
        for _ in range(3)
    ]
    assert codes == [201, 201, 429]
    refused = client.post("/prog/api/tasks/", {}, content_type="application/json").json()
    assert refused["code"] == "rate_limited" and "owner" in refused["detail"]
    assert Task.objects.count() == 2


def test_starts_beyond_an_address_s_rate_are_429(
    wired: str, fresh_limits: limits.StartLimits
) -> None:
    """Owners sharing one (non-loopback) address share its starts-per-minute limit."""
    codes = [
        Client(REMOTE_ADDR="203.0.113.7")
        .post("/prog/api/tasks/", {}, content_type="application/json")
        .status_code
        for _ in range(4)
    ]
    assert codes == [201, 201, 201, 429]


def test_an_unreachable_redis_is_a_json_503(db: None) -> None:
    """With Redis unreachable, reading a task answers 503 unavailable as JSON, and
    the detail does not say where Redis lives."""
    dead = f"redis://127.0.0.1:{free_port()}/0"
    with override_settings(PROGROCK={"REDIS_URL": dead}, CHANNEL_LAYERS=_layers(dead)):
        response = Client().get(f"/prog/api/tasks/{uuid.uuid4()}/")
    assert response.status_code == 503
    body = response.json()
    assert body["type"] == "error" and body["code"] == "unavailable"
    assert "127.0.0.1" not in body["detail"] and dead not in body["detail"]


def test_too_many_tasks_does_not_show_the_session_key(
    redis_url: str, live_processes: Beating
) -> None:
    """The owner limit's detail never quotes the owner (it holds the session key,
    which the HttpOnly cookie keeps from the page's scripts)."""
    with override_settings(
        PROGROCK={"REDIS_URL": redis_url, "MAX_RUNNING_PER_OWNER": 1},
        CHANNEL_LAYERS=_layers(redis_url),
    ):
        client = Client()
        assert (
            client.post("/prog/api/tasks/", {}, content_type="application/json").status_code == 201
        )
        refused = client.post("/prog/api/tasks/", {}, content_type="application/json")
    key = client.cookies["sessionid"].value
    assert refused.status_code == 429 and refused.json()["code"] == "too_many_tasks"
    assert key not in refused.json()["detail"], refused.json()


def test_a_queue_kind_s_bad_params_are_400_before_anything_is_created(wired: str) -> None:
    """A kind run by Celery: params its task lacks are 400 invalid_field naming them,
    and nothing is created (the HTTP API routes starts as the socket does)."""
    kinds = {"rock": None, "export": "celery:progrock_demo.tasks.export"}
    with override_settings(PROGROCK={"REDIS_URL": wired, "KINDS": kinds}):
        response = Client().post(
            "/prog/api/tasks/",
            {"kind": "export", "params": {"rowz": 5}},
            content_type="application/json",
        )
    assert response.status_code == 400, response.content
    assert response.json()["code"] == "invalid_field" and "'rowz'" in response.json()["detail"]
    assert Task.objects.count() == 0
