"""Reading tasks for the web side: one task's view and owner, an owner's list.

Live state from Redis where there is some, else the database row.
"""

from __future__ import annotations

from progrock.conf import progrock_settings
from progrock.models import Task
from progrock.protocol import (
    ACTIVE,
    LIST_LIMIT,
    TaskView,
)
from progrock.state.live import TaskStore, view_from_hash

# -- reading -----------------------------------------------------------------


async def aget_view_and_owner(
    task_id: str, store: TaskStore | None = None
) -> tuple[TaskView, str] | None:
    """The task's current view and owner: live state from Redis, else the database."""
    store = store or TaskStore.from_settings()
    raw = await store.redis.hgetall(f"{progrock_settings.KEY_PREFIX}t:{task_id}")  # type: ignore[misc]
    if raw:
        fields = {k.decode(): v.decode() for k, v in raw.items()}
        if fields.get("owner"):
            return view_from_hash(task_id, fields), fields["owner"]
    task = await Task.objects.filter(pk=task_id).afirst()
    if task is None:
        return None
    return task.view(), task.owner


async def alist_views(owner: str, limit: int = LIST_LIMIT) -> list[TaskView]:
    """The owner's tasks, newest first, with live state where there is some."""
    rows = [t async for t in Task.objects.filter(owner=owner).order_by("-created_at")[:limit]]
    active = [str(t.id) for t in rows if t.status in ACTIVE]
    live = await TaskStore.from_settings().load(active) if active else {}
    views = []
    for task in rows:
        fields = live.get(str(task.id))
        views.append(view_from_hash(str(task.id), fields) if fields else task.view())
    return views
