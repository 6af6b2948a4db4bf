"""The example project: the demo page, the socket and the workers that `progrock up` runs.

With Celery installed (the ``celery`` extra), its app is loaded with Django,
as Celery's Django guide lays out: web processes and workers then queue the
``export`` kind's jobs on it, and ``celery -A progrock_demo worker`` runs them.
"""

from __future__ import annotations

import importlib.util

if importlib.util.find_spec("celery") is not None:
    from progrock_demo.celery import app as celery_app

    __all__ = ["celery_app"]
