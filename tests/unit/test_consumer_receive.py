"""A socket's channel-layer receive outlives a Redis outage (no I/O: a fake receive)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from progrock.web import consumer as consumers


def test_receive_retries_through_failures_and_logs_the_outage_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Failing receives are retried (not raised: Channels would end the consumer and
    Daphne close the socket with 1011); the outage is logged once, its end once."""
    monkeypatch.setattr(consumers, "RECEIVE_RETRY_MIN", 0.001)
    monkeypatch.setattr(consumers, "RECEIVE_RETRY_MAX", 0.002)
    results: list[Any] = [RedisConnectionError("down"), OSError("reset"), {"type": "x"}] * 2

    async def receive() -> dict[str, Any]:
        result = results.pop(0)
        if isinstance(result, Exception):
            raise result
        return dict(result)

    async def main() -> list[dict[str, Any]]:
        return [await consumers.receive_through_outages(receive) for _ in range(2)]

    caplog.set_level(logging.WARNING, logger="progrock.consumers")
    assert asyncio.run(main()) == [{"type": "x"}, {"type": "x"}]
    assert caplog.text.count("failing") == 2 and caplog.text.count("works again") == 2


def test_the_consumer_wraps_the_receive_channels_sets() -> None:
    """Channels assigns channel_receive; the consumer keeps a wrapped one."""
    consumer = consumers.ProgressConsumer()

    async def receive() -> dict[str, Any]:
        raise AssertionError("not called")

    consumer.channel_receive = receive
    wrapped = consumer.channel_receive
    assert wrapped is not receive
    assert getattr(wrapped, "func", None) is consumers.receive_through_outages
    assert getattr(wrapped, "args", None) == (receive,)
