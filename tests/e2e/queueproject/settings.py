"""The demo's settings, with kinds run by Celery and by django.tasks (django-tasks-db)."""

from __future__ import annotations

import os

from progrock_demo.settings import *  # noqa: F403
from progrock_demo.settings import INSTALLED_APPS, PROGROCK

INSTALLED_APPS = [*INSTALLED_APPS, "django_tasks", "django_tasks_db"]
TASKS = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend"}}
CELERY_INCLUDE = ["tests.e2e.queueproject.tasks"]

PROGROCK = {
    **PROGROCK,
    "KINDS": {
        "rock": None,
        "export": "celery:progrock_demo.tasks.export",
        "steps": "celery:tests.e2e.queueproject.tasks.steps",
        "flaky": "celery:tests.e2e.queueproject.tasks.flaky",
        "broken": "celery:tests.e2e.queueproject.tasks.broken",
        "djsteps": "tasks:tests.e2e.queueproject.tasks.djsteps",
    },
}
if os.environ.get("PROGROCK_PUSH_TIMEOUT"):
    PROGROCK["PUSH_TIMEOUT"] = float(os.environ["PROGROCK_PUSH_TIMEOUT"])
