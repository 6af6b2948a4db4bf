"""Telling a socket that the worker refused its request (a ``progrock.error`` message)."""

from __future__ import annotations

import logging
from typing import Any

from channels.layers import get_channel_layer

logger = logging.getLogger("progrock.worker")


async def reply_error(reply_channel: object, code: str, detail: str, **context: Any) -> None:
    """Send ``progrock.error`` to the socket's reply channel; without one (a task
    started from server code), log it."""
    if not isinstance(reply_channel, str) or not reply_channel:
        logger.warning("%s: %s", code, detail)
        return
    layer = get_channel_layer()
    if layer is not None:
        await layer.send(
            reply_channel, {"type": "progrock.error", "code": code, "detail": detail, **context}
        )
