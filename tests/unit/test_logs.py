"""``progrock.logs.JsonFormatter``: one JSON object per line, with ProgRock's extras."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from decimal import Decimal

import pytest

from progrock import logs
from progrock.exceptions import ServiceError
from progrock.worker.polls import backend_trouble
from tests.unit.test_polls_plan import NOW, STATE


@pytest.fixture
def lines() -> Iterator[io.StringIO]:
    """The ``progrock`` logger's output through a JsonFormatter handler."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logs.JsonFormatter())
    logger = logging.getLogger("progrock")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield out
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        logs.set_process_kind(None)


def parsed(out: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_a_line_has_time_level_logger_message_and_the_extras(lines: io.StringIO) -> None:
    """The four fields, then task_id, event and process_kind when given."""
    logs.set_process_kind("worker")
    logging.getLogger("progrock.worker").warning(
        "task %s: %s", "t-1", "multi\nline \u00e9", extra={"task_id": "t-1", "event": "ev"}
    )
    [line] = parsed(lines)
    assert line["level"] == "WARNING" and line["logger"] == "progrock.worker"
    assert line["message"] == "task t-1: multi\nline \u00e9"
    assert line["task_id"] == "t-1" and line["event"] == "ev"
    assert line["process_kind"] == "worker"
    assert str(line["time"]).endswith("+00:00") and "T" in str(line["time"])
    assert len(lines.getvalue().splitlines()) == 1  # the newline is escaped


def test_no_extras_no_keys_and_an_exception_is_one_field(lines: io.StringIO) -> None:
    """Without extras only the four fields; a logged exception becomes ``exc``."""
    logging.getLogger("progrock.web").info("plain")
    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("progrock.web").exception("failed")
    plain, failed = parsed(lines)
    assert set(plain) == {"time", "level", "logger", "message"}
    assert "ValueError: boom" in str(failed["exc"])


def test_an_extra_json_cannot_encode_is_written_as_text(lines: io.StringIO) -> None:
    """An odd value in ``count`` is its str(), not a crash of the handler."""
    logging.getLogger("progrock").info("odd", extra={"count": Decimal("1.50")})
    [line] = parsed(lines)
    assert line["count"] == "1.50"


def test_a_failed_poll_logs_its_task_id_and_event(lines: io.StringIO) -> None:
    """ProgRock's own key log calls pass the task id and an event name."""
    backend_trouble("a-task-id", STATE, ServiceError("down"), NOW, [])
    [line] = parsed(lines)
    assert line["task_id"] == "a-task-id" and line["event"] == "poll_failed"
