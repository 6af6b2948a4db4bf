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


class QuietLayer:
    """A channel layer that hands out ``messages``, then waits for ever (nothing sent)."""

    extensions = ["groups"]

    def __init__(self, messages: list[dict[str, Any]]) -> None:
        self.messages = messages
        self.calls = 0
        self.waiting = False  # every message handed out, a receive waits

    async def receive(self, channel: str) -> dict[str, Any]:
        self.calls += 1
        if self.messages:
            return self.messages.pop(0)
        self.waiting = True
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


class Recorder:
    """An ASGI application that records the types it receives and, if ``settles``,
    resolves a settle message's future."""

    def __init__(self, settles: bool = True) -> None:
        self.got: list[str] = []
        self.settles = settles

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            self.got.append(message["type"])
            if message["type"] == runner.SETTLE and self.settles:
                message["done"].set_result(None)


async def _stop_after(worker: runner.PatientWorker, layer: QuietLayer, *whys: str) -> None:
    while not layer.waiting:  # every message taken, the listener waits
        await asyncio.sleep(0)
    for why in whys:
        worker.request_stop(why)
        await asyncio.sleep(0)


def test_a_stop_request_settles_the_messages_taken_then_returns(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """request_stop: no further receive, the settle message queued behind the messages
    already taken, handle() returns once the application resolved it; two log lines."""
    layer = QuietLayer([{"type": "progrock.poll"}, {"type": "progrock.start"}])
    app = Recorder()
    worker = runner.PatientWorker(app, ["prog-rocker"], layer, stop_grace=30)

    async def main() -> None:
        stopping = asyncio.ensure_future(_stop_after(worker, layer, "SIGTERM"))
        await asyncio.wait_for(worker.handle(), 10)
        await stopping

    caplog.set_level(logging.INFO, logger="progrock.worker")
    asyncio.run(main())
    assert app.got == ["progrock.poll", "progrock.start", runner.SETTLE]
    assert layer.calls == 3  # the third receive was cancelled, none followed
    assert "worker got SIGTERM: taking no new message" in caplog.text
    assert "the work in hand is done" in caplog.text


def test_work_that_does_not_settle_is_left_after_the_grace_or_a_second_signal(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An application that never settles: handle() returns after stop_grace, or at once
    on a second stop request, saying the work was left unfinished."""
    caplog.set_level(logging.INFO, logger="progrock.worker")

    async def main(grace: float, whys: tuple[str, ...]) -> None:
        layer = QuietLayer([{"type": "progrock.poll"}])
        worker = runner.PatientWorker(Recorder(settles=False), ["c"], layer, stop_grace=grace)
        stopping = asyncio.ensure_future(_stop_after(worker, layer, *whys))
        await asyncio.wait_for(worker.handle(), 10)
        await stopping

    asyncio.run(main(0.05, ("SIGTERM",)))
    asyncio.run(main(60.0, ("SIGTERM", "SIGINT")))
    assert caplog.text.count("with work unfinished; the sweep re-arms what it left") == 2
    assert "worker got SIGINT again: exiting without waiting further" in caplog.text
