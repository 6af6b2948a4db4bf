"""The Task admin: look, search, cancel, delete what has ended.

A task's state (status, progress, seq, result, error, timestamps, backend ref)
is the workers' to write: editing it here would change the row without telling
anyone watching, so it is read-only. To stop a task, the "cancel" action asks
a worker exactly as a user's cancel does (every watcher gets ``cancelled``).
Only ended tasks can be deleted (a running task's row is what its worker
polls); ``manage.py progrock_cleanup`` and ``PROGROCK["RETENTION"]`` delete old
ones in bulk.
"""

from __future__ import annotations

from typing import Any

from asgiref.sync import async_to_sync
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from progrock.models import Task
from progrock.protocol import ACTIVE, TERMINAL
from progrock.web.forward import forward_cancel

STATE_FIELDS = (
    "id",
    "status",
    "progress",
    "seq",
    "message",
    "result",
    "error",
    "backend_ref",
    "push",
    "created_at",
    "started_at",
    "finished_at",
    "updated_at",
)
_ACTIVE = [s.value for s in ACTIVE]
_ENDED = [s.value for s in TERMINAL]


async def _cancel_each(task_ids: list[str]) -> None:
    for task_id in task_ids:
        await forward_cancel(task_id, reply_channel=None)


@admin.register(Task)
class TaskAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = ("id", "kind", "status", "progress", "owner", "created_at", "finished_at")
    list_filter = ("status", "kind")
    search_fields = ("id", "owner")
    readonly_fields = STATE_FIELDS
    actions = ("cancel_tasks", "delete_ended")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # a row made here would never start: start tasks through ProgRock

    def has_delete_permission(self, request: HttpRequest, obj: Task | None = None) -> bool:
        if obj is not None and obj.status in _ACTIVE:
            return False  # its worker still polls it: cancel it first
        return super().has_delete_permission(request, obj)

    def get_actions(self, request: HttpRequest, action_location: Any = None) -> dict[str, Any]:
        # Django 6.1 adds action_location (and deprecates overrides without it); 5.2 has none.
        found: dict[str, Any] = (
            super().get_actions(request)
            if action_location is None
            else super().get_actions(request, action_location)  # type: ignore[call-arg]
        )
        found.pop("delete_selected", None)  # it would delete running tasks too
        return found

    @admin.action(
        description="Cancel the selected tasks (watchers are told)", permissions=["change"]
    )
    def cancel_tasks(self, request: HttpRequest, queryset: QuerySet[Task]) -> None:
        active = [
            str(pk) for pk in queryset.filter(status__in=_ACTIVE).values_list("pk", flat=True)
        ]
        over = queryset.count() - len(active)
        if active:
            async_to_sync(_cancel_each)(active)
            self.message_user(
                request,
                f"Asked the workers to cancel {len(active)} task(s); "
                "each shows cancelled once a worker has done it.",
                messages.SUCCESS,
            )
        if over:
            self.message_user(
                request,
                f"{over} selected task(s) had already ended: left as they are.",
                messages.WARNING,
            )

    @admin.action(description="Delete the selected tasks that have ended", permissions=["delete"])
    def delete_ended(self, request: HttpRequest, queryset: QuerySet[Task]) -> None:
        selected = queryset.count()
        deleted, _ = queryset.filter(status__in=_ENDED).delete()
        if deleted:
            self.message_user(request, f"Deleted {deleted} ended task(s).", messages.SUCCESS)
        if selected - deleted:
            self.message_user(
                request,
                f"{selected - deleted} selected task(s) are queued or running: not deleted "
                "(cancel them first).",
                messages.WARNING,
            )
