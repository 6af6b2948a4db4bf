"""``manage.py rundelay``: run the delay server behind the ``asgi.delay`` channel."""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import Any

from channels.layers import get_channel_layer
from django.core.management.base import BaseCommand, CommandError

from progrock.conf import progrock_settings
from progrock.delay import DelayServer
from progrock.exceptions import ProgRockError
from progrock.preflight import Unreachable, check_redis, redis_variable
from progrock.runtime import install_fast_loop, tune_gc

logger = logging.getLogger("progrock.delay")


class Command(BaseCommand):
    help = "Deliver messages sent to the asgi.delay channel when they are due (Redis-backed)."

    def handle(self, *args: Any, **options: Any) -> None:
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
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        server = DelayServer()
        running = asyncio.create_task(server.run(stop))
        ready = asyncio.create_task(server.ready.wait())
        await asyncio.wait([running, ready], return_when=asyncio.FIRST_COMPLETED)
        if ready.done():
            logger.info(
                "rundelay ready (channel %r)",
                progrock_settings.DELAY_CHANNEL,
            )
            self.stdout.write("rundelay ready")
            self.stdout.flush()
        else:
            ready.cancel()
        try:
            await running
        finally:
            layer = get_channel_layer()
            close = getattr(layer, "close_pools", None)
            if close is not None:
                await close()
