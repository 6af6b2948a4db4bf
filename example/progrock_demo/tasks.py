"""The demo's Celery task: the ``export`` kind (``PROGROCK["KINDS"]`` in the settings)."""

from __future__ import annotations

import time
from typing import Any

from celery import shared_task

from progrock.celery import ProgressTask


@shared_task(bind=True, base=ProgressTask)
def export(self: ProgressTask, rows: int = 200, pause: float = 0.02) -> dict[str, Any]:
    """Pretend to export ``rows`` rows, ``pause`` seconds each, reporting each row."""
    for row in range(rows):
        self.progress(100 * row / rows, f"row {row + 1} of {rows}")
        time.sleep(pause)
    return {"rows": rows}
