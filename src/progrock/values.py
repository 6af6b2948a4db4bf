"""Which JSON values a request may carry: what every hop after the web process can hold.

A ``start`` travels from the web process to a worker through the channel
layer (msgpack), into the database (a JSON column) and to the backend (JSON
over HTTP). A value that any of these cannot hold must be refused where the
request arrives, with an error naming the field, before anything is sent:
otherwise it fails later, where it can take other requests down with it (the
web process sends the starts of many sockets as one message).

* integers: within the signed 64-bit range (msgpack and most databases
  stop there);
* numbers: finite (``NaN`` and ``Infinity`` are not JSON, and ``1e400``
  decodes to infinity);
* strings (object keys too): encodable as UTF-8, so no lone surrogates such
  as ``"\\ud800"`` (JSON escapes can spell them, msgpack cannot encode
  them), and no NUL character (PostgreSQL's JSON columns refuse it);
* nesting: at most :data:`MAX_DEPTH` arrays or objects deep.

Pure: no Django, Redis or network imports.
"""

from __future__ import annotations

import math
from typing import Final

INT_MIN: Final = -(2**63)
INT_MAX: Final = 2**63 - 1
#: Arrays and objects nested deeper than this are refused (``{"a": 1}`` is depth 1).
MAX_DEPTH: Final = 32


def short(value: object, limit: int = 60) -> str:
    """``repr(value)``, cut to ``limit`` characters (ASCII-safe: repr escapes surrogates)."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def string_problem(text: str) -> str | None:
    """Why ``text`` cannot be carried, or None if it can."""
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            return (
                f"must be valid Unicode, got a lone surrogate at character {exc.start}: "
                f"{short(text)}"
            )
    if "\x00" in text:
        return f"must not contain NUL (U+0000), got {short(text)}"
    return None


def scalar_problem(value: object) -> str | None:
    """Why the scalar ``value`` cannot be carried, or None (containers are not looked into)."""
    if isinstance(value, str):
        return string_problem(value)
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        if INT_MIN <= value <= INT_MAX:
            return None
        return f"must be an integer within the signed 64-bit range, got {short(value)}"
    if isinstance(value, float):
        return None if math.isfinite(value) else f"must be a finite number, got {value!r}"
    if isinstance(value, (dict, list)):
        return None
    return f"must be a JSON value, got {type(value).__name__} {short(value)}"


def _member(path: str, key: object) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    text = str(key)
    if text.isidentifier() and text.isascii():
        return f"{path}.{text}"
    return f"{path}[{short(text, 40)}]"


def _cap(path: str, limit: int = 120) -> str:
    """A path short enough for an error detail: its start and its end."""
    if len(path) <= limit:
        return path
    half = (limit - 3) // 2
    return path[:half] + "..." + path[-half:]


def find_problem(value: object, name: str, max_depth: int = MAX_DEPTH) -> tuple[str, str] | None:
    """The first part of ``value`` that cannot be carried, as ``(path, why)``; None if all can.

    ``name`` is the field's name, the root of every path (``params.rows[2].label``).
    Iterative, so nesting that passed the JSON decoder cannot exhaust the stack here.
    """
    stack: list[tuple[object, str, int]] = [(value, name, 0)]
    while stack:
        item, path, depth = stack.pop()
        problem = scalar_problem(item)
        if problem is not None:
            return _cap(path), problem
        if isinstance(item, dict):
            children: list[tuple[object, object]] = list(item.items())
        elif isinstance(item, list):
            children = list(enumerate(item))
        else:
            continue
        if depth >= max_depth:
            return _cap(path), f"nests arrays and objects deeper than {max_depth} levels"
        for key, child in reversed(children):
            if isinstance(key, str):
                key_problem = string_problem(key)
                if key_problem is not None:
                    return f"{_cap(path)} key {short(key, 40)}", key_problem
            elif not isinstance(item, list):
                return _cap(path), f"must have string keys, got {type(key).__name__} {short(key)}"
            stack.append((child, _member(path, key), depth + 1))
    return None
