"""Fixtures shared by every test folder.

Redis-touching tests get a private ``redis-server`` (never the machine's own):
one per test session, flushed before each test. Set ``PROGROCK_TEST_REDIS_URL``
to use a server of your choosing instead (it is flushed too).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import redis

from progrock.local.stack import _CHECKOUT_EXAMPLE

# Child processes the tests start (``python -m django ...``) import the demo
# project from the checkout's example/ folder, as pytest does (pythonpath).
os.environ["PYTHONPATH"] = os.pathsep.join(
    [str(_CHECKOUT_EXAMPLE), *filter(None, [os.environ.get("PYTHONPATH")])]
)

from progrock.local.redis_server import RedisServer


@pytest.fixture(scope="session")
def redis_server() -> Iterator[str]:
    """URL of the session's private Redis server."""
    explicit = os.environ.get("PROGROCK_TEST_REDIS_URL")
    if explicit:
        yield explicit
        return
    server = RedisServer()
    server.start()
    try:
        yield server.url
    finally:
        server.cleanup()


@pytest.fixture
def redis_url(redis_server: str) -> Iterator[str]:
    """A flushed private Redis for one test."""
    client = redis.Redis.from_url(redis_server)
    client.flushdb()
    client.close()
    yield redis_server
