"""A project for the task-queue tests: the demo, plus test tasks on Celery and django.tasks.

Its Celery app is the demo's (``celery -A tests.e2e.queueproject worker``).
"""

from __future__ import annotations

from progrock_demo.celery import app

__all__ = ["app"]
