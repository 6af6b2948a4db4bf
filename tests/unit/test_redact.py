"""Failure details lose URLs and network addresses, and keep what happened."""

from __future__ import annotations

import pytest

from progrock.redact import redact


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("backend http://127.0.0.1:8001 timed out", "127.0.0.1"),
        ("redis://:hunter2@redis.internal:6379/0 refused", "hunter2"),
        ("Error 111 connecting to 10.1.2.3:6379. Connection refused.", "10.1.2.3"),
        ("Connect call failed ('192.168.1.9', 8001)", "192.168.1.9"),
        ("Connect call failed ('::1', 8001, 0, 0)", "8001"),
        ("Cannot connect to host [fe80::1]:8001 ssl:default", "fe80"),
        ("cannot reach db.internal:5432", "db.internal"),
        ("at 2001:db8:0:0:0:0:0:1 now", "2001:db8"),
    ],
)
def test_addresses_are_replaced(text: str, secret: str) -> None:
    """URLs (credentials included), host:port pairs, IPs and socket tuples go."""
    out = redact(text)
    assert secret not in out, out
    assert "<url>" in out or "<address>" in out


@pytest.mark.parametrize(
    "text",
    [
        "backend timed out after 5 s on GET /tasks/abc",
        "the task failed at 12:30:45: ratio 3:4",
        "version 1.2.3 answered 500",
    ],
)
def test_text_without_addresses_is_unchanged(text: str) -> None:
    """Times, ratios and version numbers are not addresses."""
    assert redact(text) == text
