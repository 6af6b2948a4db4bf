"""The backend's task file: every task in SQLite, so a restarted backend continues them.

:class:`~progrock.local.backend.store.TaskStore` keeps its table in memory
(status requests never touch the disk) and writes through to a
:class:`TaskFile` what it cannot derive again: each task as created (kind,
params, idempotency key, when it started), a cancel (when, at what progress),
the end of a ``hash`` task (its state, result, error) and now and then how far
a running ``hash`` task got. A ``rock`` task's progress is derived from its
start time, so a backend started again on the same file continues every task
where the clock says it is, as a real service would; a running ``hash`` task
hashes again from the start (quickly up to where it got, then at its rate).

Times in the file are Unix time (seconds); the store works on the monotonic
clock and converts. Every write is committed before the request that caused it
is answered (WAL, ``synchronous=NORMAL``: a killed process loses nothing
committed; a power cut may lose the last moments).
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["SavedTask", "TaskFile"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS tasks (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    params TEXT NOT NULL,
    idempotency_key TEXT,
    created_at REAL NOT NULL,
    started_at REAL NOT NULL,
    state TEXT,
    progress REAL,
    result TEXT,
    error TEXT,
    ended_at REAL,
    done_bytes INTEGER NOT NULL DEFAULT 0
)
"""
_COLUMNS = (
    "id, kind, params, idempotency_key, created_at, started_at,"
    " state, progress, result, error, ended_at, done_bytes"
)


@dataclass(frozen=True, slots=True)
class SavedTask:
    """One task as the file holds it (times in Unix seconds).

    ``state`` is None while nothing but the clock decides the task's state
    (a running task, or a ``rock`` task that ended by itself); otherwise the
    task was cancelled (``progress`` at that moment) or is a ``hash`` task
    that ended.
    """

    id: str
    kind: str
    params: dict[str, Any]
    key: str | None
    created_at: float
    started_at: float
    state: str | None = None
    progress: float | None = None
    result: Any = None
    error: str | None = None
    ended_at: float | None = None
    done_bytes: int = 0


class TaskFile:
    """The SQLite file behind a backend's task table (safe to use from several threads)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.parent.is_dir():
            raise ValueError(f"the folder of the task file {str(self.path)!r} does not exist")
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute(_SCHEMA)

    def load(self) -> Iterator[SavedTask]:
        """Every task in the file, oldest first."""
        with self._lock:
            rows = self._db.execute(f"SELECT {_COLUMNS} FROM tasks ORDER BY created_at").fetchall()
        for row in rows:
            (task_id, kind, params, key, created, started) = row[:6]
            (state, progress, result, error, ended, done) = row[6:]
            yield SavedTask(
                task_id,
                kind,
                json.loads(params),
                key,
                created,
                started,
                state,
                progress,
                None if result is None else json.loads(result),
                error,
                ended,
                done,
            )

    def add(self, task: SavedTask) -> None:
        """Write a new task."""
        with self._lock:
            self._db.execute(
                "INSERT INTO tasks (id, kind, params, idempotency_key, created_at, started_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (
                    task.id,
                    task.kind,
                    json.dumps(task.params),
                    task.key,
                    task.created_at,
                    task.started_at,
                ),
            )

    def end(
        self,
        task_id: str,
        state: str,
        *,
        at: float,
        progress: float | None = None,
        result: Any = None,
        error: str | None = None,
    ) -> None:
        """Record how a task ended (a cancel, or a ``hash`` task's end)."""
        with self._lock:
            self._db.execute(
                "UPDATE tasks SET state = ?, progress = ?, result = ?, error = ?, ended_at = ?"
                " WHERE id = ?",
                (
                    state,
                    progress,
                    None if result is None else json.dumps(result),
                    error,
                    at,
                    task_id,
                ),
            )

    def checkpoint(self, task_id: str, done_bytes: int) -> None:
        """Record how far a running ``hash`` task got."""
        with self._lock:
            self._db.execute(
                "UPDATE tasks SET done_bytes = ? WHERE id = ? AND state IS NULL",
                (done_bytes, task_id),
            )

    def forget(self, task_ids: Iterable[str]) -> None:
        """Delete tasks (the store's TTL sweep)."""
        with self._lock:
            self._db.execute("BEGIN")
            try:
                self._db.executemany("DELETE FROM tasks WHERE id = ?", [(t,) for t in task_ids])
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def __str__(self) -> str:
        return str(self.path)

    def close(self) -> None:
        with self._lock:
            self._db.close()
