"""The demo's Celery app (only when Celery is installed: the ``celery`` extra).

``progrock up --celery`` runs a worker of it (``celery -A progrock_demo worker``);
its broker is the stack's Redis (``CELERY_BROKER_URL`` in the settings).
"""

from __future__ import annotations

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "progrock_demo.settings")

app = Celery("progrock_demo")
# Every CELERY_* Django setting, e.g. CELERY_BROKER_URL -> broker_url.
app.config_from_object("django.conf:settings", namespace="CELERY")
# The tasks.py module of every installed app (progrock_demo.tasks here).
app.autodiscover_tasks()
