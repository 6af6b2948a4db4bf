"""The Task model: the database holds the truth about a task's state transitions."""

from __future__ import annotations

import uuid
from typing import Any

from django.db import models

from progrock.protocol import Status, TaskView


class Task(models.Model):
    """One long-running task, as ProgRock tracks it.

    Status changes follow :data:`progrock.protocol.TRANSITIONS`; the worker
    writes them with conditional updates, so a terminal state is never left.
    Live progress lives in Redis and is copied here at most every
    ``progrock.tuning.DB_PROGRESS_INTERVAL`` seconds.
    """

    STATUS_CHOICES = [(s.value, s.value) for s in Status]

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.CharField(
        max_length=200,
        db_index=True,
        help_text="user:<pk>, session:<key> or socket:<channel> of whoever started it",
    )
    kind = models.CharField(max_length=100)
    params = models.JSONField(default=dict, blank=True)
    status = models.CharField(
        max_length=16, choices=STATUS_CHOICES, default=Status.QUEUED.value, db_index=True
    )
    progress = models.FloatField(default=0)
    seq = models.PositiveIntegerField(default=0)
    message = models.TextField(blank=True, null=True)
    result = models.JSONField(blank=True, null=True)
    error = models.JSONField(blank=True, null=True)
    backend_ref = models.CharField(max_length=200, blank=True, null=True)
    push = models.BooleanField(
        default=False, help_text="progress is pushed with report_progress(), not polled"
    )
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    started_at = models.DateTimeField(blank=True, null=True)
    finished_at = models.DateTimeField(blank=True, null=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["owner", "status"]),
            # The sweep's look at recent ends (progrock.worker.sweep.recently_finished):
            # a range per terminal status, not every ended task ever kept.
            models.Index(fields=["status", "finished_at"], name="progrock_status_finished"),
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.id} ({self.status}, {self.progress:g}%)"

    def view(self) -> TaskView:
        def iso(value: Any) -> str | None:
            return value.isoformat() if value is not None else None

        return TaskView(
            task_id=str(self.id),
            status=Status(self.status),
            kind=self.kind,
            seq=self.seq,
            progress=self.progress,
            message=self.message,
            result=self.result,
            error=self.error,
            created_at=iso(self.created_at),
            started_at=iso(self.started_at),
            finished_at=iso(self.finished_at),
        )
