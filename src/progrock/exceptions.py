"""Every exception ProgRock raises."""

from __future__ import annotations

from django.core import exceptions as django_exceptions


class ProgRockError(Exception):
    """Base class of every ProgRock error."""


class ImproperlyConfigured(ProgRockError, django_exceptions.ImproperlyConfigured):
    """A ``PROGROCK`` setting has a wrong type or value (also Django's ImproperlyConfigured)."""


class ProtocolError(ProgRockError):
    """A client message breaks the protocol; carries the wire error code."""

    def __init__(self, code: str, detail: str, **context: object) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail
        self.context = context


class InvalidTransition(ProgRockError):
    """A task state change that the state machine forbids."""


class ServiceError(ProgRockError):
    """The backend task service did not answer usefully (transient: retry)."""


class ServiceRejected(ProgRockError):
    """The backend task service refused a request (permanent: do not retry)."""

    def __init__(self, detail: str, status: int | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.status = status


class InvalidToken(ProgRockError):
    """A client's token is malformed, unknown, expired, or names no active user.

    The message says which, never quoting the token; the socket closes with
    4401 and the HTTP API answers 401 (docs/howto-tokens.md).
    """


class TaskNotFound(ProgRockError):
    """No such task (or the caller may not see it)."""


class Cancelled(ProgRockError):
    """The task was cancelled (by its user or an admin): the producer should stop its work.

    Raised by :func:`progrock.report_progress` once the task is cancelled.
    """


class RedisUnavailable(ProgRockError):
    """Redis did not answer a push task's producer in time (down, unreachable, too slow)."""


class TooManyTasks(ProgRockError):
    """The owner already runs ``PROGROCK["MAX_RUNNING_PER_OWNER"]`` tasks."""


class MissingExtra(ImportError, ProgRockError):
    """An optional part of ProgRock was imported without its extra installed.

    The message names what is missing and the ``pip install`` line that adds it.
    """
