"""Forwarding start requests to the workers through a real channels_redis layer."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from channels.exceptions import ChannelFull
from channels.layers import channel_layers, get_channel_layer
from django.test import override_settings

from progrock.delay import close_default_stores, has_pending
from progrock.web import forward
from progrock.worker import start_watch
from progrock.worker.consumer import WorkerConsumer

pytestmark = pytest.mark.redis


# Forwarding works on channels_redis's own layer and on ProgRock's leaner one.
BACKENDS = ["channels_redis.core.RedisChannelLayer", "progrock.contrib.layer.RedisChannelLayer"]


def _layers(redis_url: str, backend: str = BACKENDS[0], **config: Any) -> dict[str, Any]:
    return {"default": {"BACKEND": backend, "CONFIG": {"hosts": [redis_url], **config}}}


@pytest.fixture(params=BACKENDS, ids=["channels_redis", "progrock.contrib.layer"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def layer_settings(redis_url: str, backend: str) -> Iterator[None]:
    # The watchdogs go to the delay store, in PROGROCK's Redis: the private one too.
    with override_settings(
        CHANNEL_LAYERS=_layers(redis_url, backend), PROGROCK={"REDIS_URL": redis_url}
    ):
        channel_layers.backends.clear()
        yield
    channel_layers.backends.clear()


async def _forward(n: int) -> list[str]:
    ids = [str(uuid.uuid4()) for _ in range(n)]
    await asyncio.gather(
        *(
            forward.forward_start(
                task_id=task_id, kind="rock", params={}, owner="o", reply_channel=None, ref=i
            )
            for i, task_id in enumerate(ids)
        )
    )
    return ids


async def test_starts_sent_together_share_one_message(layer_settings: None) -> None:
    """Starts forwarded in the same loop turn travel as one message with every start in it."""
    ids = await _forward(5)
    layer = get_channel_layer()
    message = await asyncio.wait_for(layer.receive("prog-rocker"), 5)
    assert message["type"] == "progrock.start"
    starts = message["starts"]
    assert [s["task_id"] for s in starts] == ids
    assert all(s["type"] == "progrock.start" and s["kind"] == "rock" for s in starts)
    assert [s["ref"] for s in starts] == list(range(5))


async def test_starts_a_few_ms_apart_share_one_message(layer_settings: None) -> None:
    """Pages starting tasks one after another (not in one loop turn) still share a send,
    as long as they come within FORWARD_WINDOW of the first."""
    ids = [str(uuid.uuid4()) for _ in range(3)]

    async def start(i: int) -> None:
        await asyncio.sleep(i * forward.FORWARD_WINDOW / 4)
        await forward.forward_start(
            task_id=ids[i], kind="rock", params={}, owner="o", reply_channel=None
        )

    await asyncio.gather(*(start(i) for i in range(3)))
    message = await asyncio.wait_for(get_channel_layer().receive("prog-rocker"), 5)
    assert [s["task_id"] for s in message["starts"]] == ids


async def test_a_lone_start_keeps_the_single_message_form(layer_settings: None) -> None:
    """One start on its own is sent as a plain progrock.start message."""
    [task_id] = await _forward(1)
    message = await asyncio.wait_for(get_channel_layer().receive("prog-rocker"), 5)
    assert message["task_id"] == task_id and "starts" not in message


async def test_every_caller_gets_the_send_error(redis_url: str, backend: str) -> None:
    """If the channel layer refuses the batch, each start of it raises that error."""
    with override_settings(CHANNEL_LAYERS=_layers(redis_url, backend, capacity=1)):
        channel_layers.backends.clear()
        try:
            await _forward(1)  # fills the channel
            refused = [str(uuid.uuid4()) for _ in range(3)]
            results = await asyncio.gather(
                *(
                    forward.forward_start(
                        task_id=task_id,
                        kind="rock",
                        params={},
                        owner="o",
                        reply_channel=None,
                    )
                    for task_id in refused
                ),
                return_exceptions=True,
            )
            # Their watchdogs went with them: nothing will forward them later.
            pending = [await has_pending(start_watch.watch_key(t)) for t in refused]
        finally:
            channel_layers.backends.clear()
            await close_default_stores()
    assert len(results) == 3 and all(isinstance(r, ChannelFull) for r in results)
    assert pending == [False, False, False]


async def test_each_forwarded_start_has_a_watchdog(layer_settings: None) -> None:
    """Forwarding arms, per start, its next attempt in the delay store (start:<task_id>)."""
    try:
        ids = await _forward(3)
        assert [await has_pending(start_watch.watch_key(t)) for t in ids] == [True] * 3
    finally:
        await close_default_stores()


async def test_the_worker_queues_each_start_of_a_batch() -> None:
    """A worker takes a batched message apart; a malformed entry is kept to be logged."""
    consumer = WorkerConsumer()
    consumer.START_RUNNERS = 0  # queue only: no runner, no I/O
    good = {"type": "progrock.start", "task_id": str(uuid.uuid4())}
    await consumer.progrock_start({"type": "progrock.start", "starts": [good, "junk"]})
    assert consumer._starts == [good, {"invalid": "junk"}]


async def _drain_starts(layer: Any, expected: int) -> list[dict[str, Any]]:
    """Every start on the worker channel, as single starts, until ``expected`` arrived."""
    starts: list[dict[str, Any]] = []
    while len(starts) < expected:
        message = await asyncio.wait_for(layer.receive("prog-rocker"), 5)
        starts += message.get("starts", [message])
    return starts


@pytest.mark.parametrize(
    "poison",
    [{"big": 2**70}, {"text": "\ud800"}, {"key\udfff": 1}],
    ids=["int-beyond-64-bits", "lone-surrogate", "lone-surrogate-key"],
)
async def test_a_poison_start_fails_alone_and_its_batch_still_goes(
    layer_settings: None, poison: dict[str, Any]
) -> None:
    """A start the channel layer cannot serialise, batched with 10 good ones, fails
    alone (Unsendable, its watchdog dropped); the 10 reach the workers intact."""
    good = [str(uuid.uuid4()) for _ in range(10)]
    bad = str(uuid.uuid4())

    async def start(task_id: str, params: dict[str, Any]) -> None:
        await forward.forward_start(
            task_id=task_id, kind="rock", params=params, owner="o", reply_channel=None, ref=1
        )

    try:
        calls = [start(t, {"n": i}) for i, t in enumerate(good[:5])]
        calls += [start(bad, poison)]
        calls += [start(t, {"n": i}) for i, t in enumerate(good[5:], 5)]
        results = await asyncio.gather(*calls, return_exceptions=True)
        arrived = await _drain_starts(get_channel_layer(), 10)
        bad_watched = await has_pending(start_watch.watch_key(bad))
        good_watched = [await has_pending(start_watch.watch_key(t)) for t in good]
    finally:
        await close_default_stores()
    assert [r is None for r in results] == [True] * 5 + [False] + [True] * 5
    assert isinstance(results[5], forward.Unsendable)
    assert sorted(s["task_id"] for s in arrived) == sorted(good)
    assert {s["task_id"]: s["params"] for s in arrived} == {t: {"n": i} for i, t in enumerate(good)}
    assert not bad_watched and good_watched == [True] * 10


async def test_a_caller_that_gave_up_before_the_send_has_nothing_sent(
    layer_settings: None,
) -> None:
    """A start whose caller was cancelled (its request timed out) while it waited
    for the batch window is left out of the batch: nothing was done for it."""
    kept, dropped = str(uuid.uuid4()), str(uuid.uuid4())

    async def start(task_id: str) -> None:
        await forward.forward_start(
            task_id=task_id, kind="rock", params={}, owner="o", reply_channel=None
        )

    try:
        waiting = asyncio.ensure_future(start(dropped))
        await asyncio.sleep(0)  # queued, the batch window still open
        waiting.cancel()
        await start(kept)
        message = await asyncio.wait_for(get_channel_layer().receive("prog-rocker"), 5)
        dropped_watched = await has_pending(start_watch.watch_key(dropped))
    finally:
        await close_default_stores()
    assert message["task_id"] == kept and "starts" not in message
    assert not dropped_watched
