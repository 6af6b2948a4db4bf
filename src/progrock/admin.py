from __future__ import annotations

from django.contrib import admin

from progrock.models import Task


@admin.register(Task)
class TaskAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = ("id", "kind", "status", "progress", "owner", "created_at", "finished_at")
    list_filter = ("status", "kind")
    search_fields = ("id", "owner", "backend_ref")
    readonly_fields = ("id", "created_at", "started_at", "finished_at", "updated_at", "seq")
