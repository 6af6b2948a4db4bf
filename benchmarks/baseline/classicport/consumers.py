"""The 2017 demo's ``ws_connect``, ``ws_receive`` and ``worker``, as Channels 4 consumers.

Channels 1 routed bare functions; Channels 4 routes consumer classes and
dispatches every channel message on its ``type``. Otherwise this is the 2017 demo:
the socket consumer forwards ``start`` to ``prog-rocker``; the worker sends
``{"progress": p}`` to the socket and re-arms itself through the delay server
(``asgi.delay``) every 200 ms, adding 3 % each time.

The async consumer classes are used (the 2017 demo's functions were synchronous):
they are Channels 4's cheaper option, so the baseline is not handicapped.
"""

from __future__ import annotations

import json
from typing import Any

from channels.consumer import AsyncConsumer
from channels.generic.websocket import AsyncWebsocketConsumer

WORKER_CHANNEL = "prog-rocker"
DELAY_CHANNEL = "asgi.delay"
DELAY_MS = 200
STEP = 3


class ProgConsumer(AsyncWebsocketConsumer):  # type: ignore[misc]
    """The socket at ``/prog/`` (the 2017 demo's ``ws_connect`` and ``ws_receive``)."""

    async def connect(self) -> None:
        await self.accept()
        await self.send(text_data=json.dumps({"accept": True}))

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        data = json.loads(text_data or "{}")
        if data.get("action") == "start":
            await self.channel_layer.send(
                WORKER_CHANNEL,
                {"type": "rock.command", "reply_channel": self.channel_name, "action": "start"},
            )

    async def rock_send(self, event: dict[str, Any]) -> None:
        """A worker's message for this socket (Channels 1's reply-channel send)."""
        await self.send(text_data=event["text"])


class RockerConsumer(AsyncConsumer):  # type: ignore[misc]
    """The ``prog-rocker`` worker (the 2017 demo's ``worker``)."""

    async def rock_command(self, message: dict[str, Any]) -> None:
        action = message["action"]
        reply = message["reply_channel"]
        if action == "start":
            progress = 0
            await self._send_to_ws(reply, {"progress": progress})
            await self._delayed_send(reply, progress)
        elif action == "continue":
            progress = message["progress"] + STEP
            if progress >= 100:
                await self._send_to_ws(reply, {"complete": True, "progress": 100})
            else:
                await self._send_to_ws(reply, {"progress": progress})
                await self._delayed_send(reply, progress)

    async def _send_to_ws(self, reply_channel: str, content: dict[str, Any]) -> None:
        await self.channel_layer.send(
            reply_channel, {"type": "rock.send", "text": json.dumps(content)}
        )

    async def _delayed_send(self, reply_channel: str, progress: int) -> None:
        await self.channel_layer.send(
            DELAY_CHANNEL,
            {
                "channel": WORKER_CHANNEL,
                "content": {
                    "type": "rock.command",
                    "reply_channel": reply_channel,
                    "action": "continue",
                    "progress": progress,
                },
                "delay": DELAY_MS,
            },
        )
