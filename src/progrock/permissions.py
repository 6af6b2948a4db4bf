"""Who owns a task, and who may watch or cancel it (``PROGROCK["PERMISSION"]``)."""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache
from typing import Any, Protocol

from asgiref.sync import sync_to_async
from django.http import HttpRequest
from django.utils.module_loading import import_string

from progrock.conf import progrock_settings
from progrock.exceptions import ImproperlyConfigured


class PermissionHook(Protocol):
    def __call__(self, requester: str, task_owner: str, task_id: str) -> bool: ...


def is_owner(requester: str, task_owner: str, task_id: str) -> bool:
    """The default rule: only the task's owner."""
    return requester == task_owner


@cache
def _load(path: str) -> PermissionHook:
    try:
        hook = import_string(path)
    except ImportError as exc:
        raise ImproperlyConfigured(
            f"PROGROCK['PERMISSION'] = {path!r} cannot be imported: {exc}"
        ) from exc
    if not callable(hook):
        raise ImproperlyConfigured(f"PROGROCK['PERMISSION'] = {path!r} is not callable")
    return hook  # type: ignore[no-any-return]


def can_access(requester: str, task_owner: str, task_id: str) -> bool:
    """True if ``requester`` may subscribe to or cancel the task."""
    return bool(_load(progrock_settings.PERMISSION)(requester, task_owner, task_id))


def owner_for_user_or_session(user: Any, session_key: str | None) -> str | None:
    if user is not None and getattr(user, "is_authenticated", False):
        return f"user:{user.pk}"
    if session_key:
        return f"session:{session_key}"
    return None


def owner_for_scope(scope: Mapping[str, Any], channel_name: str) -> str:
    """Owner string of a socket: its user, else its session, else the socket itself."""
    session = scope.get("session")
    session_key = getattr(session, "session_key", None) if session is not None else None
    owner = owner_for_user_or_session(scope.get("user"), session_key)
    return owner or f"socket:{channel_name}"


def owner_for_request(request: HttpRequest, *, create_session: bool = False) -> str | None:
    """Owner string of an HTTP request: its user (logged in, or by its token,
    :mod:`progrock.web.tokens`), else its session (created if asked).

    A session cookie counts only if the server issued it and it has not
    expired: the session is loaded first, which forgets an unknown key (the
    socket's session middleware does the same).
    """
    user = getattr(request, "user", None)
    if user is not None and getattr(user, "is_authenticated", False):
        return owner_for_user_or_session(user, None)  # a user needs no session of its own
    session = getattr(request, "session", None)
    if session is not None:
        session.keys()  # loads it: an unknown or expired key becomes None
    if session is not None and not session.session_key and create_session:
        session.save()
    key = session.session_key if session is not None else None
    return owner_for_user_or_session(getattr(request, "user", None), key)


async def amay_access(requester: str, task_owner: str, task_id: str) -> bool:
    """True if ``requester`` may see the task; the hook may use the ORM, so it runs in a thread."""
    if requester == task_owner:
        return True  # the default rule needs no thread hop
    return await sync_to_async(can_access)(requester, task_owner, task_id)
