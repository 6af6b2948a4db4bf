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

Upstream: no upstream issue found (searched django/daphne and
crossbario/autobahn-python for ``failByDrop`` and close codes on oversized
or invalid frames). What would make this module unnecessary: Daphne building
its ``WebSocketFactory`` with ``failByDrop=False`` (or a server option for it).

It wraps the constructor of Daphne's factory, so it is guarded
(:mod:`progrock.contrib._guard`): it installs only on the Daphne versions it
was tested with (:data:`GUARD`) and only when the factory takes the
``failByDrop`` option; otherwise it warns once and changes nothing.
"""

from __future__ import annotations

import functools
import inspect
import logging
from typing import Any

from progrock.contrib._guard import Guard, missing_members

logger = logging.getLogger("progrock.contrib")

#: Tested with Daphne 4.2.3 (constraints.txt); ProgRock's dependencies allow
#: ``daphne>=4.2,<4.3``, and a minor release may build its factory otherwise.
GUARD = Guard("progrock.contrib.autobahn_close", "Daphne", first="4.2.3", before="4.3")

_MARK = "_progrock_closes_instead_of_dropping"


def install() -> bool:
    """Make Daphne's WebSocket factory close failed connections with their code.

    Returns True if installed (now or before). False if Daphne is missing,
    or, with one warning, if this Daphne is not one it was tested with or its
    factory does not take ``failByDrop``: then nothing is changed.
    """
    try:
        import daphne
        from daphne.ws_protocol import WebSocketFactory
    except ImportError:
        return False
    if getattr(WebSocketFactory, _MARK, False):
        return True
    where = "daphne.ws_protocol.WebSocketFactory"
    gone = missing_members(WebSocketFactory, ("setProtocolOptions",), where)
    if not gone:
        options = inspect.signature(WebSocketFactory.setProtocolOptions).parameters
        if "failByDrop" not in options:
            gone.append(f"{where}.setProtocolOptions(failByDrop=...)")
    if not GUARD.allows(getattr(daphne, "__version__", None), gone):
        return False
    original = WebSocketFactory.__init__

    @functools.wraps(original)
    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        self.setProtocolOptions(failByDrop=False)

    WebSocketFactory.__init__ = init
    setattr(WebSocketFactory, _MARK, True)
    logger.debug("Daphne closes failed WebSocket connections with their close code")
    return True
