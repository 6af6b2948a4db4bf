"""Take internal addresses out of text that goes to browsers.

Failure details are written by workers from what went wrong (an HTTP client's
error names the backend's URL, a Redis error its address). Browsers must not
learn those: :func:`redact` replaces URLs, ``host:port`` pairs, IP addresses
and ``('host', port)`` tuples with placeholders and keeps the rest, which
still says what happened ("timed out", "answered 500", "cannot connect").
The full text belongs in the log. Pure: no imports beyond ``re``.
"""

from __future__ import annotations

import re
from typing import Final

ADDRESS: Final = "<address>"
URL: Final = "<url>"

_PATTERNS: Final = (
    # scheme://anything-up-to-whitespace-or-quote (credentials included)
    (
        re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s'\"<>()\[\]]*(?:\[[^\]\s]*\][^\s'\"<>()]*)?"),
        URL,
    ),
    # ('127.0.0.1', 8001) or ('::1', 8001, 0, 0): how sockets name addresses
    (re.compile(r"\(\s*'[^']*'\s*,\s*\d+(?:\s*,\s*\d+)*\s*\)"), ADDRESS),
    # [::1]:8001, [fe80::1]
    (re.compile(r"\[[0-9a-fA-F:.%]*:[0-9a-fA-F:.%]*\](?::\d+)?"), ADDRESS),
    # 10.0.0.5:6379, 10.0.0.5
    (re.compile(r"\b\d{1,3}(?:\.\d{1,3}){3}(?::\d+)?\b"), ADDRESS),
    # localhost:8001, redis.internal:6379, db:5432
    (re.compile(r"\b(?:[a-zA-Z0-9-]+\.)*[a-zA-Z][a-zA-Z0-9-]*:\d{2,5}\b"), ADDRESS),
    # bare IPv6 addresses: eight groups, or fewer around a "::"
    (re.compile(r"(?<![\w:])(?:[0-9a-fA-F]{1,4}:){7}[0-9a-fA-F]{1,4}(?![\w:])"), ADDRESS),
    (
        re.compile(
            r"(?<![\w:])(?:[0-9a-fA-F]{1,4}(?::[0-9a-fA-F]{1,4})*)?::"
            r"(?:[0-9a-fA-F]{1,4}(?::[0-9a-fA-F]{1,4})*)?(?![\w:])"
        ),
        ADDRESS,
    ),
)


def redact(text: str) -> str:
    """``text`` with every URL and network address replaced by a placeholder."""
    for pattern, placeholder in _PATTERNS:
        text = pattern.sub(placeholder, text)
    return text
