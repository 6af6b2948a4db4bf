"""The HTTP API answers JSON everywhere: CSRF failures, wrong methods, unknown paths."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.test import Client, override_settings

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
    with override_settings(PROGROCK={"REDIS_URL": redis_url}, CHANNEL_LAYERS=layers):
        yield redis_url


def test_a_start_without_a_csrf_token_is_a_json_403_saying_the_fix(wired: str) -> None:
    """CSRF enforced: no cookie, no token -> 403 csrf_failed in JSON, naming Django's reason
    and the header to send; nothing is started."""
    response = Client(enforce_csrf_checks=True).post(
        "/prog/api/tasks/", {}, content_type="application/json"
    )
    assert response.status_code == 403 and response["Content-Type"] == "application/json"
    body = response.json()
    assert body["type"] == "error" and body["code"] == "csrf_failed"
    assert "CSRF cookie not set" in body["detail"] and "X-CSRFToken" in body["detail"]
    assert Task.objects.count() == 0


def test_a_wrong_token_is_a_json_403_and_the_right_one_starts(wired: str) -> None:
    """With the csrftoken cookie, a wrong X-CSRFToken is refused in JSON; the right one
    starts the task (201)."""
    client = Client(enforce_csrf_checks=True)
    client.get("/")  # the demo page sets the session
    client.cookies["csrftoken"] = "a" * 32
    wrong = client.post(
        "/prog/api/tasks/", {}, content_type="application/json", HTTP_X_CSRFTOKEN="b" * 32
    )
    assert wrong.status_code == 403 and wrong.json()["code"] == "csrf_failed"
    assert "HTTP header incorrect" in wrong.json()["detail"]
    right = client.post(
        "/prog/api/tasks/", {}, content_type="application/json", HTTP_X_CSRFTOKEN="a" * 32
    )
    assert right.status_code == 201, right.content
    assert right.json()["status"] == "queued"


def test_the_cancel_endpoint_is_csrf_checked_in_json_too(wired: str) -> None:
    """POST tasks/<id>/cancel/ without a token: 403 csrf_failed, before anything is read."""
    response = Client(enforce_csrf_checks=True).post(
        "/prog/api/tasks/00000000-0000-4000-8000-000000000000/cancel/"
    )
    assert response.status_code == 403 and response.json()["code"] == "csrf_failed"


def test_the_project_s_own_csrf_failure_page_is_left_alone(wired: str) -> None:
    """Outside the API, a CSRF failure is still the project's (Django's HTML) page."""
    response = Client(enforce_csrf_checks=True).post("/admin/login/", {"username": "x"})
    assert response.status_code == 403
    assert response["Content-Type"].startswith("text/html")


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("put", "/prog/api/tasks/", "GET, POST"),
        ("delete", "/prog/api/tasks/00000000-0000-4000-8000-000000000000/", "GET"),
        ("get", "/prog/api/tasks/00000000-0000-4000-8000-000000000000/cancel/", "POST"),
        ("post", "/prog/api/follow/", "GET"),
    ],
)
def test_a_method_an_endpoint_does_not_serve_is_a_json_405(
    wired: str, method: str, path: str, allowed: str
) -> None:
    """405 method_not_allowed in JSON, with the Allow header and the methods in the detail."""
    response = getattr(Client(), method)(path)
    assert response.status_code == 405 and response["Allow"] == allowed
    body = response.json()
    assert body["code"] == "method_not_allowed" and f"answers {allowed}" in body["detail"]


@pytest.mark.parametrize("method", ["get", "post"])
def test_an_unknown_path_under_the_prefix_is_a_json_404(wired: str, method: str) -> None:
    """Any other path under the API's prefix: 404 not_found in JSON (a POST too, not CSRF)."""
    response = getattr(Client(enforce_csrf_checks=True), method)("/prog/api/nope/deeper/")
    assert response.status_code == 404
    assert response.json() == {
        "type": "error",
        "code": "not_found",
        "detail": "no API endpoint at /prog/api/nope/deeper/",
    }
