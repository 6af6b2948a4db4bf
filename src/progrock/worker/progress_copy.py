"""Copying live progress to the database now and then, off the poll's path.

Live progress is in Redis; the task row gets a copy at most every
``DB_PROGRESS_INTERVAL`` seconds per task (the poll picks the rows that are
due), so a page that reads the database sees recent progress and a rebuilt
live state starts near where it was.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from asgiref.sync import sync_to_async
from django.db import transaction

from progrock.models import Task
from progrock.protocol import Status
from progrock.state.rows import update_each, write_alias
from progrock.worker.outage import UNAVAILABLE, unavailable

logger = logging.getLogger("progrock.worker")

#: The row statuses whose progress may be written (never a finished task's row).
PROGRESS_IN = frozenset({Status.RUNNING})


class ProgressCopy:
    """Copies live progress to the database in the background, one write at a time.

    The write is off the poll's path: a slow database never delays a tick.
    Rows that find a write in flight are skipped; their task is written on a
    later poll (each row's due time was already pushed back in Redis).
    """

    def __init__(self) -> None:
        self._write: asyncio.Task[None] | None = None

    def write(self, rows: list[Task]) -> None:
        if self._write is not None and not self._write.done():
            return
        self._write = asyncio.create_task(self._run(rows))

    async def drain(self) -> None:
        """Wait for the background write, if one is under way."""
        if self._write is not None:
            await asyncio.gather(self._write, return_exceptions=True)

    async def _run(self, rows: list[Task]) -> None:
        try:
            await sync_to_async(copy_progress)(rows)
        except UNAVAILABLE as exc:  # a later copy writes the progress of then
            await unavailable(exc)
        except Exception:
            logger.exception("writing the progress of %d tasks to the database failed", len(rows))


def copy_progress(rows: Sequence[Task]) -> None:
    """Copy live progress into running rows only: never touch a finished task's row.

    One conditional UPDATE sent once per row with ``executemany``
    (:func:`progrock.state.rows.update_each`), in one transaction.
    """
    with transaction.atomic(using=write_alias()):
        update_each(
            ("progress", "message", "seq"),
            ((row.pk, (row.progress, row.message, row.seq)) for row in rows),
            status_in=[s.value for s in PROGRESS_IN],
        )
