"""Per-row writes to task rows in bulk: one prepared UPDATE, many parameter sets.

Starts, ends and the progress copy each write a different value to every row
of a batch (its backend ref, its seq, its progress). The ORM can say that only
as one ``UPDATE ... SET f = CASE pk WHEN ... END``, and building that
expression costs Django about 0.1 ms per row in Python: at a burst of 2,000
starts, more CPU than everything else a start does in the worker. Here the
statement is built once and sent with the DB-API ``executemany``: SQLite
runs it row after row in C; psycopg 3 pipelines it; drivers that send one
statement per row (psycopg2, mysqlclient) pay a round trip per row, in one
transaction. Rows go in primary-key order, so concurrent batches lock
overlapping rows in the same order.

The SQL is portable: table and column names come from the model's meta and
are quoted by the connection, and every value goes through its field's
``get_db_prep_save``, as the ORM's own writes do (UUIDs, aware datetimes and
JSON are adapted per database).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from django.db import connections, router
from django.db.models import Field

from progrock.models import Task


def write_alias() -> str:
    """The database alias task rows are written to (the router's, ``default`` without one):
    transactions around :func:`update_each` and :func:`ended_statuses` must open on it."""
    return router.db_for_write(Task) or "default"


def update_each(
    fields: Sequence[str],
    rows: Iterable[tuple[Any, Sequence[Any]]],
    *,
    status_in: Sequence[str],
) -> None:
    """Set ``fields`` of each row ``(pk, values)`` whose status is in ``status_in``.

    One statement, executed once per row; call it inside the caller's
    transaction. A row that does not exist, or whose status is not in
    ``status_in``, is left alone (read the rows back to see which moved).
    """
    if not status_in:
        raise ValueError("update_each needs at least one field and one status")
    update_each_guarded(fields, ((pk, values, status_in) for pk, values in rows))


def update_each_guarded(
    fields: Sequence[str], rows: Iterable[tuple[Any, Sequence[Any], Sequence[str]]]
) -> None:
    """:func:`update_each` with a guard per row: ``(pk, values, status_in)``.

    Still one statement: every row's status list is padded (repeating its
    first status) to the longest one's length.
    """
    rows = list(rows)
    if not fields or any(not statuses for _, _, statuses in rows):
        raise ValueError("update_each needs at least one field and one status")
    if not rows:
        return
    width = max(len(statuses) for _, _, statuses in rows)
    connection = connections[write_alias()]
    quote = connection.ops.quote_name
    columns = [_concrete(name) for name in fields]
    pk_field = _pk()
    sql = (
        f"UPDATE {quote(Task._meta.db_table)} SET "
        + ", ".join(f"{quote(_column(column))} = %s" for column in columns)
        + f" WHERE {quote(_column(pk_field))} = %s"
        + f" AND {quote(_column(_concrete('status')))} IN ({', '.join(['%s'] * width)})"
    )
    params = [
        [
            *(
                column.get_db_prep_save(value, connection)
                for column, value in zip(columns, values, strict=True)
            ),
            pk_field.get_db_prep_value(pk_field.to_python(pk), connection),
            *statuses,
            *[statuses[0]] * (width - len(statuses)),
        ]
        for pk, values, statuses in rows
    ]
    # Rows in key order: two workers writing overlapping batches lock rows in
    # the same order (no deadlock on a database with row locks).
    params.sort(key=lambda row: str(row[len(columns)]))
    with connection.cursor() as cursor:
        cursor.executemany(sql, params)


def _pk() -> Field[Any, Any]:
    """The task table's primary key field."""
    return _concrete(Task._meta.pk.name if Task._meta.pk else "id")


def _concrete(name: str) -> Field[Any, Any]:
    field = Task._meta.get_field(name)
    if not isinstance(field, Field) or not field.concrete:
        raise TypeError(f"Task.{name} is not a concrete field")
    return field


def _column(field: Field[Any, Any]) -> str:
    if field.column is None:
        raise TypeError(f"Task.{field.name} has no column")
    return field.column


def ended_statuses(pks: Sequence[Any], finished_at: Any) -> dict[str, str]:
    """Status of each row of ``pks`` whose ``finished_at`` is ``finished_at``, by canonical pk.

    What :func:`progrock.state.tasks._write_endings` reads back after its
    :func:`update_each`, in one plain SELECT (the ORM builds the same query in
    about 0.2 ms of Python, more than the query takes). Call it inside the
    caller's transaction (on :func:`write_alias`), with few enough pks for one
    statement's parameters (the caller sends 200 at a time; SQLite before 3.32
    allows 999 parameters).
    """
    if not pks:
        return {}
    connection = connections[write_alias()]  # where it was just written
    quote = connection.ops.quote_name
    pk_field = _pk()
    status = _concrete("status")
    finished = _concrete("finished_at")
    sql = (
        f"SELECT {quote(_column(pk_field))}, {quote(_column(status))}"
        f" FROM {quote(Task._meta.db_table)}"
        f" WHERE {quote(_column(pk_field))} IN ({', '.join(['%s'] * len(pks))})"
        f" AND {quote(_column(finished))} = %s"
    )
    params = [pk_field.get_db_prep_value(pk_field.to_python(pk), connection) for pk in pks]
    params.append(finished.get_db_prep_value(finished_at, connection))
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return {str(pk_field.to_python(pk)): value for pk, value in cursor.fetchall()}
