"""Test tasks: each waits for the test where it matters (a file it creates), never a sleep."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from celery import shared_task

from progrock import Cancelled
from progrock.celery import ProgressTask

try:
    from django.tasks import task  # type: ignore[import-not-found,unused-ignore]
except ImportError:
    from django_tasks import task

from progrock.django_tasks import Progress, with_progress

#: Seconds a task waits for the test's go-ahead file before it gives up.
WAIT = 30.0


def wait_for(path: str) -> None:
    """Wait until the test creates ``path`` (the test decides when the task moves on)."""
    deadline = time.monotonic() + WAIT
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(f"nobody created {path}")
        time.sleep(0.01)


def run_steps(report: Any, n: int, hold: str, mark: str, work: bool = False) -> dict[str, Any]:
    """Report ``n`` steps; with ``hold``, wait for that file after the first step,
    and with ``work`` then keep working (reporting every 10 ms, for at most
    ``WAIT`` s) until a report raises Cancelled. ``mark`` gets how the job
    ended: "ran" once it started, "cancelled" when a report raised Cancelled,
    "done"."""
    if mark:
        Path(mark).write_text("ran")
    try:
        for i in range(n):
            report(100 * i / n, f"step {i + 1}")
            if hold and i == 0:
                wait_for(hold)
                deadline = time.monotonic() + (WAIT if work else 0)
                while time.monotonic() < deadline:
                    report(100 * i / n, "working")
                    time.sleep(0.01)  # the job's own work
    except Cancelled:
        if mark:
            Path(mark).write_text("cancelled")
        raise
    if mark:
        Path(mark).write_text("done")
    return {"steps": n}


@shared_task(bind=True, base=ProgressTask)
def steps(
    self: ProgressTask, n: int = 3, hold: str = "", mark: str = "", work: bool = False
) -> dict[str, Any]:
    """Celery: :func:`run_steps`."""
    return run_steps(self.progress, n, hold, mark, work)


@shared_task(bind=True, base=ProgressTask, max_retries=2, default_retry_delay=0)
def flaky(self: ProgressTask, failures: int = 1) -> str:
    """Fail ``failures`` times (retried each time), then succeed."""
    if self.request.retries < failures:
        raise self.retry(exc=ConnectionError(f"attempt {self.request.retries + 1} failed"))
    return "done"


@shared_task(bind=True, base=ProgressTask)
def broken(self: ProgressTask) -> None:
    """Fail with an exception of its own."""
    self.progress(10, "about to break")
    raise LookupError("no such row: 42")


@task()
@with_progress
def djsteps(
    progress: Progress,
    n: int = 3,
    hold: str = "",
    mark: str = "",
    work: bool = False,
    fail: bool = False,
) -> dict[str, Any]:
    """django.tasks: :func:`run_steps`; with ``fail``, then raise."""
    result = run_steps(progress, n, hold, mark, work)
    if fail:
        raise ValueError("bad input row")
    return result
