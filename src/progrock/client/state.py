"""Pure state machine of one watched task, as seen by the terminal client.

:class:`Tracker` turns each server message (already decoded from JSON) into a
:class:`Step` telling the I/O layer what to do: redraw, announce the task id,
finish with an :class:`Outcome`, or stop on a protocol problem. It also holds the
exit-code table and the reconnect backoff. No I/O, no clock: callers pass ``now``.
"""

from __future__ import annotations

import enum
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

TERMINAL_TYPES = frozenset({"complete", "failed", "cancelled"})
TERMINAL_STATUSES = frozenset({"succeeded", "failed", "cancelled"})
_TERMINAL_STATUS_OF = {"complete": "succeeded", "failed": "failed", "cancelled": "cancelled"}


class Outcome(enum.Enum):
    """How a ``run`` or ``watch`` ended."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    PROBLEM = "problem"
    INTERRUPTED = "interrupted"


EXIT_CODES: dict[Outcome, int] = {
    Outcome.SUCCEEDED: 0,
    Outcome.FAILED: 1,
    Outcome.CANCELLED: 2,
    Outcome.PROBLEM: 3,
    Outcome.INTERRUPTED: 130,
}


def exit_code(outcome: Outcome) -> int:
    """The process exit code for an outcome."""
    return EXIT_CODES[outcome]


def outcome_of_status(status: str) -> Outcome | None:
    """The outcome of a terminal task status, ``None`` for a live one."""
    return {
        "succeeded": Outcome.SUCCEEDED,
        "failed": Outcome.FAILED,
        "cancelled": Outcome.CANCELLED,
    }.get(status)


@dataclass
class TaskView:
    """Everything the display needs to know about the watched task."""

    task_id: str | None = None
    kind: str | None = None
    status: str = "queued"
    progress: float = 0.0
    message: str | None = None
    rate: float | None = None
    eta_s: float | None = None
    result: Any = None
    error_code: str | None = None
    error_detail: str | None = None
    seq: int = 0


@dataclass(frozen=True)
class Step:
    """What one server message means for the client."""

    changed: bool = False
    started: bool = False
    outcome: Outcome | None = None
    problem: str | None = None
    note: str | None = None


IGNORE = Step()


class ServerMessageError(ValueError):
    """A server message that breaks docs/protocol.md; the message quotes it."""


def _number(msg: dict[str, Any], name: str, *, optional: bool) -> float | None:
    value = msg.get(name)
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ServerMessageError(f"expected a number in {name!r}, got {value!r} in {msg!r}")
    return float(value)


@dataclass
class Tracker:
    """Follows one task through its messages.

    ``task_id`` is known for ``watch``; for ``run`` it is ``None`` until the
    ``started`` message that echoes ``ref``.
    """

    task_id: str | None = None
    ref: str | None = None
    view: TaskView = field(default_factory=TaskView)
    outcome: Outcome | None = None
    cancel_requested: bool = False
    _sample: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        self.view.task_id = self.task_id

    @property
    def awaiting_terminal(self) -> bool:
        """A snapshot said the task is over; its terminal message should follow."""
        return self.outcome is None and self.view.status in TERMINAL_STATUSES

    def handle(self, msg: object, now: float) -> Step:
        """Apply one decoded server message and say what it means."""
        if self.outcome is not None:
            return IGNORE
        if not isinstance(msg, dict):
            return Step(problem=f"expected a JSON object from the server, got {msg!r}")
        try:
            return self._handle(msg, now)
        except ServerMessageError as exc:
            return Step(problem=str(exc))

    def _handle(self, msg: dict[str, Any], now: float) -> Step:
        kind = msg.get("type")
        if kind is None:
            return IGNORE  # the {"accept": true} greeting, or a 2017-style frame
        if kind == "error":
            return self._error(msg)
        task_id = msg.get("task_id")
        adopted = False
        if self.task_id is None and task_id is not None:
            # The socket of a ``run`` only hears of the task it started, so its
            # first task message names it: ``started``, or ``failed`` (seq 1)
            # when the backend rejected the task before it started.
            if "ref" in msg and msg["ref"] != self.ref:
                return IGNORE
            if not isinstance(task_id, str) or not task_id:
                raise ServerMessageError(f"expected a string 'task_id', got {msg!r}")
            self.task_id = self.view.task_id = task_id
            adopted = True
        if self.task_id is None or task_id != self.task_id:
            return IGNORE
        if adopted and kind not in TERMINAL_TYPES:
            self._apply_task(msg, now)
            return Step(changed=True, started=True)
        if kind == "snapshot":
            self._apply_snapshot(msg, now)
            return Step(changed=True)
        if kind in TERMINAL_TYPES:
            step = self._terminal(kind, msg)
            return Step(changed=True, started=adopted, outcome=step.outcome)
        if kind in ("started", "progress"):
            seq = msg.get("seq")
            if isinstance(seq, int) and seq <= self.view.seq:
                return IGNORE  # already seen (or older than a snapshot)
            self._apply_task(msg, now)
            return Step(changed=True)
        return IGNORE  # unsubscribed, tasks, or a type newer than this client

    def _error(self, msg: dict[str, Any]) -> Step:
        code = msg.get("code")
        detail = msg.get("detail")
        if code == "not_cancellable" and self.cancel_requested:
            return Step(note=f"the task is already over: {detail}")
        if msg.get("task_id") not in (None, self.task_id):
            return IGNORE
        if self.ref is not None and msg.get("ref") not in (None, self.ref):
            return IGNORE
        return Step(problem=f"{code}: {detail}")

    def _apply_common(self, msg: dict[str, Any]) -> None:
        seq = msg.get("seq")
        if isinstance(seq, int) and not isinstance(seq, bool):
            self.view.seq = seq
        kind = msg.get("kind")
        if isinstance(kind, str):
            self.view.kind = kind
        status = msg.get("status")
        if isinstance(status, str):
            self.view.status = status

    def _apply_task(self, msg: dict[str, Any], now: float) -> None:
        self._apply_common(msg)
        if msg.get("type") == "progress":
            self.view.status = "running"
        progress = _number(msg, "progress", optional=True)
        if progress is not None:
            self.view.progress = max(self.view.progress, progress)
        if "message" in msg:
            message = msg["message"]
            self.view.message = message if isinstance(message, str) else None
        if "rate" in msg:
            self.view.rate = _number(msg, "rate", optional=True)
        if "eta_s" in msg:
            self.view.eta_s = _number(msg, "eta_s", optional=True)
        self._observe(now)

    def _apply_snapshot(self, msg: dict[str, Any], now: float) -> None:
        self._apply_common(msg)
        progress = _number(msg, "progress", optional=True)
        self.view.progress = progress if progress is not None else 0.0
        message = msg.get("message")
        self.view.message = message if isinstance(message, str) else None
        self.view.rate = _number(msg, "rate", optional=True)
        self.view.eta_s = _number(msg, "eta_s", optional=True)
        self.view.result = msg.get("result")
        self._apply_error(msg.get("error"))
        self._sample = None
        self._observe(now)

    def _apply_error(self, error: object) -> None:
        if isinstance(error, dict):
            code, detail = error.get("code"), error.get("detail")
            self.view.error_code = str(code) if code is not None else None
            self.view.error_detail = str(detail) if detail is not None else None

    def _terminal(self, kind: str, msg: dict[str, Any]) -> Step:
        self._apply_common(msg)
        self.view.status = _TERMINAL_STATUS_OF[kind]
        progress = _number(msg, "progress", optional=True)
        if progress is not None:
            self.view.progress = progress
        if kind == "complete":
            self.view.progress = 100.0
            self.view.result = msg.get("result")
        elif kind == "failed":
            error = msg.get("error")
            if not isinstance(error, dict):
                raise ServerMessageError(f"expected an 'error' object, got {msg!r}")
            self._apply_error(error)
        self.view.rate = self.view.eta_s = None
        self.outcome = outcome_of_status(self.view.status)
        return Step(changed=True, outcome=self.outcome)

    def finish_from_snapshot(self) -> Outcome | None:
        """End on a terminal snapshot whose terminal message never came."""
        if self.awaiting_terminal:
            self.outcome = outcome_of_status(self.view.status)
        return self.outcome

    def _observe(self, now: float) -> None:
        """Keep the first sample since (re)subscribing, for a local rate estimate."""
        if self._sample is None:
            self._sample = (now, self.view.progress)

    def estimated_rate(self, now: float) -> float | None:
        """The server's rate, else progress per second observed since the first sample."""
        if self.view.rate is not None:
            return self.view.rate
        if self._sample is None or self.view.status != "running":
            return None
        t0, p0 = self._sample
        elapsed = now - t0
        if elapsed < 1.0 or self.view.progress <= p0:
            return None
        return (self.view.progress - p0) / elapsed


def backoff_delays(
    attempts: int,
    *,
    base: float = 0.5,
    factor: float = 2.0,
    cap: float = 5.0,
    rng: random.Random | None = None,
    restarting: bool = False,
) -> Iterator[float]:
    """Capped exponential delays with "equal jitter": each in ``[d/2, d]``.

    ``restarting``: the server closed with 1012 (service restart), so another
    one takes us at once: the first delay is in ``[0, base/2]`` instead (full
    jitter, spreading the reconnects of all its clients).
    """
    if attempts < 0:
        raise ValueError(f"expected attempts >= 0, got {attempts!r}")
    rand = rng or random.Random()
    for n in range(attempts):
        delay = min(cap, base * factor**n)
        if n == 0 and restarting:
            yield rand.uniform(0, delay / 2)
        else:
            yield delay / 2 + rand.uniform(0, delay / 2)
