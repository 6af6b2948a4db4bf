"""Write-through for Twisted's TCP server connections (Daphne's sockets); opt-in.

Twisted buffers every ``transport.write()`` and sends it on the reactor's
next turn: it registers the socket for writability with epoll, waits for the
event, sends, and unregisters it again, for every WebSocket frame. A web
process pushing thousands of progress frames a second spends about a fifth
of its CPU on that registering and dispatching (``py-spy`` on Daphne at
1,500 tasks), not on sending. asyncio's transports do what this does: when
nothing is waiting in the buffer, send at once, and only register with the
reactor for what the socket did not take.

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
"""

from __future__ import annotations

import logging
from typing import Any

logger = logging.getLogger("progrock")

_MARK = "_progrock_write_through"


def install() -> bool:
    """Make Twisted TCP server connections send at once when nothing is buffered.

    Returns True if installed (now or before), False if Twisted is missing.
    """
    try:
        from twisted.internet import tcp
    except ImportError:
        return False
    server: Any = tcp.Server
    if getattr(server, _MARK, False):
        return True
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
