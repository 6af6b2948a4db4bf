"""The channel layer's host options survive redis-py 8's default 5 s socket timeout.

redis-py 8 gives every connection a 5 s ``socket_timeout``, and channels_redis's
``receive`` blocks in ``BZPOPMIN`` for 5 s: an idle receive then fails with
``TimeoutError`` (redis/redis-py#4091, django/channels_redis#422). The example
project's layer hosts set ``"socket_timeout": None``, as the tutorial's snippet
does; these tests wait past the timeout with exactly those options.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import redis
import redis.exceptions
from channels.layers import BaseChannelLayer
from channels_redis.core import RedisChannelLayer as ChannelsRedisLayer
from django.conf import settings
from django.utils.module_loading import import_string

pytestmark = pytest.mark.redis

REDIS_PY_MAJOR = int(redis.__version__.split(".")[0])
IDLE = 6.5  # seconds a receive waits: past redis-py 8's 5 s default and one BZPOPMIN


def example_host(redis_url: str) -> dict[str, Any]:
    """The example project's layer host options, pointed at the test Redis."""
    (host,) = settings.CHANNEL_LAYERS["default"]["CONFIG"]["hosts"]
    if not isinstance(host, dict):
        raise AssertionError(f"the example's layer host must be a dict of options, got {host!r}")
    return {**host, "address": redis_url}


def layer_classes() -> list[type[BaseChannelLayer]]:
    configured = import_string(settings.CHANNEL_LAYERS["default"]["BACKEND"])
    return list(dict.fromkeys([ChannelsRedisLayer, configured]))


async def receive_after_idle(layer: BaseChannelLayer) -> dict[str, Any]:
    """Receive a message that is sent only after the receive sat idle for IDLE seconds."""
    channel = await layer.new_channel()

    async def send_later() -> None:
        await asyncio.sleep(IDLE)
        await layer.send(channel, {"type": "late"})

    sender = asyncio.create_task(send_later())
    try:
        message: dict[str, Any] = await asyncio.wait_for(layer.receive(channel), IDLE + 10)
        return message
    finally:
        sender.cancel()
        await asyncio.gather(sender, return_exceptions=True)
        await layer.flush()


@pytest.mark.parametrize("layer_class", layer_classes(), ids=lambda c: c.__module__)
async def test_an_idle_receive_outlasts_the_socket_timeout(
    redis_url: str, layer_class: type[BaseChannelLayer]
) -> None:
    """With the example's host options, a receive idle past 5 s gets its message."""
    host = example_host(redis_url)
    assert host.get("socket_timeout", "unset") is None, host
    layer = layer_class(hosts=[host])
    assert (await receive_after_idle(layer))["type"] == "late"


@pytest.mark.skipif(REDIS_PY_MAJOR < 8, reason="redis-py < 8 sets no socket timeout by default")
async def test_without_the_option_redis_py_8_breaks_an_idle_receive(redis_url: str) -> None:
    """The control: a bare host URL on redis-py 8 times out, so the option is what helps."""
    layer = ChannelsRedisLayer(hosts=[redis_url])
    with pytest.raises(redis.exceptions.TimeoutError):
        await receive_after_idle(layer)
