"""The Celery worker of ``progrock up --celery``: its command line and readiness.

The project's Celery app is the package beside its settings module, as
Celery's Django guide lays it out (``mysite/celery.py`` imported by
``mysite/__init__.py``): ``celery -A mysite worker``.
"""

from __future__ import annotations

import importlib.util
import re
from typing import Final

from progrock.exceptions import MissingExtra

#: The pools ``--celery`` accepts (Celery's own names).
POOLS: Final = ("prefork", "threads", "solo")
#: Celery logs this line once the worker consumes (``celery@host ready.``).
READY_LINE: Final = re.compile(r"celery@\S+ ready\.")
#: Jobs one worker runs at once.
CONCURRENCY: Final = 4


def celery_command(python: str, settings: str, pool: str) -> list[str]:
    """The worker's command line for the project of ``settings``."""
    if importlib.util.find_spec("celery") is None:
        raise MissingExtra("--celery needs Celery: pip install 'django-progrock[celery]'")
    if pool not in POOLS:
        raise ValueError(f"the Celery pool must be one of {', '.join(POOLS)}, got {pool!r}")
    app = settings.rpartition(".")[0] or settings
    return [
        *(python, "-m", "celery", "-A", app, "worker"),
        *("--pool", pool, "--concurrency", str(CONCURRENCY), "--loglevel", "INFO"),
        # One worker beside the stack: no cluster chatter to wait for at start.
        *("--without-gossip", "--without-mingle", "--without-heartbeat"),
    ]
