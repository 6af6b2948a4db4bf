"""Seeded generator of hostile client frames for the fuzz test (no I/O).

Frames are valid requests, mutations of them (flipped, cut, repeated and
inserted characters), random JSON values (with the poison values every hop
must refuse: 70-bit integers, lone surrogates, NaN, deep nesting, NUL),
random text, binary frames and oversized ones. Every text frame is valid
UTF-8 (the client can send it); the frames the web server cannot read at all
(over 1 MiB, invalid UTF-8) are :func:`unreadable`, for sockets of their own.
"""

from __future__ import annotations

import json
import random
import uuid
from typing import Any

ACTIONS = ("start", "subscribe", "unsubscribe", "cancel", "list")
POISON_TEXT = (
    str(2**70),
    str(-(2**64)),
    '"\\ud800"',
    '"\\udfff x"',
    "NaN",
    "Infinity",
    "1e400",
    '"\\u0000"',
    "[" * 40 + "]" * 40,
    '{"a":' * 40 + "1" + "}" * 40,
)
NOISE = '{}[]":,\\ ' + "0123456789abcdefnulltruefalse-+.eE" + "é✓🎸\u2028"


class FrameGenerator:
    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)

    def frame(self, own_tasks: list[str]) -> str | bytes:
        """One frame: text (a str) or binary (bytes)."""
        roll = self.rng.random()
        if roll < 0.02:
            return self.rng.randbytes(self.rng.randint(0, 64))
        if roll < 0.025:
            return '{"action": "list", "pad": "' + "x" * self.rng.randint(65_537, 200_000) + '"}'
        if roll < 0.35:
            return self.valid(own_tasks)
        if roll < 0.75:
            return self.mutate(self.valid(own_tasks))
        if roll < 0.9:
            return self.poisoned()
        if roll < 0.95:
            return json.dumps(self.value(0))
        return "".join(self.rng.choice(NOISE) for _ in range(self.rng.randint(0, 40)))

    def valid(self, own_tasks: list[str]) -> str:
        action = self.rng.choice(ACTIONS)
        message: dict[str, Any] = {"action": action}
        if action == "start":
            message["kind"] = self.rng.choice(["rock", "rock", "hash", "nope"])
            message["params"] = self.rng.choice(
                [{"interval_ms": 20}, {"interval_ms": 20, "step": 50}, {"bogus": 1}, {}]
            )
            if message["kind"] == "hash":
                message["params"] = {"mb": 1}
            if self.rng.random() < 0.7:
                message["ref"] = self.rng.choice([self.rng.randint(-(2**63), 2**63 - 1), "r"])
        elif action in ("subscribe", "unsubscribe"):
            if own_tasks and self.rng.random() < 0.5:
                message["task_id"] = self.rng.choice(own_tasks)
            else:
                message["task_id"] = str(uuid.UUID(int=self.rng.getrandbits(128)))
        elif action == "cancel":  # never an own task: its answer goes to watchers only
            message["task_id"] = str(uuid.UUID(int=self.rng.getrandbits(128)))
        return json.dumps(message)

    def mutate(self, text: str) -> str:
        chars = list(text)
        for _ in range(self.rng.randint(1, 4)):
            op = self.rng.randrange(5)
            at = self.rng.randint(0, len(chars))
            if op == 0 and chars:  # replace
                chars[min(at, len(chars) - 1)] = self.rng.choice(NOISE)
            elif op == 1:  # delete a span
                del chars[at : at + self.rng.randint(1, 5)]
            elif op == 2:  # insert noise
                chars[at:at] = [self.rng.choice(NOISE) for _ in range(self.rng.randint(1, 5))]
            elif op == 3:  # repeat a span
                chars[at:at] = chars[at : at + self.rng.randint(1, 10)] * self.rng.randint(1, 3)
            else:  # cut
                chars = chars[:at]
        return "".join(chars)

    def poisoned(self) -> str:
        poison = self.rng.choice(POISON_TEXT)
        where = self.rng.randrange(4)
        if where == 0:
            return '{"action": "start", "ref": ' + poison + "}"
        if where == 1:
            return '{"action": "start", "params": {"p": ' + poison + "}}"
        if where == 2:
            return '{"action": "start", "kind": ' + poison + "}"
        return '{"action": ' + poison + "}"

    def value(self, depth: int) -> Any:
        roll = self.rng.random()
        if depth < 4 and roll < 0.3:
            return [self.value(depth + 1) for _ in range(self.rng.randint(0, 4))]
        if depth < 4 and roll < 0.6:
            keys = ["action", "kind", "params", "ref", "task_id", "x"]
            return {
                self.rng.choice(keys): self.value(depth + 1) for _ in range(self.rng.randint(0, 4))
            }
        return self.rng.choice(
            [None, True, 0, -1, 2**63 - 1, 1.5, "", "start", "list", "✓", *ACTIONS]
        )


def unreadable(rng: random.Random) -> tuple[bytes, int]:
    """A text frame the web server cannot read, and the close code it must get."""
    if rng.random() < 0.5:
        return b"x" * (1024 * 1024 + rng.randint(1, 1000)), 1009
    good = b'{"action": "list"}'
    at = rng.randint(0, len(good))
    return good[:at] + rng.choice([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xf8\x88"]) + good[
        at:
    ], 1007
