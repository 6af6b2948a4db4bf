"""progrock.web.restart: on SIGTERM every socket closes for a restart, then the server's
handler gets the signal (real signals to this process; sockets are stand-ins)."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Iterator
from types import FrameType

import pytest

from progrock.web.restart import Drain


class Socket:
    """A consumer stand-in: closing it takes ``delay`` seconds (None: never finishes)."""

    def __init__(self, drain: Drain, delay: float | None = 0.0) -> None:
        self.drain = drain
        self.delay = delay
        self.closed = False
        drain.add(self)

    async def close_for_restart(self) -> None:
        if self.delay is None:
            return  # the client never answers the close: it stays open
        await asyncio.sleep(self.delay)
        self.closed = True
        self.drain.discard(self)  # as the consumer's disconnect() does


@pytest.fixture
def server_handler() -> Iterator[list[tuple[int, float]]]:
    """Stand in for the ASGI server's SIGTERM handler; record when it is called."""
    calls: list[tuple[int, float]] = []
    before = signal.getsignal(signal.SIGTERM)

    def handler(signum: int, frame: FrameType | None) -> None:
        calls.append((signum, asyncio.get_running_loop().time()))

    signal.signal(signal.SIGTERM, handler)
    try:
        yield calls
    finally:
        signal.signal(signal.SIGTERM, before)


async def _until(condition: object) -> None:
    async with asyncio.timeout(10):
        while not condition():  # type: ignore[operator]
            await asyncio.sleep(0.005)


async def test_sigterm_closes_every_socket_then_hands_over(
    server_handler: list[tuple[int, float]], caplog: pytest.LogCaptureFixture
) -> None:
    """SIGTERM: each socket closes for a restart; only once the last one is gone does
    the server's own handler get the signal, and only once; a further SIGTERM goes
    straight to it."""
    caplog.set_level(logging.INFO, logger="progrock.web")
    drain = Drain(grace=30)
    sockets = [Socket(drain, delay=0.01 * i) for i in range(5)]
    os.kill(os.getpid(), signal.SIGTERM)
    await _until(lambda: server_handler)
    assert all(s.closed for s in sockets)
    assert [signum for signum, _ in server_handler] == [signal.SIGTERM]
    assert "closing 5 ProgRock sockets with 1012" in caplog.text
    assert "closed 5 sockets in" in caplog.text and "(0 still open)" in caplog.text
    os.kill(os.getpid(), signal.SIGTERM)
    await _until(lambda: len(server_handler) == 2)
    assert drain.stopping


async def test_a_socket_that_never_closes_waits_only_the_grace(
    server_handler: list[tuple[int, float]], caplog: pytest.LogCaptureFixture
) -> None:
    """A client that never answers the close holds the stop back ``grace`` seconds, no more."""
    caplog.set_level(logging.INFO, logger="progrock.web")
    drain = Drain(grace=0.1)
    stuck = Socket(drain, delay=None)
    os.kill(os.getpid(), signal.SIGTERM)
    await _until(lambda: server_handler)
    assert not stuck.closed
    assert "(1 still open)" in caplog.text


async def test_a_second_sigterm_hands_over_at_once(
    server_handler: list[tuple[int, float]],
) -> None:
    """A second SIGTERM while the sockets close: the server gets it at once, and the
    drain, ending later, does not hand it over again."""
    drain = Drain(grace=0.2)
    stuck = Socket(drain, delay=None)
    os.kill(os.getpid(), signal.SIGTERM)
    await _until(lambda: drain._task is not None)
    os.kill(os.getpid(), signal.SIGTERM)
    await _until(lambda: server_handler)
    assert drain._task is not None
    await drain._task  # its grace over
    assert len(server_handler) == 1
    assert not stuck.closed
