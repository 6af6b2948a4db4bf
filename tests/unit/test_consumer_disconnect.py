"""A closing socket leaves the hub without Channels' database clean-up hop (no I/O)."""

from __future__ import annotations

import asyncio

import pytest
from channels.exceptions import StopConsumer

from progrock.web import consumer as consumers


class Hub:
    def __init__(self) -> None:
        self.left: list[str] = []

    async def unsubscribe(self, task_id: str, consumer: object) -> None:
        self.left.append(task_id)


class Layer:
    def __init__(self) -> None:
        self.discarded: list[tuple[str, str]] = []

    async def group_discard(self, group: str, channel: str) -> None:
        self.discarded.append((group, channel))


def consumer(
    monkeypatch: pytest.MonkeyPatch, hub: Hub
) -> tuple[consumers.ProgressConsumer, list[int]]:
    hops: list[int] = []

    async def hop() -> None:
        hops.append(1)

    monkeypatch.setattr("channels.generic.websocket.aclose_old_connections", hop)
    monkeypatch.setattr(consumers, "get_hub", lambda: hub)
    c = consumers.ProgressConsumer()
    c.watching = {"a": 1}
    c.pending = {"b": 1}
    c.channel_name = "specific.x"
    return c, hops


def test_disconnect_leaves_the_hub_without_the_thread_hop(monkeypatch: pytest.MonkeyPatch) -> None:
    hub = Hub()
    c, hops = consumer(monkeypatch, hub)
    with pytest.raises(StopConsumer):
        asyncio.run(c.websocket_disconnect({"type": "websocket.disconnect", "code": 1001}))
    assert sorted(hub.left) == ["a", "b"]
    assert hops == []
    assert c.watching == {} and c.pending == {}


def test_a_subclass_with_groups_gets_channels_disconnect(monkeypatch: pytest.MonkeyPatch) -> None:
    hub = Hub()
    c, hops = consumer(monkeypatch, hub)
    layer = Layer()
    c.groups = ["news"]
    c.channel_layer = layer
    with pytest.raises(StopConsumer):
        asyncio.run(c.websocket_disconnect({"type": "websocket.disconnect", "code": 1000}))
    assert layer.discarded == [("news", "specific.x")]
    assert sorted(hub.left) == ["a", "b"] and hops == [1]
