"""Let Daphne close a socket with the code and reason the application gives; opt-in.

An ASGI application closes a socket with ``{"type": "websocket.close", "code",
"reason"}``. Daphne passes the code to Autobahn's ``sendClose``, which refuses
every code but 1000 and 3000-4999 (it raises, and the socket stays open), and
drops the reason. So under Daphne an application cannot send the codes IANA
registered for servers: 1012 (service restart), which a web process closing
for a restart sends so its clients reconnect elsewhere at once
(:mod:`progrock.web.restart`), and 1013 (try again later), which a socket over
the per-address limit gets (:mod:`progrock.web.limits`). Uvicorn sends both,
with their reason.

:func:`install` makes Daphne's ``WebSocketProtocol.handle_reply`` send such a
close frame itself, through Autobahn's ``sendCloseFrame`` (the method
``sendClose`` ends in, which also starts the closing handshake and its
timeout), for the codes an endpoint may send (1000-1003, 1007-1014,
3000-4999) and with the reason (cut to the 123 bytes a close frame holds).
Anything else goes to Daphne's own code. Call it in ``asgi.py`` when Daphne
serves it (the example project does).

Upstream: django/daphne#374, "Websocket Close reason" (open since 2021;
https://github.com/django/daphne/issues/374), and crossbario/autobahn-python#1642
for the reason; no upstream issue found for Autobahn refusing the registered
codes 1012-1014 in ``sendClose``. What would make this module unnecessary:
Daphne passing the reason, and Autobahn accepting the IANA-registered codes.

It wraps a method of Daphne's protocol and calls one of Autobahn's, so it is
guarded (:mod:`progrock.contrib._guard`): it installs only on the Daphne
versions it was tested with (:data:`GUARD`) and only when both members are
there; otherwise it warns once and changes nothing.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

from progrock.contrib._guard import Guard, missing_members

logger = logging.getLogger("progrock.contrib")

#: Tested with Daphne 4.2.3 and Autobahn 26.10 (constraints.txt); ProgRock's
#: dependencies allow ``daphne>=4.2,<4.3``.
GUARD = Guard("progrock.contrib.daphne_close_codes", "Daphne", first="4.2.3", before="4.3")

_MARK = "_progrock_sends_close_codes"
#: Most bytes of a close frame's reason (125 bytes of payload, 2 of them the code).
MAX_REASON_BYTES = 123


def sendable(code: object) -> bool:
    """Whether an endpoint may send ``code`` in a close frame (RFC 6455 and IANA's registry)."""
    return isinstance(code, int) and (
        1000 <= code <= 1003 or 1007 <= code <= 1014 or 3000 <= code <= 4999
    )


def reason_bytes(reason: object) -> bytes | None:
    """``reason`` as UTF-8, cut to what a close frame holds (never inside a character)."""
    if not isinstance(reason, str) or not reason:
        return None
    return reason.encode()[:MAX_REASON_BYTES].decode("utf-8", "ignore").encode()


def install() -> bool:
    """Make Daphne send the close code and reason the application gives.

    Returns True if installed (now or before). False if Daphne is missing, or,
    with one warning, if this Daphne is not one it was tested with or lacks a
    member it uses: then nothing is changed.
    """
    try:
        import daphne
        from daphne.ws_protocol import WebSocketProtocol
    except ImportError:
        return False
    if getattr(WebSocketProtocol, _MARK, False):
        return True
    members = ("handle_reply", "sendCloseFrame", "STATE_OPEN")
    gone = missing_members(WebSocketProtocol, members, "daphne.ws_protocol.WebSocketProtocol")
    if not GUARD.allows(getattr(daphne, "__version__", None), gone):
        return False
    original = WebSocketProtocol.handle_reply

    @functools.wraps(original)
    def handle_reply(self: Any, message: dict[str, Any]) -> None:
        if (
            message.get("type") == "websocket.close"
            and self.state == self.STATE_OPEN
            and sendable(code := message.get("code", 1000))
        ):
            self.sendCloseFrame(code=code, reasonUtf8=reason_bytes(message.get("reason")))
            return
        original(self, message)

    WebSocketProtocol.handle_reply = handle_reply
    setattr(WebSocketProtocol, _MARK, True)
    logger.debug("Daphne sends the close codes and reasons its application gives")
    return True
