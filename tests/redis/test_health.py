"""``GET /prog/health/``: Redis and the database reachable, JSON, 200 or 503."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from django.test import Client, override_settings

from progrock.local.redis_server import RedisServer
from tests.conftest import Beating

pytestmark = pytest.mark.django_db


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A private Redis of this test alone: it may stop it."""
    server = RedisServer()
    server.start()
    try:
        with override_settings(PROGROCK={"REDIS_URL": server.url}):
            yield server
    finally:
        server.cleanup()


def test_health_is_200_with_redis_and_the_database_up(own_redis: RedisServer) -> None:
    """Both reachable: 200, status ok, and the live processes counted by kind."""
    beating = Beating(own_redis.url, ("worker", "delay"))
    try:
        response = Client().get("/prog/health/")
    finally:
        beating.stop()
    assert response.status_code == 200, response.content
    assert response["Content-Type"] == "application/json"
    assert "no-cache" in response["Cache-Control"]
    body = json.loads(response.content)
    assert body == {
        "status": "ok",
        "redis": "ok",
        "database": "ok",
        "processes": {"worker": 1, "delay": 1, "web": 0},
    }


def test_health_is_503_naming_redis_once_it_stops(own_redis: RedisServer) -> None:
    """Redis stopped: 503, ``redis`` unreachable by error class only (no address, no port)."""
    assert Client().get("/prog/health/").status_code == 200
    own_redis.stop()
    response = Client().get("/prog/health/")
    assert response.status_code == 503, response.content
    body = json.loads(response.content)
    assert body["status"] == "unavailable"
    assert body["database"] == "ok"
    assert body["redis"].startswith("unreachable (") and body["redis"].endswith("Error)")
    assert str(own_redis.port) not in response.content.decode()
    assert "127.0.0.1" not in response.content.decode()


def test_health_answers_get_and_head_only(own_redis: RedisServer) -> None:
    """A POST is 405: the probe changes nothing and takes no body."""
    assert Client().post("/prog/health/").status_code == 405
    assert Client().head("/prog/health/").status_code == 200
