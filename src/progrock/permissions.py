"""Who may watch or cancel a task. Replace with ``PROGROCK["PERMISSION"]``."""

from __future__ import annotations

from functools import cache
from typing import Protocol

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
