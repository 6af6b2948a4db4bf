"""``manage.py rundelay``: run the delay server behind the ``asgi.delay`` channel.

Beside it, the process's heartbeat (:mod:`progrock.heartbeat`), with the size
of the delay set and how late its most overdue message is.

On SIGTERM (or SIGINT) it stops claiming, finishes or cuts the delivery pass in
hand leaving nothing half-claimed (see :class:`~progrock.delay.DelayServer`),
logs one line when the signal comes and one when it is done, and exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import signal
import time
from collections.abc import Mapping
from typing import Any

from channels.layers import get_channel_layer
from django.core.management.base import BaseCommand, CommandError

from progrock import heartbeat, logs, metrics
from progrock.conf import progrock_settings
from progrock.delay import DelayServer, DelayStore
from progrock.delay.store import now_ms
from progrock.exceptions import ProgRockError
from progrock.preflight import Unreachable, check_redis, redis_variable
from progrock.protocol import DELAY_CHANNEL
from progrock.runtime import install_fast_loop, tune_gc

logger = logging.getLogger("progrock.delay")


class Command(BaseCommand):
    help = "Deliver messages sent to the asgi.delay channel when they are due (Redis-backed)."

    def add_arguments(self, parser: Any) -> None:
        metrics.add_port_argument(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        logs.set_process_kind("delay")
        if options.get("metrics_port") is not None:
            try:
                metrics.serve("delay", options["metrics_port"])
            except ProgRockError as exc:
                raise CommandError(str(exc)) from None
        url = progrock_settings.REDIS_URL
        try:  # a malformed REDIS_URL: one line and exit (the delay server uses no database)
            check_redis(url, redis_variable(url))
        except Unreachable:
            pass  # the delay server waits for Redis itself, one log line per change of state
        except ProgRockError as exc:
            raise CommandError(str(exc)) from None
        install_fast_loop()
        tune_gc()
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        stopping_since: list[float] = []

        def on_signal(signum: signal.Signals) -> None:
            if not stop.is_set():
                stopping_since.append(time.monotonic())
                logger.info(
                    "rundelay got %s: claiming nothing more, finishing the delivery in hand",
                    signum.name,
                )
            stop.set()

        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, on_signal, signum)
        store = DelayStore.from_settings()
        server = DelayServer(store)
        running = asyncio.create_task(server.run(stop))
        ready = asyncio.create_task(server.ready.wait())
        await asyncio.wait([running, ready], return_when=asyncio.FIRST_COMPLETED)
        beats = heartbeat.Heartbeat(
            store.client,
            progrock_settings.KEY_PREFIX,
            heartbeat.Identity("delay"),
            figures=functools.partial(delay_figures, store),
        )
        beating = asyncio.create_task(beats.run(), name="progrock-heartbeat")
        if ready.done():
            # The first beat before the ready line: a start right after it finds this server.
            with contextlib.suppress(Exception):  # the loop beats again in a moment
                async with asyncio.timeout(2.0):
                    await beats.beat()
            logger.info(
                "rundelay ready (channel %r)",
                DELAY_CHANNEL,
            )
            self.stdout.write("rundelay ready")
            self.stdout.flush()
        else:
            ready.cancel()
        try:
            await running
        finally:
            beating.cancel()
            await asyncio.gather(beating, return_exceptions=True)
            await store.aclose()
            layer = get_channel_layer()
            close = getattr(layer, "close_pools", None)
            if close is not None:
                await close()
        if stopping_since:
            took = time.monotonic() - stopping_since[0]
            if server.left_claimed:
                logger.warning(
                    "rundelay stopped after %.1f s; %d claimed messages wait for their lease",
                    took,
                    server.left_claimed,
                )
            else:
                logger.info(
                    "rundelay stopped after %.1f s: every claimed message delivered or put back",
                    took,
                )


async def delay_figures(store: DelayStore) -> Mapping[str, float | int]:
    """A heartbeat's figures of a delay server: messages waiting, and how late the
    most overdue one is (ms; 0 when none is due)."""
    async with store.client.pipeline(transaction=False) as pipe:
        pipe.zcard(store.keys.pending)
        pipe.zrange(store.keys.pending, 0, 0, withscores=True)
        pending, oldest = await pipe.execute()
    due_lag = max(0.0, now_ms() - float(oldest[0][1])) if oldest else 0.0
    metrics.DELAY_PENDING.set(int(pending))
    metrics.DELAY_DUE_LAG.set(due_lag / 1000)
    return {"pending": int(pending), "due_lag_ms": round(due_lag, 1)}
