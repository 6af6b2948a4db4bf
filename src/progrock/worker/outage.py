"""A worker's work when Redis or the database is away: one log line per change of state.

During an outage every message a worker handles fails the same way; a
traceback per message would bury the log. Work that fails for a reason in
:data:`~progrock.web.failures.UNAVAILABLE` (Redis, the channel layer or the
database down or not answering) is noted here instead: one warning when such
failures begin, one when work succeeds again. Nothing is retried here: the
sweep re-arms the poll chains an outage broke and start watchdogs forward
lost starts again, once Redis and the database are back.
"""

from __future__ import annotations

import logging

from channels.db import aclose_old_connections
from django.db import DatabaseError

from progrock.web.failures import UNAVAILABLE, OutageLog

__all__ = ["UNAVAILABLE", "recovered", "unavailable"]

logger = logging.getLogger("progrock.worker")

_outage = OutageLog(logger, "the worker's work (Redis or the database)")


async def unavailable(exc: BaseException) -> None:
    """Note work that ``exc`` stopped; after a database error drop the broken
    connection, so that the next message connects afresh."""
    _outage.failed(exc)
    if isinstance(exc, DatabaseError):
        try:
            await aclose_old_connections()
        except Exception:  # closing a broken connection may fail too; the next use reconnects
            logger.debug("closing the database connection failed", exc_info=True)


def recovered() -> None:
    """Note work that succeeded (logs the end of an outage, if one was noted)."""
    _outage.recovered()
