"""Close, not drop, a Daphne socket that sends a frame the server cannot take; opt-in.

Autobahn (under Daphne) fails a connection whose message exceeds Daphne's
``--websocket-max-message-size`` (1 MiB), or whose text frame is not valid
UTF-8, by dropping the TCP connection: the client sees 1006 (abnormal
closure) and cannot tell why. Its ``failByDrop`` protocol option, on by
default, chooses that; with it off, Autobahn sends a close frame with the
reason's code instead, 1009 (message too big) or 1007 (invalid frame payload
data), as the protocol documents (``docs/protocol.md``, section 1).

:func:`install` turns ``failByDrop`` off in the WebSocket factory Daphne
builds; nothing else changes (the closing handshake is still bounded by
Autobahn's ``closeHandshakeTimeout``). Call it in ``asgi.py`` when Daphne
serves it (the example project does). Uvicorn's WebSocket implementations
already close with 1009 and 1007.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

logger = logging.getLogger("progrock")

_MARK = "_progrock_closes_instead_of_dropping"


def install() -> bool:
    """Make Daphne's WebSocket factory close failed connections with their code.

    Returns True if installed (now or before), False if Daphne is missing.
    """
    try:
        from daphne.ws_protocol import WebSocketFactory
    except ImportError:
        return False
    if getattr(WebSocketFactory, _MARK, False):
        return True
    original = WebSocketFactory.__init__

    @functools.wraps(original)
    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        self.setProtocolOptions(failByDrop=False)

    WebSocketFactory.__init__ = init
    setattr(WebSocketFactory, _MARK, True)
    logger.debug("Daphne closes failed WebSocket connections with their close code")
    return True
