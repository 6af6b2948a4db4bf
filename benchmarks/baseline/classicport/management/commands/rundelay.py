"""A literal delay server for ``asgi.delay``, backed by a Redis sorted set.

Like Channels 1's ``rundelay``: one loop receives ``{"channel", "content",
"delay"}`` messages and stores each with its due time; another finds the due
ones, removes them one by one and sends each to its channel, sleeping a fixed
interval when nothing is due. Channels 1 checked once a second; this polls every
10 ms so the baseline's cadence is not crippled by the poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from typing import Any

import redis.asyncio as aioredis
from channels.layers import get_channel_layer
from django.conf import settings
from django.core.management.base import BaseCommand

DELAY_CHANNEL = "asgi.delay"
KEY = "classicport:delay"
IDLE_SLEEP = 0.01


class Command(BaseCommand):
    help = "Serve the asgi.delay channel from a Redis sorted set."

    def handle(self, *args: Any, **options: Any) -> None:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(self._serve())

    async def _serve(self) -> None:
        layer = get_channel_layer()
        if layer is None:
            raise RuntimeError(
                f"expected a CHANNEL_LAYERS setting, got {settings.CHANNEL_LAYERS!r}"
            )
        client = aioredis.Redis.from_url(settings.REDIS_URL)
        try:
            await asyncio.gather(self._receive(layer, client), self._dispatch(layer, client))
        finally:
            await client.aclose()

    async def _receive(self, layer: Any, client: aioredis.Redis) -> None:
        while True:
            message = await layer.receive(DELAY_CHANNEL)
            due = time.time() + float(message["delay"]) / 1000.0
            member = json.dumps(
                {
                    "id": uuid.uuid4().hex,
                    "channel": message["channel"],
                    "content": message["content"],
                }
            )
            await client.zadd(KEY, {member: due})

    async def _dispatch(self, layer: Any, client: aioredis.Redis) -> None:
        while True:
            due = await client.zrangebyscore(KEY, "-inf", time.time())
            if not due:
                await asyncio.sleep(IDLE_SLEEP)
                continue
            for member in due:
                if await client.zrem(KEY, member):
                    message = json.loads(member)
                    await layer.send(message["channel"], message["content"])
