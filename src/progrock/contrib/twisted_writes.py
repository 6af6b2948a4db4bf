"""Write-through for Twisted's TCP server connections (Daphne's sockets); opt-in.

Twisted buffers every ``transport.write()`` and sends it on the reactor's
next turn: it registers the socket for writability with epoll, waits for the
event, sends, and unregisters it again, for every WebSocket frame. A web
process pushing thousands of progress frames a second spends about a fifth
of its CPU on that registering and dispatching (``py-spy`` on Daphne at
1,500 tasks), not on sending. asyncio's transports do what this does: when
nothing is waiting in the buffer, send at once, and only register with the
reactor for what the socket did not take. Measured: about a third less CPU
per update in the web process (``benchmarks/cpu_breakdown.py 1500 --step 1``:
web 45-47 -> 28-32 us per update; docs/performance.md).

Upstream: twisted/twisted#5303, "Default transport implementation doesn't
write out bytes immediately" (https://github.com/twisted/twisted/issues/5303,
open since 2011), asks for exactly this policy. Once Twisted's
``FileDescriptor.write`` sends at once when nothing is buffered, this module
is unnecessary.

:func:`install` patches ``twisted.internet.tcp.Server.write`` for the whole
process, so it is opt-in, like :func:`progrock.runtime.tune_gc`: call it in
your ``asgi.py`` when Daphne serves it (the example project does). It
applies to ``tcp.Server`` and what inherits it (Daphne's UNIX-socket server
too). Connections that ``startTLS`` keep Twisted's path; under an ``ssl:``
endpoint the TLS layer is a protocol on top, and the encrypted bytes it
writes to the plain connection below go out at once too. Connections with a
pull (non-streaming) producer, and connections being closed, aborted or
half-closed, keep Twisted's path; a send that leaves something over buffers
the rest as before (pausing a streaming producer if the buffer fills).
Autobahn sets ``TCP_NODELAY``, so frames written in one reactor turn are no
longer merged into one ``send``: each is its own system call. Send errors
are not handled here: the data is buffered as before, and Twisted's next
write attempt meets the error and closes the connection as it always does.

The write-through reads a dozen private members of Twisted's connections,
so it is guarded (:mod:`progrock.contrib._guard`): it installs only on the
Twisted versions it was tested with (:data:`GUARD`) and only when every
member it reads is there; otherwise :func:`install` warns once and changes
nothing.
"""

from __future__ import annotations

import logging
from typing import Any

from progrock.contrib._guard import Guard, missing_members

logger = logging.getLogger("progrock.contrib")

#: Tested with Twisted 26.10.0 (constraints.txt). Twisted is calendar-versioned
#: (year.month.patch) and promises nothing about private members, so the range
#: stops at the next year's releases: each new line is refused until tested.
GUARD = Guard("progrock.contrib.twisted_writes", "Twisted", first="26.10.0", before="27")

#: What the write-through reads on ``tcp.Server`` (class attributes and methods).
SERVER_MEMBERS = (
    "write",
    "writeSomeData",
    "TLS",
    "connected",
    "disconnecting",
    "_aborting",
    "_writeDisconnecting",
    "_writeDisconnected",
    "producer",
    "streamingProducer",
    "offset",
    "dataBuffer",
)
#: What it reads that each connection gets in ``FileDescriptor.__init__``.
CONNECTION_MEMBERS = ("_tempDataBuffer",)

_MARK = "_progrock_write_through"


def _missing(abstract: Any, tcp: Any) -> list[str]:
    """The members the write-through reads that this Twisted lacks."""
    gone = missing_members(tcp.Server, SERVER_MEMBERS, "twisted.internet.tcp.Server")
    base = getattr(abstract, "FileDescriptor", None)
    code = getattr(getattr(base, "__init__", None), "__code__", None)
    # Per-connection members exist only on instances: check that the
    # constructor every tcp.Server runs assigns them.
    assigned: tuple[str, ...] = ()
    if isinstance(base, type) and issubclass(tcp.Server, base) and code is not None:
        assigned = code.co_names
    where = "twisted.internet.abstract.FileDescriptor().{}"
    gone += [where.format(name) for name in CONNECTION_MEMBERS if name not in assigned]
    return gone


def install() -> bool:
    """Make Twisted TCP server connections send at once when nothing is buffered.

    Returns True if installed (now or before). False if Twisted is missing,
    or, with one warning, if this Twisted is not one it was tested with or
    lacks a member it reads: then nothing is changed.
    """
    try:
        import twisted
        from twisted.internet import abstract, tcp
    except ImportError:
        return False
    server: Any = tcp.Server
    if getattr(server, _MARK, False):
        return True
    if not GUARD.allows(getattr(twisted, "__version__", None), _missing(abstract, tcp)):
        return False
    buffered = server.write  # Twisted's: TLS-aware, buffers and waits for the reactor

    def write(self: Any, data: bytes) -> None:
        if (
            type(data) is bytes
            and data
            and not self.TLS
            and self.connected
            and not self.disconnecting
            and not self._aborting
            and not self._writeDisconnecting
            and not self._writeDisconnected
            # A streaming producer (Twisted's HTTP channel registers itself, and
            # stays registered after the WebSocket upgrade) only needs pausing
            # when the buffer fills, which a complete send never does; a pull
            # producer is asked for more only when a buffered write drains.
            and (self.producer is None or self.streamingProducer)
            and not self._tempDataBuffer
            and self.offset == len(self.dataBuffer)
        ):
            sent = self.writeSomeData(data)
            if isinstance(sent, int):
                if sent == len(data):
                    return
                if sent > 0:
                    data = data[sent:]
        buffered(self, data)

    write.__doc__ = buffered.__doc__
    server.write = write
    setattr(server, _MARK, True)
    logger.debug("Twisted TCP writes go out at once when nothing is buffered")
    return True
