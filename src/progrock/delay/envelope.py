"""Delayed-message envelopes: validation, storage format and merging (pure, no I/O).

An envelope is what a sender puts on the ``asgi.delay`` channel::

    {"channel": str, "content": {"type": str, ...}, "delay": ms >= 0,
     "key": str (optional), "merge": bool (optional)}

Stored, it becomes a :class:`Pending` record with an absolute due time.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from progrock.exceptions import ProgRockError

# Channels' own rule for channel names (channels.layers.BaseChannelLayer).
_CHANNEL_NAME = re.compile(r"^[a-zA-Z\d\-_.]+(\![\d\w\-_.]*)?$")
_MAX_NAME_LENGTH = 100


class InvalidEnvelope(ProgRockError, ValueError):
    """A delayed message (sent to ``asgi.delay`` or found in the store) is malformed."""


def _check_channel(channel: object) -> str:
    if not isinstance(channel, str):
        raise InvalidEnvelope(f"'channel' must be a string, got {channel!r}")
    if len(channel) >= _MAX_NAME_LENGTH or not _CHANNEL_NAME.match(channel):
        raise InvalidEnvelope(
            f"'channel' must be a valid channel name (ASCII letters, digits, '-', '_', '.', "
            f"shorter than {_MAX_NAME_LENGTH}), got {channel!r}"
        )
    return channel


def _check_content(content: object) -> dict[str, Any]:
    if not isinstance(content, dict):
        raise InvalidEnvelope(f"'content' must be an object, got {content!r}")
    kind = content.get("type")
    if not isinstance(kind, str) or not kind:
        raise InvalidEnvelope(f"'content' must have a non-empty string 'type', got {kind!r}")
    return content


def _check_number(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InvalidEnvelope(f"{name!r} must be a finite number, got {value!r}")
    if value < 0:
        raise InvalidEnvelope(f"{name!r} must be >= 0 milliseconds, got {value!r}")
    return float(value)


def _check_key(key: object) -> str | None:
    if key is None:
        return None
    if not isinstance(key, str) or not key:
        raise InvalidEnvelope(f"'key' must be a non-empty string or absent, got {key!r}")
    return key


def _check_merge(merge: object) -> bool:
    if not isinstance(merge, bool):
        raise InvalidEnvelope(f"'merge' must be a boolean, got {merge!r}")
    return merge


@dataclass(frozen=True, slots=True)
class Envelope:
    """A message to deliver to ``channel`` after ``delay_ms`` milliseconds."""

    channel: str
    content: dict[str, Any]
    delay_ms: float = 0.0
    key: str | None = None
    merge: bool = False

    def __post_init__(self) -> None:
        _check_channel(self.channel)
        _check_content(self.content)
        _check_number("delay", self.delay_ms)
        _check_key(self.key)
        _check_merge(self.merge)

    @classmethod
    def from_message(cls, message: object) -> Envelope:
        """Parse the wire format received on the ``asgi.delay`` channel."""
        if not isinstance(message, Mapping):
            raise InvalidEnvelope(f"envelope must be an object, got {message!r}")
        if "delay" not in message:
            raise InvalidEnvelope(f"envelope has no 'delay' (milliseconds): {dict(message)!r}")
        return cls(
            channel=message.get("channel"),  # type: ignore[arg-type]  # validated
            content=message.get("content"),  # type: ignore[arg-type]
            delay_ms=message["delay"],
            key=message.get("key"),
            merge=message.get("merge", False),
        )


@dataclass(frozen=True, slots=True)
class Pending:
    """A stored delayed message: what the payload hash holds, plus its id."""

    id: str
    channel: str
    content: dict[str, Any]
    due_ms: float
    key: str | None = None
    merge: bool = False

    def to_json(self) -> str:
        body = {"channel": self.channel, "content": self.content, "due": self.due_ms}
        if self.key is not None:
            body["key"] = self.key
        if self.merge:
            body["merge"] = True
        try:
            return json.dumps(body, separators=(",", ":"), allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise InvalidEnvelope(
                f"'content' is not JSON-serializable ({exc}): {self.content!r}"
            ) from None

    @classmethod
    def from_envelope(cls, message_id: str, envelope: Envelope, now_ms: float) -> Pending:
        return cls(
            id=message_id,
            channel=envelope.channel,
            content=envelope.content,
            due_ms=now_ms + envelope.delay_ms,
            key=envelope.key,
            merge=envelope.merge,
        )

    @classmethod
    def from_json(cls, message_id: str, raw: str) -> Pending:
        """Parse a payload found in the store; raise :class:`InvalidEnvelope` if malformed."""
        if not raw:
            raise InvalidEnvelope(f"message {message_id!r} has no payload")
        try:
            body = json.loads(raw)
        except ValueError as exc:
            raise InvalidEnvelope(f"payload is not JSON ({exc}): {raw[:200]!r}") from None
        if not isinstance(body, dict):
            raise InvalidEnvelope(f"payload must be an object, got {raw[:200]!r}")
        due = body.get("due")
        if isinstance(due, bool) or not isinstance(due, (int, float)):
            raise InvalidEnvelope(f"payload 'due' must be a number, got {due!r}")
        return cls(
            id=message_id,
            channel=_check_channel(body.get("channel")),
            content=_check_content(body.get("content")),
            due_ms=float(due),
            key=_check_key(body.get("key")),
            merge=_check_merge(body.get("merge", False)),
        )


@dataclass(slots=True)
class Delivery:
    """One channel-layer send, standing for one or more stored messages."""

    channel: str
    content: dict[str, Any]
    sources: list[Pending] = field(default_factory=list)


def merge_contents(contents: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Merge contents: list fields concatenated in order, other fields from the first."""
    merged = dict(contents[0])
    for key, value in merged.items():
        if isinstance(value, list):
            merged[key] = list(value)
    for content in contents[1:]:
        for key, value in content.items():
            if not isinstance(value, list):
                continue
            current = merged.get(key)
            if isinstance(current, list):
                current.extend(value)
            elif key not in merged:
                merged[key] = list(value)
    return merged


def _weight(content: Mapping[str, Any]) -> int:
    """How much a merged message carries: the items of its list fields (at least 1)."""
    return max(1, sum(len(value) for value in content.values() if isinstance(value, list)))


def plan_deliveries(messages: Sequence[Pending], batch: int) -> list[Delivery]:
    """Group claimed messages into sends, in due order.

    Messages with ``merge`` that target the same channel and share
    ``content["type"]`` become one send carrying at most ``batch`` items (the
    entries of their list fields, e.g. poll ticks; a message with no list
    counts as one; a single message larger than ``batch`` goes alone); the
    others are sent one by one.
    """
    if batch < 1:
        raise ValueError(f"batch must be a positive integer, got {batch!r}")
    deliveries: list[Delivery] = []
    open_groups: dict[tuple[str, str], tuple[Delivery, list[int]]] = {}
    for message in sorted(messages, key=lambda m: m.due_ms):
        if not message.merge:
            deliveries.append(Delivery(message.channel, message.content, [message]))
            continue
        weight = _weight(message.content)
        group_key = (message.channel, message.content["type"])
        group = open_groups.get(group_key)
        if group is None or group[1][0] + weight > batch:
            group = (Delivery(message.channel, message.content, []), [0])
            open_groups[group_key] = group
            deliveries.append(group[0])
        group[0].sources.append(message)
        group[1][0] += weight
    for delivery in deliveries:
        if len(delivery.sources) > 1:
            delivery.content = merge_contents([m.content for m in delivery.sources])
    return deliveries
