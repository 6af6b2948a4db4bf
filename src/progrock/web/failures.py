"""How the web side answers a request it could not serve, and how long it tries.

Every request of a socket or of the HTTP API runs under :data:`REQUEST_TIMEOUT`;
whatever goes wrong becomes one ``error`` for that request alone:

* a :class:`~progrock.exceptions.ProtocolError`: its own code and detail;
* a start the channel layer cannot carry (:class:`~progrock.web.forward.Unsendable`):
  ``invalid_field``;
* Redis, the channel layer or the database failing or not answering in time:
  ``unavailable``;
* anything else (a bug): ``internal_error``, with the traceback in the log.

Details sent to clients are fixed sentences: the exception's own text (which
may name a Redis address, a backend URL or a file path) goes to the log only.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Final

from channels.exceptions import ChannelFull
from django.db import DatabaseError
from redis.exceptions import RedisError

from progrock.exceptions import ProtocolError
from progrock.protocol import error_from, error_message
from progrock.web.forward import Unsendable

logger = logging.getLogger("progrock.web")

#: Seconds a request may take before it is answered ``unavailable``: every
#: Redis, channel-layer and database call of a request runs under it.
REQUEST_TIMEOUT: Final = 4.0

#: Failures of what a request depends on (not of the request itself).
UNAVAILABLE: Final = (RedisError, OSError, ChannelFull, DatabaseError, TimeoutError)

UNAVAILABLE_DETAIL: Final = (
    "the server could not reach its message store or database in time; retry later"
)
UNSENDABLE_DETAIL: Final = "the request holds a value the server cannot pass on"
INTERNAL_DETAIL: Final = "the server failed to serve this request; the failure is logged"


def error_for(exc: Exception, what: str, **context: object) -> dict[str, Any]:
    """The ``error`` message for a request that raised ``exc`` (logged as it deserves)."""
    if isinstance(exc, ProtocolError):
        return error_from(exc)
    if isinstance(exc, Unsendable):
        logger.warning("refused %s: %s", what, exc)
        return error_message("invalid_field", UNSENDABLE_DETAIL, **context)
    if isinstance(exc, UNAVAILABLE):
        logger.warning("could not serve %s: %s", what, _describe(exc))
        return error_message("unavailable", UNAVAILABLE_DETAIL, **context)
    logger.error("failed to serve %s", what, exc_info=exc)
    return error_message("internal_error", INTERNAL_DETAIL, **context)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError) and not str(exc):
        return "no answer within the request timeout"
    return f"{type(exc).__name__}: {exc}"


class OutageLog:
    """Logs when a dependency starts failing and when it works again, not every retry."""

    def __init__(self, log: logging.Logger, what: str) -> None:
        self.log = log
        self.what = what
        self.down_since: float | None = None

    def failed(self, exc: BaseException) -> None:
        if self.down_since is None:
            self.down_since = time.monotonic()
            self.log.warning("%s failing (%s); retrying quietly", self.what, _describe(exc))

    def recovered(self) -> None:
        if self.down_since is not None:
            lasted = time.monotonic() - self.down_since
            self.down_since = None
            self.log.warning("%s works again after %.1f s", self.what, lasted)
