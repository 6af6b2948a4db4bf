"""Graceful restarts of a web process: on SIGTERM, every ProgRock socket closes with 1012.

Left to themselves, ASGI servers stop on SIGTERM without telling the
application's sockets why: Daphne (Twisted) cancels the applications and drops
the connections (clients see 1006, abnormal closure), Uvicorn closes them with
1012 but no reason, after it stopped listening. Here the web process first
closes each ProgRock socket itself with 1012 (service restart, RFC 6455 as
amended by IANA's registry) and the reason :data:`RESTART_REASON`, so that
clients reconnect at once, to another web process behind the load balancer;
then it hands the signal to the server, which exits as it always does.

Each socket first waits (at most ``START_ANSWER_WAIT`` seconds) for the
answers to the starts it forwarded, so that no start's ``started`` is lost in
the restart; starts that arrive meanwhile are refused ``unavailable``. A
socket that connects while the process is stopping is closed with 1012 too.
The whole drain takes at most ``WEB_STOP_GRACE`` seconds; a second SIGTERM
hands over at once.

An ASGI server gives an application no start-up hook (Daphne has no lifespan
protocol, and ``progrock up`` runs Uvicorn with ``--lifespan off``), so the
handler is installed by the first socket, with ``signal.signal`` in the main
thread; the server's own handler, installed before any connection, is kept
and called at the end (or at once if SIGTERM comes before any socket).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
import weakref
from collections.abc import Callable
from types import FrameType
from typing import Any, Final, Protocol

from progrock.tuning import WEB_STOP_GRACE

logger = logging.getLogger("progrock.web")

#: RFC 6455 close code "service restart": the client should reconnect at once.
CLOSE_SERVICE_RESTART: Final = 1012
#: The close reason sent with it (Daphne drops reasons: django/daphne#374).
RESTART_REASON: Final = "server restarting; reconnect"

_Handler = Callable[[int, FrameType | None], Any] | int | None


class Restartable(Protocol):
    """What the drain needs of a socket's consumer."""

    async def close_for_restart(self) -> None: ...


class Drain:
    """The process's open ProgRock sockets, and closing them all on SIGTERM."""

    def __init__(self, grace: float = WEB_STOP_GRACE) -> None:
        self.grace = grace
        self.sockets: weakref.WeakSet[Restartable] = weakref.WeakSet()
        self.stopping = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._previous: _Handler = None
        self._installed = False
        self._handed_over = False
        self._empty: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None

    # -- sockets ----------------------------------------------------------------

    def add(self, socket: Restartable) -> None:
        """Count an open socket (and install the SIGTERM handler on the first)."""
        self.install()
        self.sockets.add(socket)

    def discard(self, socket: Restartable) -> None:
        self.sockets.discard(socket)
        if not self.sockets and self._empty is not None:
            self._empty.set()

    # -- the signal -------------------------------------------------------------

    def install(self) -> bool:
        """Take over SIGTERM for this process, keeping the server's handler to call
        after the drain; False where a handler cannot be set (not the main thread)."""
        if self._installed:
            return True
        if self.stopping or threading.current_thread() is not threading.main_thread():
            return False
        self._loop = asyncio.get_running_loop()
        self._previous = signal.getsignal(signal.SIGTERM)
        signal.signal(signal.SIGTERM, self._on_signal)
        self._installed = True
        return True

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        # In the main thread, between two bytecodes of whatever runs: only
        # schedule the drain (a second signal hands over at once).
        loop = self._loop
        if self.stopping or loop is None or loop.is_closed():
            self._hand_over(signum)
            return
        self.stopping = True
        loop.call_soon_threadsafe(self._begin, signum)

    def _begin(self, signum: int) -> None:
        self._task = asyncio.ensure_future(self.drain(signum))

    async def drain(self, signum: int = signal.SIGTERM) -> None:
        """Close every socket with 1012 (at most ``grace`` seconds), then hand the
        signal to the server."""
        self.stopping = True
        sockets = list(self.sockets)
        name = signal.Signals(signum).name
        logger.info(
            "web process got %s: closing %d ProgRock sockets with 1012 (service restart)",
            name,
            len(sockets),
        )
        loop = asyncio.get_running_loop()
        began = loop.time()
        self._empty = asyncio.Event()
        if not self.sockets:
            self._empty.set()
        closing = [asyncio.ensure_future(s.close_for_restart()) for s in sockets]
        try:
            async with asyncio.timeout(self.grace):
                await asyncio.gather(*closing, return_exceptions=True)
                await self._empty.wait()  # each closing handshake done
        except TimeoutError:
            pass
        left = len(self.sockets)
        logger.info(
            "web process closed %d sockets in %.1f s (%d still open); stopping the server",
            len(sockets) - left,
            loop.time() - began,
            left,
        )
        self._hand_over(signum)

    def _hand_over(self, signum: int) -> None:
        """Give the signal to the handler the server had installed (once)."""
        if self._handed_over:
            return
        self._handed_over = True
        previous = self._previous if self._installed else signal.SIG_DFL
        if self._installed:
            signal.signal(signum, previous)  # a further signal goes straight to it
            self._installed = False
        if callable(previous):
            previous(signum, None)
        elif previous in (signal.SIG_DFL, None):
            os.kill(os.getpid(), signum)


_refusal_logged = False


def refused_code(code: int, exc: Exception) -> None:
    """Log (once a process) that the server refused to close with ``code`` (1012, 1013)."""
    global _refusal_logged
    if not _refusal_logged:
        _refusal_logged = True
        logger.warning(
            "the ASGI server refused close code %d (%s); closing with 1000 instead. "
            "Under Daphne, call progrock.contrib.daphne_close_codes.install() in asgi.py",
            code,
            exc,
        )


#: The web process's drain (one per process: signals are per process).
drain = Drain()
