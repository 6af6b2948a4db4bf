"""JSON log lines: :class:`JsonFormatter`, one object per line, for log shippers.

Put it in your ``LOGGING`` (no ProgRock setting)::

    LOGGING = {
        "version": 1,
        "formatters": {"json": {"()": "progrock.logs.JsonFormatter"}},
        "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "json"}},
        "root": {"handlers": ["console"], "level": "INFO"},
    }

Each line has ``time`` (UTC, ISO 8601, ms), ``level``, ``logger`` and
``message``; ``process_kind`` (``web``, ``worker``, ``delay``) once the
process has said which it is (:func:`set_process_kind`: ``runprogrock``,
``rundelay`` and a web process's first socket do); ``task_id``, ``event`` and
``count`` when the log call passed them (``extra={"task_id": ..., "event":
...}``, as ProgRock's key log calls do); ``exc`` with the traceback of a
logged exception.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any, Final

#: Record attributes copied into the line when a log call passed them with ``extra=``.
EXTRAS: Final = ("task_id", "event", "count", "process_kind")

_process_kind: str | None = None


def set_process_kind(kind: str | None) -> None:
    """Name this process's kind in every later JSON line (``web``, ``worker``, ``delay``;
    None: none)."""
    global _process_kind
    _process_kind = kind


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON object on one line."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if _process_kind is not None:
            line["process_kind"] = _process_kind
        for name in EXTRAS:
            value = record.__dict__.get(name)
            if value is not None:
                line[name] = value
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exc"] = record.exc_text
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        # default=str: an extra that JSON cannot encode is written as its text, never dropped.
        return json.dumps(line, ensure_ascii=False, default=str)
