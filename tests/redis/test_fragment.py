"""The HTML fragment endpoint (GET <prefix>/tasks/<id>/fragment/) on a real Redis and database."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from django.test import Client, override_settings

from progrock.api import report_progress, start_task
from progrock.local.redis_server import free_port

pytestmark = [pytest.mark.redis, pytest.mark.django_db(transaction=True)]


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


def visitor() -> tuple[Client, str]:
    client = Client()
    client.get("/")  # the demo's page view creates the session
    return client, f"session:{client.cookies['sessionid'].value}"


def url(task_id: str) -> str:
    return f"/prog/api/tasks/{task_id}/fragment/"


def test_fragment_shows_the_current_state_with_an_htmx_cancel(wired: str) -> None:
    """The owner gets the bar's markup at the task's state: value, message, ETA-less,
    and a cancel button that posts (with the CSRF token) to the cancel URL."""
    client, owner = visitor()
    task_id = start_task("rock", owner=owner, push=True)
    report_progress(task_id, 42, "half way")
    response = client.get(url(task_id), {"label": "<Export>"})
    assert response.status_code == 200
    html = response.content.decode()
    assert "data-progrock-fragment" in html and "data-progrock-bar" not in html
    assert 'data-status="running"' in html and 'value="42"' in html
    assert ">half way</p>" in html and ">&lt;Export&gt;</span>" in html
    assert f'hx-post="/prog/api/tasks/{task_id}/cancel/"' in html
    assert "X-CSRFToken" in html


def test_finished_task_stops_htmx_polling_and_fires_the_end_event(wired: str) -> None:
    """For htmx, a finished task answers 286 with HX-Trigger naming progrock:<end>."""
    client, owner = visitor()
    task_id = start_task("rock", owner=owner, push=True)
    report_progress(task_id, 100, status="succeeded", result={"rows": 42})
    plain = client.get(url(task_id))
    assert plain.status_code == 200 and "HX-Trigger" not in plain
    response = client.get(url(task_id), headers={"HX-Request": "true"})
    assert response.status_code == 286
    trigger = json.loads(response["HX-Trigger"])
    assert trigger["progrock:complete"]["result"] == {"rows": 42}
    assert ">{&quot;rows&quot;:42}</output>" in response.content.decode()


def test_someone_elses_task_renders_an_inert_404(wired: str) -> None:
    """Another visitor's task: 404 and an inert bar saying it cannot be seen."""
    _, owner = visitor()
    task_id = start_task("rock", owner=owner, push=True)
    stranger, _ = visitor()
    response = stranger.get(url(task_id))
    assert response.status_code == 404
    html = response.content.decode()
    assert 'data-status="invalid"' in html
    assert f"no task {task_id} that you may see</output>" in html


def test_a_bad_id_renders_an_inert_400(wired: str) -> None:
    """An id that is not a UUID: 400 and an inert bar quoting it."""
    response = Client().get(url("nope"))
    assert response.status_code == 400
    assert "task_id must be a UUID string, got &#x27;nope&#x27;</output>" in (
        response.content.decode()
    )


def test_redis_down_renders_an_inert_503(wired: str) -> None:
    """Redis refusing connections: 503 and an inert bar saying to retry, not an error page."""
    client, _ = visitor()
    with override_settings(PROGROCK={"REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}):
        response = client.get(url("0b7f0c1e-8d2a-4c3b-9e4f-5a6b7c8d9e0f"))
    assert response.status_code == 503
    html = response.content.decode()
    assert 'data-status="invalid"' in html and "retry later</output>" in html
