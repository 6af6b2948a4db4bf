"""Task updates skip Channels' session wrapper around ``send`` (pure: no I/O)."""

from __future__ import annotations

import asyncio
from typing import Any

from channels.sessions import InstanceSessionWrapper

from progrock.web.consumer import frame_send


async def inner(message: dict[str, Any]) -> None:
    sent.append(message)


sent: list[dict[str, Any]] = []


def test_frames_go_to_the_send_under_every_session_wrapper() -> None:
    outer = InstanceSessionWrapper({"cookies": {}}, inner)
    # A second SessionMiddleware sees the session already in scope (not activated).
    nested = InstanceSessionWrapper(outer.scope, outer.send)
    assert frame_send(nested.send) is inner
    sent.clear()
    frame = {"type": "websocket.send", "text": '{"progress": 3}'}
    asyncio.run(frame_send(nested.send)(frame))
    assert sent == [frame]


def test_a_send_without_wrappers_is_used_as_it_is() -> None:
    async def plain(message: dict[str, Any]) -> None:
        return None

    assert frame_send(plain) is plain
    assert frame_send(inner) is inner
