"""The delay server: ``asgi.delay`` channel -> Redis store -> target channels on time."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable, Coroutine
from typing import Any

from channels.exceptions import ChannelFull
from channels.layers import BaseChannelLayer, get_channel_layer
from redis.exceptions import RedisError

from progrock import metrics
from progrock.conf import progrock_settings
from progrock.delay.envelope import Delivery, Envelope, InvalidEnvelope, Pending, plan_deliveries
from progrock.delay.store import DelayStore, now_ms
from progrock.protocol import DELAY_CHANNEL, WORKER_CHANNEL
from progrock.tuning import (
    DELAY_BATCH_WINDOW,
    DELAY_CLAIM_LIMIT,
    DELAY_LEASE,
    DELAY_RECHECK,
    DELAY_RETRY,
    DELAY_STOP_GRACE,
    TICK_BATCH,
)

logger = logging.getLogger("progrock.delay")

# Errors of an unreachable or failing Redis / network: log and retry later.
TRANSIENT = (RedisError, OSError, asyncio.TimeoutError)


_Pairs = list[tuple[str, str | None]]  # (message id, key)


class _Health:
    """Whether Redis answers the delay server: one log line when it stops, one
    when it answers again, however many retries each loop makes meanwhile."""

    def __init__(self) -> None:
        self.down_since: float | None = None

    def failed(self, where: str, exc: BaseException) -> None:
        if self.down_since is None:
            self.down_since = time.monotonic()
            logger.warning(
                "delay server cannot reach Redis (%s: %s); waiting for it, retrying quietly",
                where,
                exc,
            )

    def ok(self) -> None:
        if self.down_since is not None:
            lasted = time.monotonic() - self.down_since
            self.down_since = None
            logger.warning("delay server reaches Redis again (after %.1f s)", lasted)


class _Backoff:
    def __init__(self, base: float = 0.05, cap: float = 2.0) -> None:
        self.base, self.cap, self.current = base, cap, base

    def next(self) -> float:
        value, self.current = self.current, min(self.cap, self.current * 2)
        return value

    def reset(self) -> None:
        self.current = self.base


async def _wait(event: asyncio.Event, timeout: float) -> None:
    """Wait until ``event`` is set, at most ``timeout`` seconds (sets it on timeout).

    Not ``wait_for``: on Python 3.11 it can swallow a cancellation that
    races with its timeout, and the loop would never stop.
    """
    handle = asyncio.get_running_loop().call_later(timeout, event.set)
    try:
        await event.wait()
    finally:
        handle.cancel()


async def _cancel_all(tasks: list[asyncio.Task[Any]], deadline_s: float = 10.0) -> None:
    """Cancel ``tasks`` and wait for them, cancelling again if a cancel was lost.

    On Python 3.11 redis-py's ``asyncio.wait_for`` around socket writes (used
    when ``socket_timeout`` is set) can swallow a cancellation that races
    with the write; one ``cancel()`` is then not enough.
    """
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline_s
    pending = [task for task in tasks if not task.done()]
    while pending and loop.time() < end:
        for task in pending:
            task.cancel()
        _, still = await asyncio.wait(pending, timeout=0.05)
        pending = list(still)
    for task in pending:
        logger.error("delay server task %s did not stop", task.get_name())
    for task in tasks:
        if task.done() and not task.cancelled() and task.exception() is not None:
            logger.debug("task %s ended with %r", task.get_name(), task.exception())


class DelayServer:
    """Serve the ``asgi.delay`` channel from a durable Redis store.

    Tasks: a receiver (channel layer -> store), a listener (wake-ups
    announced on pub/sub), the scheduler (claim due messages, send them) and
    a sweep trigger (one ``progrock.sweep`` message per ``SWEEP_INTERVAL`` across all
    servers). ``ready`` is set once all of them run and Redis answered.

    Stopping (``stop`` set, on SIGTERM) leaves nothing half-claimed: no new
    claim is made, the delivery pass in hand gets ``stop_grace_s`` to finish,
    and if it is cut, what it had sent is acked and the rest put back to
    pending at once. Received messages not yet stored are stored.
    """

    def __init__(
        self,
        store: DelayStore | None = None,
        layer: BaseChannelLayer | None = None,
        *,
        lease_ms: float = DELAY_LEASE * 1000,
        claim_limit: int = DELAY_CLAIM_LIMIT,
        retry_ms: float = DELAY_RETRY * 1000,
        recheck_s: float = DELAY_RECHECK,
        batch_window_ms: float = DELAY_BATCH_WINDOW * 1000,
        stop_grace_s: float = DELAY_STOP_GRACE,
    ) -> None:
        # After a pass that delivered something, the next pass waits until this
        # long after the last one began: under load, due messages pile up into
        # fewer, larger (merged) deliveries; when idle, nothing waits.
        self.batch_window_ms = batch_window_ms
        self._store = store
        self._layer = layer
        self._stopping = False
        self.lease_ms = lease_ms
        self.claim_limit = claim_limit
        self.retry_ms = retry_ms
        self.recheck_s = recheck_s
        self.stop_grace_s = stop_grace_s
        # The pass in hand: what it claimed, and what of that it has sent.
        self._in_hand: _Pairs = []
        self._sent: _Pairs = []
        #: After run(): claimed messages it could neither deliver nor put back
        #: (Redis failed at the end); their lease gives them back later.
        self.left_claimed = 0
        self.ready = asyncio.Event()
        self._wake = asyncio.Event()
        self._planned = math.inf
        self._queue: asyncio.Queue[Envelope] = asyncio.Queue()
        self._listening = asyncio.Event()
        self._claimed_once = asyncio.Event()
        self.health = _Health()

    @property
    def store(self) -> DelayStore:
        if self._store is None:
            raise RuntimeError("DelayServer.store is only available while run() runs")
        return self._store

    @property
    def layer(self) -> BaseChannelLayer:
        if self._layer is None:
            raise RuntimeError("DelayServer.layer is only available while run() runs")
        return self._layer

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Serve until ``stop`` is set (forever if None)."""
        stop = stop or asyncio.Event()
        self._stopping = False
        owned = self._store is None
        if self._store is None:
            self._store = DelayStore.from_settings()
        if self._layer is None:
            layer = get_channel_layer()
            if layer is None:
                raise RuntimeError("no channel layer configured (settings.CHANNEL_LAYERS)")
            self._layer = layer
        loops: list[Callable[[], Coroutine[Any, Any, None]]] = [
            self._listen_loop,
            self._receive_loop,
            self._store_loop,
            self._sweep_loop,
        ]
        scheduler = asyncio.create_task(self._schedule_loop(), name="rundelay_schedule_loop")
        tasks = [scheduler]
        tasks += [asyncio.create_task(loop(), name=f"rundelay{loop.__name__}") for loop in loops]
        stopper = asyncio.create_task(stop.wait())
        ready = asyncio.create_task(self._become_ready())
        try:
            done, _ = await asyncio.wait([stopper, *tasks], return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if task is not stopper:
                    task.result()  # a loop ended: re-raise its error
        finally:
            # Let a delivery pass in progress finish (claimed messages would
            # otherwise wait for their lease), then cancel everything.
            self._stopping = True
            self._wake.set()
            await asyncio.wait([scheduler], timeout=self.stop_grace_s)
            await _cancel_all([stopper, ready, *tasks])
            await self._put_back_in_hand()
            await self._store_leftovers()
            self.ready.clear()
            if owned:
                await self._store.aclose()
                self._store = None

    async def _become_ready(self) -> None:
        await self._listening.wait()
        await self._claimed_once.wait()
        self.ready.set()
        logger.debug("delay server ready on %r", DELAY_CHANNEL)

    # -- wake-ups ------------------------------------------------------------

    async def _listen_loop(self) -> None:
        backoff = _Backoff()
        while not self._stopping:
            pubsub = self.store.client.pubsub()
            try:
                await pubsub.subscribe(self.store.wake_channel)
                self.health.ok()
                self._wake.set()  # messages may have been announced while deaf
                self._listening.set()
                backoff.reset()
                while not self._stopping:
                    message = await pubsub.get_message(
                        ignore_subscribe_messages=True, timeout=self.recheck_s
                    )
                    if message is not None:
                        self._announced(message.get("data"))
            except TRANSIENT as exc:
                self.health.failed("wake-up listener", exc)
                await asyncio.sleep(backoff.next())
            finally:
                with contextlib.suppress(*TRANSIENT):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]

    def _announced(self, data: object) -> None:
        try:
            due = float(data)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            logger.warning("ignoring malformed wake-up %r: expected a due time in ms", data)
            return
        if due < self._planned:
            self._wake.set()

    # -- asgi.delay channel -> store ------------------------------------------

    async def _receive_loop(self) -> None:
        channel = DELAY_CHANNEL
        backoff = _Backoff()
        while not self._stopping:
            try:
                message = await self.layer.receive(channel)
            except TRANSIENT as exc:
                self.health.failed(f"receiving from {channel!r}", exc)
                await asyncio.sleep(backoff.next())
                continue
            except Exception as exc:  # never stop receiving
                logger.warning("receiving from %r failed (%r); retrying", channel, exc)
                await asyncio.sleep(backoff.next())
                continue
            self.health.ok()
            backoff.reset()
            try:
                envelope = Envelope.from_message(message)
            except InvalidEnvelope as exc:
                logger.warning("dropping malformed envelope from %r: %s", channel, exc)
                continue
            self._queue.put_nowait(envelope)

    async def _store_loop(self) -> None:
        backoff = _Backoff()
        while not self._stopping:
            batch = [await self._queue.get()]
            while not self._queue.empty():
                batch.append(self._queue.get_nowait())
            while True:
                try:
                    await self.store.schedule_many(batch)
                    self.health.ok()
                    backoff.reset()
                    break
                except InvalidEnvelope:  # not JSON-serializable: drop them one by one
                    await self._store_each(batch)
                    break
                except TRANSIENT as exc:
                    self.health.failed(f"storing {len(batch)} delayed messages", exc)
                    if self._stopping:
                        for envelope in batch:
                            self._queue.put_nowait(envelope)
                        return
                    await asyncio.sleep(backoff.next())
                except asyncio.CancelledError:
                    for envelope in batch:  # keep them for _store_leftovers
                        self._queue.put_nowait(envelope)
                    raise

    async def _store_each(self, batch: list[Envelope]) -> None:
        for envelope in batch:
            try:
                await self.store.schedule_many([envelope])
            except InvalidEnvelope as exc:
                logger.warning("dropping malformed envelope for %r: %s", envelope.channel, exc)

    async def _put_back_in_hand(self) -> None:
        """After a pass was cut: ack what it sent, put the rest of its claim back."""
        in_hand, self._in_hand = self._in_hand, []
        sent, self._sent = set(self._sent), []
        self.left_claimed = 0
        if not in_hand or self._store is None:
            return
        rest = [pair for pair in in_hand if pair not in sent]
        try:
            async with asyncio.timeout(5.0):
                await self._store.ack(list(sent))
                await self._store.retry(rest, now_ms())
        except TRANSIENT as exc:
            self.left_claimed = len(rest)
            logger.error(
                "could not put back %d claimed delayed messages at shutdown (%s); "
                "their lease gives them back within %.0f s",
                len(rest),
                exc,
                self.lease_ms / 1000,
            )
            return
        logger.warning(
            "delivery pass cut at shutdown: %d sent, %d claimed messages put back",
            len(sent),
            len(rest),
        )

    async def _store_leftovers(self) -> None:
        leftovers: list[Envelope] = []
        while not self._queue.empty():
            leftovers.append(self._queue.get_nowait())
        if leftovers and self._store is not None:
            try:
                await asyncio.wait_for(self._store.schedule_many(leftovers), 5.0)
            except (*TRANSIENT, InvalidEnvelope) as exc:
                logger.error(
                    "lost %d received delayed messages at shutdown: %s", len(leftovers), exc
                )

    # -- store -> target channels --------------------------------------------

    async def _schedule_loop(self) -> None:
        backoff = _Backoff()
        while not self._stopping:
            try:
                self._wake.clear()
                self._planned = math.inf  # any announcement during the claim wakes us
                pass_began = now_ms()
                claim = await self.store.claim(pass_began, self.lease_ms, self.claim_limit)
                self.health.ok()
                self._claimed_once.set()
                backoff.reset()
                if claim.reclaimed:
                    logger.warning(
                        "re-queued %d delayed messages whose delivery lease expired",
                        claim.reclaimed,
                    )
                wake_at = min(claim.next_due_ms or math.inf, claim.next_lease_ms or math.inf)
                if claim.items:
                    retry_at = await self._deliver(claim.items)
                    wake_at = min(wake_at, retry_at)
                    if len(claim.items) >= self.claim_limit:
                        continue  # more may be due now
                    # Claim again once the batch window is over, and only if
                    # something falls due by then; otherwise sleep until the
                    # next due time (an empty claim is a wasted round trip).
                    window_end = pass_began + self.batch_window_ms
                    if wake_at <= window_end or self._wake.is_set():
                        rest = window_end - now_ms()
                        if rest > 0:
                            await asyncio.sleep(rest / 1000)
                        continue
                self._planned = wake_at
                timeout = min(self.recheck_s, max(0.0, (wake_at - now_ms()) / 1000.0))
                if timeout > 0:
                    await _wait(self._wake, timeout)
            except Exception as exc:  # Redis errors, and bugs: log, never stop serving
                pause = backoff.next()
                if isinstance(exc, TRANSIENT):
                    self.health.failed("delay scheduler", exc)
                else:
                    logger.exception("delay scheduler: unexpected error; retry in %.2fs", pause)
                self._wake.clear()
                await _wait(self._wake, pause)

    async def _deliver(self, items: list[tuple[str, str]]) -> float:
        """Send claimed messages; return when the ones put back fall due (inf if none)."""
        messages: list[Pending] = []
        dropped: list[tuple[str, str | None]] = []
        for message_id, raw in items:
            try:
                messages.append(Pending.from_json(message_id, raw))
            except InvalidEnvelope as exc:
                logger.warning("dropping malformed stored message %r: %s", message_id, exc)
                dropped.append((message_id, None))
        # What a stop that cuts this pass must put back (see _put_back_in_hand).
        self._in_hand = [(m.id, m.key) for m in messages] + dropped
        self._sent = list(dropped)
        by_channel: dict[str, list[Delivery]] = {}
        for delivery in plan_deliveries(messages, TICK_BATCH):
            by_channel.setdefault(delivery.channel, []).append(delivery)
        # Channels concurrently, each channel in order: concurrent sends to one
        # channel would slip past channels_redis's capacity check.
        results = await asyncio.gather(*(self._send_in_order(ds) for ds in by_channel.values()))
        done = dropped + [pair for sent, _ in results for pair in sent]
        later = [pair for _, retry in results for pair in retry]
        await self.store.ack(done)
        metrics.DELAY_DELIVERED.inc(len(done) - len(dropped))
        retry_at = math.inf
        if later:
            retry_at = now_ms() + self.retry_ms
            # This server wakes by then: its own announcement must not wake it early.
            self._planned = min(self._planned, retry_at)
            await self.store.retry(later, retry_at)
        self._in_hand, self._sent = [], []
        return retry_at

    async def _send_in_order(self, deliveries: list[Delivery]) -> tuple[_Pairs, _Pairs]:
        """Send one channel's deliveries in order; return (done, to retry) id/key pairs."""
        done: _Pairs = []
        for index, delivery in enumerate(deliveries):
            channel = delivery.channel
            try:
                await self.layer.send(channel, delivery.content)
            except ChannelFull:
                rest = [(m.id, m.key) for d in deliveries[index:] for m in d.sources]
                logger.warning(
                    "channel %r is full; retrying %d delayed messages in %.0f ms",
                    channel,
                    len(rest),
                    self.retry_ms,
                )
                return done, rest
            except (TypeError, ValueError) as exc:
                logger.warning(
                    "dropping delayed message to %r the channel layer refused (%s): %r",
                    channel,
                    exc,
                    delivery.content,
                )
            except TRANSIENT as exc:
                self.health.failed(f"sending to {channel!r}", exc)
                return done, [(m.id, m.key) for d in deliveries[index:] for m in d.sources]
            sent = [(m.id, m.key) for m in delivery.sources]
            done += sent
            self._sent += sent
        return done, []

    # -- sweep trigger ---------------------------------------------------------

    async def _sweep_loop(self) -> None:
        while not self._stopping:
            interval = progrock_settings.SWEEP_INTERVAL
            try:
                if await self.store.try_lock("sweep:lock", max(1, int(interval * 1000))):
                    await self.layer.send(WORKER_CHANNEL, _SWEEP)
                self.health.ok()
            except ChannelFull:
                logger.warning(
                    "worker channel %r is full; skipping this sweep trigger",
                    WORKER_CHANNEL,
                )
            except TRANSIENT as exc:
                self.health.failed("sweep trigger", exc)
            # Try often, win at most once per interval (the lock's lifetime).
            await asyncio.sleep(interval / 4)


_SWEEP: dict[str, Any] = {"type": "progrock.sweep"}
