"""A worker's channel-layer receive outlives a Redis outage (no I/O: a fake layer)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from progrock.worker import runner


class FakeLayer:
    """A channel layer whose receive raises or returns the next of ``results``."""

    extensions = ["groups"]

    def __init__(self, results: list[Any]) -> None:
        self.results = results
        self.calls = 0

    async def receive(self, channel: str) -> dict[str, Any]:
        self.calls += 1
        result = self.results.pop(0)
        if isinstance(result, Exception):
            raise result
        return {**result, "channel": channel}


def test_receive_retries_through_failures_and_logs_each_change_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Failing receives are retried, not raised (Channels' worker would end the
    process); the outage is logged once when it begins and once when it ends."""
    monkeypatch.setattr(runner, "RECEIVE_RETRY_MIN", 0.001)
    monkeypatch.setattr(runner, "RECEIVE_RETRY_MAX", 0.002)
    down = [RedisConnectionError("refused"), OSError("reset"), TimeoutError()]
    layer = FakeLayer([*down, {"type": "a"}, {"type": "b"}, *down, {"type": "c"}])
    patient = runner.PatientLayer(layer)

    async def main() -> list[dict[str, Any]]:
        return [await patient.receive("prog-rocker") for _ in range(3)]

    caplog.set_level(logging.WARNING, logger="progrock.worker")
    got = asyncio.run(main())
    assert [m["type"] for m in got] == ["a", "b", "c"]
    assert layer.calls == 9
    assert caplog.text.count("receiving from the channel layer failing") == 2, caplog.text
    assert caplog.text.count("receiving from the channel layer works again") == 2, caplog.text
    assert "refused" in caplog.text and "retrying quietly" in caplog.text


def test_a_bug_in_the_layer_is_not_waited_out() -> None:
    """Only outages are retried: any other exception still reaches Channels."""
    patient = runner.PatientLayer(FakeLayer([ValueError("no such channel")]))
    with pytest.raises(ValueError, match="no such channel"):
        asyncio.run(patient.receive("prog-rocker"))


def test_the_worker_listens_through_a_patient_layer() -> None:
    """PatientWorker hands Channels' listener the wrapped layer; other attributes pass through."""
    layer = FakeLayer([])
    worker = runner.PatientWorker(object(), ["prog-rocker"], layer)
    assert isinstance(worker.channel_layer, runner.PatientLayer)
    assert worker.channel_layer.layer is layer
    assert worker.channel_layer.extensions == ["groups"]


def test_no_layer_is_still_channels_error() -> None:
    """Without a channel layer, Channels' own error is raised, not an AttributeError."""
    with pytest.raises(ValueError, match="Channel layer is not valid"):
        runner.PatientWorker(object(), ["prog-rocker"], None)
