"""Who may read a task over HTTP: the request's owner, and the task if it may see it.

The fragment and follow endpoints apply the JSON API's rules (docs/protocol.md,
5): a request sees only its user's or session's tasks, or what
``PROGROCK["PERMISSION"]`` allows; an unknown task and someone else's task are
answered alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from asgiref.sync import sync_to_async
from django.http import HttpRequest

from progrock import permissions
from progrock.exceptions import ProtocolError
from progrock.protocol import TaskView, error_from, error_message, parse_task_id
from progrock.state import reads


@dataclass(frozen=True, slots=True)
class Denied:
    """Why a request may not see a task: an HTTP status and the protocol ``error``."""

    status: int
    error: dict[str, Any]

    @property
    def detail(self) -> str:
        return str(self.error["detail"])


async def request_owner(request: HttpRequest, *, create: bool = False) -> str | None:
    """The request's owner string (``user:<pk>`` or ``session:<key>``), or None."""

    def resolve() -> str | None:
        return permissions.owner_for_request(request, create_session=create)

    # Sessions and users are loaded from the database: not in the event loop.
    return await sync_to_async(resolve)()


def forbidden(task_id: str, action: str) -> Denied:
    """The answer for an unknown task and for someone else's task alike."""
    return Denied(
        404,
        error_message(
            "forbidden", f"no task {task_id} that you may see", action=action, task_id=task_id
        ),
    )


async def may_see(owner: str | None, task_id: str, action: str) -> TaskView | Denied:
    """The task's current view if ``owner`` may see it (``task_id`` is canonical)."""
    found = await reads.aget_view_and_owner(task_id)
    if owner is None or found is None:
        return forbidden(task_id, action)
    view, task_owner = found
    if not await permissions.amay_access(owner, task_owner, task_id):
        return forbidden(task_id, action)
    return view


async def authorise(request: HttpRequest, raw_task_id: str, action: str) -> TaskView | Denied:
    """The task's view if this request may see it; else why not (400 for a bad id)."""
    try:
        task_id = parse_task_id(raw_task_id, action)
    except ProtocolError as exc:
        return Denied(400, error_from(exc))
    return await may_see(await request_owner(request), task_id, action)
