"""Read a running stack's task table directly, on SQLite or PostgreSQL, as an operator would."""

from __future__ import annotations

import sqlite3
import uuid
from contextlib import closing
from typing import Any

from progrock.local.stack import Stack


def select(stack: Stack, sql: str, *params: object) -> list[tuple[Any, ...]]:
    """Rows of ``sql`` (``%s`` placeholders) on the stack's database."""
    if stack.database_url:
        import psycopg

        with psycopg.connect(stack.database_url) as db:
            return db.execute(sql.encode(), params).fetchall()
    with closing(sqlite3.connect(stack.data_dir / "db.sqlite3")) as db:
        return db.execute(sql.replace("%s", "?"), params).fetchall()


def stored_id(stack: Stack, task_id: str) -> str:
    """A task id as the id column holds it (SQLite: 32 hex digits; PostgreSQL: a uuid)."""
    return task_id if stack.database_url else uuid.UUID(task_id).hex


def backend_ref(stack: Stack, task_id: str) -> str:
    """The backend's reference of a task, from its row."""
    rows = select(
        stack, "SELECT backend_ref FROM progrock_task WHERE id = %s", stored_id(stack, task_id)
    )
    assert rows and rows[0][0], f"task {task_id} has no backend reference"
    return str(rows[0][0])


def queued_task_ids(stack: Stack) -> list[str]:
    """Ids of the tasks whose row says queued."""
    rows = select(stack, "SELECT id FROM progrock_task WHERE status = %s", "queued")
    return [str(uuid.UUID(str(row[0]))) for row in rows]
