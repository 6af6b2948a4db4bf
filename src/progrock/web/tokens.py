"""Where the web side finds a client's token, and how it refuses a bad one.

* The socket: a ``{"action": "auth", "token": ...}`` first message, or the
  ``Sec-WebSocket-Protocol`` header ``progrock.token, <token>`` (the socket is
  then accepted with the ``progrock.token`` subprotocol). Never the URL's query
  string: URLs end up in access logs. A bad token closes the socket with
  :data:`CLOSE_UNAUTHENTICATED` after an ``unauthenticated`` error.
* The HTTP API: ``Authorization: Token <key>`` (Django REST framework's form)
  or ``Authorization: Bearer <token>``; a bad one answers 401. A request with a
  good one needs no CSRF token: its owner comes from the token alone, never
  from a cookie the browser would attach to a forged request.

With ``PROGROCK["AUTHENTICATORS"]`` empty the ``Authorization`` header is left
to the project (another middleware may have used it) and a socket's token is
refused. Who a token names is :mod:`progrock.auth`'s business.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any, Final

from asgiref.sync import sync_to_async
from django.http import HttpRequest, JsonResponse

from progrock import auth
from progrock.conf import progrock_settings
from progrock.exceptions import InvalidToken
from progrock.protocol import error_message

#: The subprotocol a client offers, followed by its token, to authenticate in the handshake.
SUBPROTOCOL: Final = "progrock.token"
#: Close code of a socket whose token was refused (4000-4999: the application's; 401 as in HTTP).
CLOSE_UNAUTHENTICATED: Final = 4401
#: A close frame's reason is at most 123 bytes (RFC 6455, 5.5).
MAX_REASON_BYTES: Final = 123
#: Authorization schemes that carry a ProgRock token (case-insensitive, RFC 9110).
SCHEMES: Final = frozenset({"token", "bearer"})
#: The WWW-Authenticate challenge of a 401 (RFC 9110 requires one).
CHALLENGE: Final = 'Bearer realm="progrock"'

logger = logging.getLogger("progrock.web")


def header_token(value: str | None) -> str | None:
    """The token of an ``Authorization: Token <key>`` or ``Bearer <token>`` header.

    None when there is no header or it has another scheme (``Basic`` is not
    ours); :class:`InvalidToken` when the scheme is ours but the rest is no token.
    """
    if not value:
        return None
    scheme, _, rest = value.strip().partition(" ")
    if scheme.lower() not in SCHEMES:
        return None
    token = rest.strip()
    if not token or any(c.isspace() for c in token):
        raise InvalidToken(f"the Authorization header must be '{scheme} <token>', one token")
    return token


def subprotocol_token(subprotocols: Sequence[str]) -> str | None:
    """The token after ``progrock.token`` in the offered subprotocols, or None if not offered."""
    if SUBPROTOCOL not in subprotocols:
        return None
    index = list(subprotocols).index(SUBPROTOCOL)
    if index + 1 >= len(subprotocols):
        raise InvalidToken(f"Sec-WebSocket-Protocol offers {SUBPROTOCOL!r} but no token after it")
    return subprotocols[index + 1]


def close_reason(detail: str) -> str:
    """``detail`` cut to fit a close frame's reason."""
    data = detail.encode()
    if len(data) <= MAX_REASON_BYTES:
        return detail
    return data[: MAX_REASON_BYTES - 3].decode(errors="ignore") + "..."


def refusal(exc: InvalidToken, **context: object) -> dict[str, Any]:
    """The ``unauthenticated`` error for a refused token (logged: many may be an attack)."""
    logger.info("refused a token: %s", exc)
    return error_message("unauthenticated", f"token refused: {exc}", **context)


async def aowner_for_token(token: str) -> str:
    """The owner of ``token``'s user (the authenticators read the database: in a thread)."""
    return await sync_to_async(auth.owner_for_token)(token)


async def socket_header_owner(scope: Mapping[str, Any]) -> str | None:
    """The owner named by the handshake's ``progrock.token`` subprotocol, or None if none."""
    token = subprotocol_token(scope.get("subprotocols") or ())
    if token is None:
        return None
    return await aowner_for_token(token)


async def authenticate_request(request: HttpRequest) -> bool:
    """Authenticate ``request`` by its ``Authorization`` token, if it has one of ours.

    True: ``request.user`` is now the token's user (so its owner is
    ``user:<pk>``, whatever cookie came along). False: no token, sessions
    apply. Raises :class:`InvalidToken` for a bad one.
    """
    if not progrock_settings.AUTHENTICATORS:
        return False
    token = header_token(request.headers.get("Authorization"))
    if token is None:
        return False
    request.user = await sync_to_async(auth.authenticate)(token)
    return True


def unauthorized(exc: InvalidToken) -> JsonResponse:
    """401 with the ``unauthenticated`` error (and the challenge HTTP asks for)."""
    response = JsonResponse(refusal(exc), status=401)
    response["WWW-Authenticate"] = CHALLENGE
    return response
