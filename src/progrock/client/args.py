"""Pure parsing of the terminal client's command-line values.

No I/O: every function turns a string into a value or raises
:class:`ArgumentValueError` (a ``ValueError``) whose message quotes the bad value.
"""

from __future__ import annotations

import json
import shlex
import uuid
from typing import Any
from urllib.parse import urlsplit, urlunsplit

DEFAULT_URL = "http://127.0.0.1:8000"
SOCKET_PATH = "/prog/"


class ArgumentValueError(ValueError):
    """A command-line value that cannot be used; the message quotes it."""


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse_value(text: str) -> Any:
    """Return ``text`` parsed as JSON when it parses, else ``text`` itself.

    ``NaN`` and ``Infinity`` stay strings: they are not JSON and the server
    could not send them back.
    """
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except ValueError:
        return text


def parse_param(text: str) -> tuple[str, Any]:
    """Split one ``--param key=value`` into ``(key, parsed value)``."""
    key, sep, raw = text.partition("=")
    if not sep:
        raise ArgumentValueError(f"expected key=value, got {text!r}")
    key = key.strip()
    if not key:
        raise ArgumentValueError(f"expected a non-empty key before '=', got {text!r}")
    return key, parse_value(raw)


def parse_params(items: list[str]) -> dict[str, Any]:
    """Combine several ``key=value`` strings into a params object; keys must not repeat."""
    params: dict[str, Any] = {}
    for item in items:
        key, value = parse_param(item)
        if key in params:
            raise ArgumentValueError(f"expected each key once, got {key!r} again in {item!r}")
        params[key] = value
    return params


def parse_url(text: str) -> str:
    """Validate a server URL and return it without query, fragment or trailing slash."""
    parts = urlsplit(text.strip())
    if parts.scheme not in ("http", "https"):
        raise ArgumentValueError(f"expected an http:// or https:// URL, got {text!r}")
    if not parts.hostname:
        raise ArgumentValueError(f"expected a URL with a host name, got {text!r}")
    try:
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise ArgumentValueError(f"expected a URL with a valid port, got {text!r}") from None
    return urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/"), "", ""))


def socket_url(url: str) -> str:
    """The WebSocket address for a server URL: ``ws(s)://host[:port]/prog/``."""
    parts = urlsplit(url)
    scheme = "wss" if parts.scheme == "https" else "ws"
    return urlunsplit((scheme, parts.netloc, SOCKET_PATH, "", ""))


def origin(url: str) -> str:
    """The ``Origin`` header a browser on ``url`` would send: ``scheme://host[:port]``."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "", "", ""))


def home_page(url: str) -> str:
    """The ``/`` page of the server, whose visit gives an anonymous session."""
    return origin(url) + "/"


def parse_task_id(text: str) -> str:
    """Validate a task id (a UUID) and return it in canonical lower-case form."""
    try:
        return str(uuid.UUID(text.strip()))
    except ValueError:
        raise ArgumentValueError(f"expected a task id (a UUID), got {text!r}") from None


def parse_kind(text: str) -> str:
    """Validate a task kind: a non-empty string without surrounding spaces."""
    kind = text.strip()
    if not kind:
        raise ArgumentValueError(f"expected a non-empty task kind, got {text!r}")
    return kind


def watch_command(task_id: str, url: str, session_key: str | None, *, token: bool = False) -> str:
    """A ready-to-paste ``progrock watch`` command line for a task (with a token:
    ``--token TOKEN`` to fill in; the token itself is not printed)."""
    parts = ["progrock", "watch", task_id]
    if session_key and not token:
        parts += ["--session", session_key]
    parts += ["--url", url]
    return shlex.join(parts) + (" --token TOKEN" if token else "")


def parse_attempts(text: str) -> int:
    """A number of reconnect attempts: an integer >= 0."""
    try:
        value = int(text.strip())
    except ValueError:
        value = -1
    if value < 0:
        raise ArgumentValueError(f"expected an integer >= 0, got {text!r}")
    return value
