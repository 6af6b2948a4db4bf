"""parse_status: strict validation of one backend task object (pure, no I/O)."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from progrock.exceptions import ServiceError
from progrock.services.base import ServiceStatus, TaskService, parse_status

GOOD: dict[str, Any] = {
    "id": "abc",
    "kind": "rock",
    "state": "running",
    "progress": 42,
    "message": "rocking 42%",
    "result": None,
    "error": None,
    "created_at": 1.5,
}


def with_(**changes: Any) -> dict[str, Any]:
    return {**GOOD, **changes}


def without(name: str) -> dict[str, Any]:
    return {k: v for k, v in GOOD.items() if k != name}


def test_parses_a_good_object() -> None:
    """A well-formed object becomes a ServiceStatus with float progress."""
    status = parse_status(GOOD)
    assert status == ServiceStatus("abc", "running", 42.0, "rocking 42%", None, None)
    assert isinstance(status.progress, float)
    assert not status.terminal


def test_keeps_result_and_error_and_ignores_extra_fields() -> None:
    """result (any JSON) and error pass through; unknown fields are ignored."""
    status = parse_status(with_(state="succeeded", progress=100, result={"a": [1]}, new=1))
    assert status.result == {"a": [1]} and status.terminal
    assert parse_status(with_(state="failed", error="boom")).error == "boom"


def test_optional_fields_may_be_missing() -> None:
    """message, result and error default to None when absent."""
    status = parse_status({"id": "x", "state": "cancelled", "progress": 0})
    assert (status.message, status.result, status.error) == (None, None, None)


@pytest.mark.parametrize(
    ("obj", "quoted"),
    [
        ([GOOD], "task status must be an object, got list"),
        (None, "task status must be an object, got NoneType: None"),
        (without("id"), "'id' must be a non-empty string, got None"),
        (with_(id=""), "'id' must be a non-empty string, got ''"),
        (with_(id=7), "'id' must be a non-empty string, got 7"),
        (without("state"), "'state' must be one of"),
        (with_(state="done"), "got 'done'"),
        (with_(state="RUNNING"), "got 'RUNNING'"),
        (without("progress"), "'progress' must be a number within 0..100, got None"),
        (with_(progress="42"), "got '42'"),
        (with_(progress=True), "got True"),
        (with_(progress=-0.5), "got -0.5"),
        (with_(progress=100.01), "got 100.01"),
        (with_(progress=math.nan), "got nan"),
        (with_(progress=math.inf), "got inf"),
        (with_(message=3), "'message' must be a string or null, got 3"),
        (with_(error={"code": "x"}), "'error' must be a string or null, got {'code': 'x'}"),
    ],
)
def test_rejects_each_malformed_field(obj: object, quoted: str) -> None:
    """Each malformed field raises ServiceError quoting the bad value."""
    with pytest.raises(ServiceError) as info:
        parse_status(obj)
    assert quoted in str(info.value)


def test_expected_ref_must_match() -> None:
    """An object whose id differs from the ref asked about is rejected."""
    with pytest.raises(ServiceError, match="'id' is 'abc', expected 'xyz'"):
        parse_status(GOOD, expected_ref="xyz")
    assert parse_status(GOOD, expected_ref="abc").ref == "abc"


@given(st.floats(allow_nan=True, allow_infinity=True) | st.integers())
def test_progress_accepted_iff_within_range(progress: float) -> None:
    """Any number is accepted exactly when it is finite and within 0..100, never clamped."""
    obj = with_(progress=progress)
    if math.isfinite(progress) and 0 <= progress <= 100:
        assert parse_status(obj).progress == progress
    else:
        with pytest.raises(ServiceError):
            parse_status(obj)


def test_http_service_satisfies_the_protocol() -> None:
    """HttpTaskService is structurally a TaskService."""
    from progrock.services.http import HttpTaskService

    assert isinstance(HttpTaskService("http://127.0.0.1:1"), TaskService)


def test_lone_surrogates_in_backend_text_become_replacement_characters() -> None:
    """JSON may carry "\\udc80"; Redis and browsers cannot: it becomes U+FFFD, the rest stays."""
    status = parse_status(
        {"id": "r", "state": "failed", "progress": 5, "message": "a\udc80b?", "error": "x\ud800"}
    )
    assert status.message == "a\ufffdb?"
    assert status.error == "x\ufffd"
    assert parse_status(
        {"id": "r", "state": "running", "progress": 5, "message": "é 🚀"}
    ).message == ("é 🚀")
