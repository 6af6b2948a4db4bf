"""The ProgRock protocol, pure: client requests, server messages, task states.

Nothing here touches Django, Redis or the network. The consumer, the worker,
the HTTP API and the clients are adapters over these functions; the spec is
``docs/protocol.md``.
"""

from __future__ import annotations

import json
import math
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Final

from progrock.exceptions import InvalidTransition, ProtocolError
from progrock.redact import redact
from progrock.values import find_problem, scalar_problem, short, string_problem

ACCEPT_FRAME: Final = '{"accept": true}'
#: The channel-layer channel the workers consume (``runprogrock``): the 2017 design's name.
WORKER_CHANNEL: Final = "prog-rocker"
#: The channel-layer channel the delay server consumes (``rundelay``), as in ASGI's spec.
DELAY_CHANNEL: Final = "asgi.delay"
MAX_REF_LENGTH: Final = 200
MAX_KIND_LENGTH: Final = 100  # the Task model's kind column
LIST_LIMIT: Final = 50


class Status(StrEnum):
    """A task's status; the state machine is :data:`TRANSITIONS`."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL


TERMINAL: Final = frozenset({Status.SUCCEEDED, Status.FAILED, Status.CANCELLED})
ACTIVE: Final = frozenset({Status.QUEUED, Status.RUNNING})

TRANSITIONS: Final[Mapping[Status, frozenset[Status]]] = {
    Status.QUEUED: frozenset({Status.RUNNING, Status.FAILED, Status.CANCELLED}),
    Status.RUNNING: frozenset({Status.SUCCEEDED, Status.FAILED, Status.CANCELLED}),
    Status.SUCCEEDED: frozenset(),
    Status.FAILED: frozenset(),
    Status.CANCELLED: frozenset(),
}


def check_transition(old: Status | str, new: Status | str) -> Status:
    """Return ``new`` as a :class:`Status` if ``old -> new`` is allowed, else raise."""
    old_s, new_s = Status(old), Status(new)
    if old_s == new_s and not old_s.terminal:
        return new_s
    if new_s not in TRANSITIONS[old_s]:
        raise InvalidTransition(f"task status cannot go from {old_s.value!r} to {new_s.value!r}")
    return new_s


# Server -> client message types
STARTED: Final = "started"
PROGRESS: Final = "progress"
COMPLETE: Final = "complete"
FAILED: Final = "failed"
CANCELLED: Final = "cancelled"
SNAPSHOT: Final = "snapshot"
UNSUBSCRIBED: Final = "unsubscribed"
TASKS: Final = "tasks"
ERROR: Final = "error"

TASK_MESSAGE_TYPES: Final = frozenset({STARTED, PROGRESS, COMPLETE, FAILED, CANCELLED, SNAPSHOT})

# Client actions
ACTIONS: Final = ("auth", "start", "subscribe", "unsubscribe", "cancel", "list")
#: Characters a token may have at most: longer is none a server issues (refused unread).
MAX_TOKEN_LENGTH: Final = 4096

# Error codes (docs/protocol.md, 3.3)
ERROR_CODES: Final = frozenset(
    {
        "bad_json",
        "bad_message",
        "unknown_action",
        "invalid_field",
        "frame_too_large",
        "params_too_large",
        "binary_not_supported",
        "unknown_kind",
        "forbidden",
        "too_many_tasks",
        "not_cancellable",
        "rate_limited",
        "too_many_sockets",
        "unauthenticated",
        "unavailable",
        "internal_error",
    }
)
# Failure codes (docs/protocol.md, 3.4)
FAILURE_CODES: Final = frozenset(
    {
        "backend_failed",
        "backend_unreachable",
        "backend_rejected",
        "lost",
        "not_started",
        "task_failed",
        "bad_result",
    }
)


# --------------------------------------------------------------------------
# Client requests


@dataclass(frozen=True, slots=True)
class Start:
    kind: str
    params: dict[str, Any] = field(default_factory=dict)
    ref: str | int | None = None
    action: str = "start"


@dataclass(frozen=True, slots=True)
class Subscribe:
    task_id: str
    action: str = "subscribe"


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    task_id: str
    action: str = "unsubscribe"


@dataclass(frozen=True, slots=True)
class Cancel:
    task_id: str
    action: str = "cancel"


@dataclass(frozen=True, slots=True)
class ListTasks:
    action: str = "list"


@dataclass(frozen=True, slots=True)
class Auth:
    """A token, as a socket's first message (docs/howto-tokens.md)."""

    token: str = field(repr=False)  # a secret: never in a log line or a traceback
    action: str = "auth"


ClientRequest = Auth | Start | Subscribe | Unsubscribe | Cancel | ListTasks


@dataclass(frozen=True, slots=True)
class Limits:
    """What :func:`parse_client_frame` accepts (from the PROGROCK settings)."""

    max_frame_bytes: int = 65_536
    max_params_bytes: int = 8_192
    kinds: tuple[str, ...] | None = ("rock", "hash")
    default_kind: str = "rock"


_short = short


# A task id as str(uuid.UUID(...)) writes it: checked far faster than by parsing.
_CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def canonical_task_id(value: str) -> str | None:
    """``value`` as ``str(uuid.UUID(value))`` writes it, or None if it is no UUID."""
    if _CANONICAL_UUID.fullmatch(value) is not None:
        return value
    try:
        return str(uuid.UUID(value))
    except ValueError:
        return None


def parse_task_id(value: object, action: str) -> str:
    """Return ``value`` as a canonical UUID string, or raise ``invalid_field``."""
    if not isinstance(value, str):
        raise ProtocolError(
            "invalid_field",
            f"task_id must be a UUID string, got {type(value).__name__} {_short(value)}",
            action=action,
        )
    task_id = canonical_task_id(value)
    if task_id is None:
        raise ProtocolError(
            "invalid_field", f"task_id must be a UUID string, got {_short(value)}", action=action
        )
    return task_id


def parse_client_frame(text: str | bytes, limits: Limits = Limits()) -> ClientRequest:
    """Parse one client frame into a request, or raise :class:`ProtocolError`."""
    if isinstance(text, bytes):
        raise ProtocolError("binary_not_supported", "send JSON in text frames, not binary frames")
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > limits.max_frame_bytes:
        raise ProtocolError(
            "frame_too_large",
            f"frame is {size} bytes, more than the limit of {limits.max_frame_bytes}",
        )
    try:
        data = json.loads(text, parse_constant=_refuse_constant)
    except (ValueError, RecursionError) as exc:
        raise ProtocolError("bad_json", f"frame is not valid JSON: {exc}") from None
    return parse_client_message(data, limits)


def _refuse_constant(name: str) -> None:
    """``NaN``, ``Infinity`` and ``-Infinity``: Python's decoder takes them, JSON has none."""
    raise ValueError(f"{name} is not a JSON value")


def parse_client_message(data: object, limits: Limits = Limits()) -> ClientRequest:
    """Validate a decoded client message (see :func:`parse_client_frame`)."""
    if not isinstance(data, dict):
        raise ProtocolError(
            "bad_message", f"expected a JSON object, got {type(data).__name__} {_short(data)}"
        )
    action = data.get("action")
    if not isinstance(action, str):
        raise ProtocolError(
            "bad_message",
            f"expected a string 'action' (one of {', '.join(ACTIONS)}), got {_short(action)}",
        )
    if action == "start":
        return _parse_start(data, limits)
    if action in ("subscribe", "unsubscribe", "cancel"):
        if "task_id" not in data:
            raise ProtocolError("invalid_field", f"{action} needs a 'task_id'", action=action)
        task_id = parse_task_id(data["task_id"], action)
        if action == "subscribe":
            return Subscribe(task_id)
        if action == "unsubscribe":
            return Unsubscribe(task_id)
        return Cancel(task_id)
    if action == "list":
        return ListTasks()
    if action == "auth":
        return Auth(check_token(data.get("token"), action="auth"))
    raise ProtocolError(
        "unknown_action",
        f"unknown action {_short(action)}; expected one of {', '.join(ACTIONS)}",
        action=action,
    )


def check_token(token: object, **context: object) -> str:
    """``token`` if it may be a token, else ``unauthenticated`` (the token is never quoted)."""
    if not isinstance(token, str) or not token:
        what = "an empty string" if token == "" else type(token).__name__
        raise ProtocolError(
            "unauthenticated", f"token must be a non-empty string, got {what}", **context
        )
    if len(token) > MAX_TOKEN_LENGTH:
        raise ProtocolError(
            "unauthenticated",
            f"token is {len(token)} characters, more than {MAX_TOKEN_LENGTH}",
            **context,
        )
    return token


def _parse_start(data: dict[str, Any], limits: Limits) -> Start:
    ref = data.get("ref")
    if ref is not None:
        if isinstance(ref, bool) or not isinstance(ref, (str, int)):
            raise ProtocolError(
                "invalid_field",
                f"ref must be a string or an integer, got {type(ref).__name__} {_short(ref)}",
                action="start",
            )
        if isinstance(ref, str) and len(ref) > MAX_REF_LENGTH:
            raise ProtocolError(
                "invalid_field",
                f"ref is {len(ref)} characters, more than {MAX_REF_LENGTH}",
                action="start",
            )
        problem = scalar_problem(ref)
        if problem is not None:
            raise ProtocolError("invalid_field", f"ref {problem}", action="start")
    context: dict[str, object] = {"action": "start"}
    if ref is not None:
        context["ref"] = ref
    kind = data.get("kind", limits.default_kind)
    if kind is None:
        kind = limits.default_kind
    if not isinstance(kind, str) or not kind:
        raise ProtocolError(
            "invalid_field", f"kind must be a non-empty string, got {_short(kind)}", **context
        )
    if len(kind) > MAX_KIND_LENGTH:
        raise ProtocolError(
            "invalid_field",
            f"kind must be at most {MAX_KIND_LENGTH} characters, got {len(kind)}",
            **context,
        )
    problem = string_problem(kind)
    if problem is not None:
        raise ProtocolError("invalid_field", f"kind {problem}", **context)
    if limits.kinds is not None and kind not in limits.kinds:
        raise ProtocolError(
            "unknown_kind",
            f"unknown kind {kind!r}; expected one of {', '.join(limits.kinds)}",
            **context,
        )
    params = data.get("params", {})
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise ProtocolError(
            "invalid_field",
            f"params must be a JSON object, got {type(params).__name__} {_short(params)}",
            **context,
        )
    check_params(params, limits.max_params_bytes, **context)
    return Start(kind=kind, params=params, ref=ref)


def check_params(params: Mapping[str, Any], max_bytes: int, **context: object) -> None:
    """Raise ``invalid_field`` (naming the part) or ``params_too_large`` unless
    ``params`` can travel to a worker, the database and the backend as it is."""
    found = find_problem(params, "params")
    if found is not None:
        path, why = found
        raise ProtocolError("invalid_field", f"{path} {why}", **context)
    size = len(json.dumps(params, separators=(",", ":")).encode())
    if size > max_bytes:
        raise ProtocolError(
            "params_too_large",
            f"params are {size} bytes as JSON, more than the limit of {max_bytes}",
            **context,
        )


# --------------------------------------------------------------------------
# Server messages


_string = json.encoder.encode_basestring_ascii

# One encoder for every message: json.dumps() with options builds a new
# JSONEncoder per call, which cost more than the encoding of a small message.
_encode = json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode


def dumps(message: Mapping[str, Any]) -> str:
    """Encode a message the way every ProgRock process does."""
    return _encode(message)


def error_message(code: str, detail: str, **context: object) -> dict[str, Any]:
    """An ``error`` frame; ``context`` may add ``action``, ``task_id``, ``ref``."""
    if code not in ERROR_CODES:
        raise ValueError(f"unknown error code {code!r}")
    message: dict[str, Any] = {"type": ERROR, "code": code, "detail": detail}
    for key in ("action", "task_id", "ref"):
        if context.get(key) is not None:
            message[key] = context[key]
    return message


def error_from(exc: ProtocolError) -> dict[str, Any]:
    return error_message(exc.code, exc.detail, **exc.context)


def failure(code: str, detail: str) -> dict[str, str]:
    """The ``error`` object of a ``failed`` message; URLs and network addresses in
    ``detail`` are replaced by placeholders (:func:`progrock.redact.redact`):
    watchers must not learn where the backend or Redis live."""
    if code not in FAILURE_CODES:
        raise ValueError(f"unknown failure code {code!r}")
    return {"code": code, "detail": redact(detail)}


def clamp_progress(value: float) -> float:
    """Round a progress value for the wire: 0..100, at most two decimals."""
    if math.isnan(value):
        raise ValueError("progress is NaN")
    value = min(100.0, max(0.0, float(value)))
    rounded = round(value, 2)
    return int(rounded) if rounded.is_integer() else rounded


def started_message(task_id: str, kind: str) -> dict[str, Any]:
    return {"type": STARTED, "task_id": task_id, "kind": kind, "status": "running", "progress": 0}


def progress_message(
    task_id: str,
    progress: float,
    message: str | None = None,
    eta_s: float | None = None,
    rate: float | None = None,
) -> dict[str, Any]:
    return {
        "type": PROGRESS,
        "task_id": task_id,
        "progress": clamp_progress(progress),
        "message": message,
        "eta_s": eta_s,
        "rate": rate,
    }


def terminal_message(
    task_id: str,
    status: Status,
    *,
    progress: float = 100,
    result: Any = None,
    error: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The terminal message for ``status`` (``complete``, ``failed`` or ``cancelled``)."""
    if status == Status.SUCCEEDED:
        return {
            "type": COMPLETE,
            "task_id": task_id,
            "complete": True,
            "progress": 100,
            "result": result,
        }
    if status == Status.FAILED:
        return {
            "type": FAILED,
            "task_id": task_id,
            "progress": clamp_progress(progress),
            "error": dict(error or failure("backend_failed", "the task failed")),
        }
    if status == Status.CANCELLED:
        return {"type": CANCELLED, "task_id": task_id, "progress": clamp_progress(progress)}
    raise ValueError(f"{status!r} is not a terminal status")


SNAPSHOT_FIELDS: Final = (
    "status",
    "kind",
    "progress",
    "message",
    "eta_s",
    "rate",
    "result",
    "error",
    "created_at",
    "started_at",
    "finished_at",
)


@dataclass(slots=True)
class TaskView:
    """The state of a task as watchers see it: what a ``snapshot`` carries."""

    task_id: str
    status: Status
    kind: str
    seq: int = 0
    progress: float = 0
    message: str | None = None
    eta_s: float | None = None
    rate: float | None = None
    result: Any = None
    error: dict[str, str] | None = None
    created_at: str | None = None
    started_at: str | None = None
    finished_at: str | None = None

    def snapshot(self) -> dict[str, Any]:
        message: dict[str, Any] = {"type": SNAPSHOT, "task_id": self.task_id, "seq": self.seq}
        for name in SNAPSHOT_FIELDS:
            value = getattr(self, name)
            message[name] = value.value if isinstance(value, Status) else value
        message["progress"] = clamp_progress(self.progress)
        return message

    def terminal(self) -> dict[str, Any] | None:
        """The terminal message of a finished task (with its ``seq``), else None."""
        if not self.status.terminal:
            return None
        message = terminal_message(
            self.task_id,
            self.status,
            progress=self.progress,
            result=self.result,
            error=self.error,
        )
        message["seq"] = self.seq
        return message


# --------------------------------------------------------------------------
# Progress estimation


@dataclass(frozen=True, slots=True)
class Estimate:
    rate: float | None  # percent per second
    eta_s: float | None


def estimate(
    *,
    progress: float,
    now: float,
    last_progress: float,
    last_time: float,
    last_rate: float | None,
    smoothing: float = 0.3,
) -> Estimate:
    """Rate (percent/s, smoothed) and ETA from two progress observations."""
    elapsed = now - last_time
    if elapsed <= 0 or progress < last_progress:
        return Estimate(last_rate, _eta(progress, last_rate))
    instant = (progress - last_progress) / elapsed
    rate = instant if last_rate is None else smoothing * instant + (1 - smoothing) * last_rate
    return Estimate(round(rate, 3), _eta(progress, rate))


def _eta(progress: float, rate: float | None) -> float | None:
    if rate is None or rate <= 0:
        return None
    return round(max(0.0, 100.0 - progress) / rate, 2)


def backoff(attempt: int, base: float, cap: float) -> float:
    """Capped exponential backoff: ``base * 2**(attempt-1)``, at most ``cap``."""
    if attempt < 1:
        raise ValueError(f"attempt must be >= 1, got {attempt}")
    return float(min(cap, base * (2 ** min(attempt - 1, 30))))


# --------------------------------------------------------------------------
# Fan-out framing: how a published task message travels to web processes.
# "<seq> <flag> <json>": the web process reads seq and flag without parsing JSON.

FLAG_STARTED: Final = "S"
FLAG_PROGRESS: Final = "P"
FLAG_TERMINAL: Final = "T"


def flag_for(message_type: str) -> str:
    if message_type == STARTED:
        return FLAG_STARTED
    if message_type in (COMPLETE, FAILED, CANCELLED):
        return FLAG_TERMINAL
    return FLAG_PROGRESS


def frame_parts(message: Mapping[str, Any]) -> tuple[str, str]:
    """Return ``(head, tail)``: ``head + str(seq) + tail`` is the wire JSON with ``seq``.

    The head is ``{"type":..,"task_id":..,"seq":`` so ``seq`` sits third, as in the docs.
    """
    body = dict(message)
    body.pop("seq", None)
    mtype = body.pop("type")
    task_id = body.pop("task_id")
    # encode_basestring_ascii is what json.dumps(str) runs, without its call overhead.
    head = '{"type":' + _string(mtype) + ',"task_id":' + _string(task_id) + ',"seq":'
    rest = dumps(body)
    tail = "}" if rest == "{}" else "," + rest[1:]
    return head, tail


def parse_fanout(data: str) -> tuple[int, str, str]:
    """Parse ``"<seq> <flag> <json>"`` into ``(seq, flag, json)``; raise ValueError if bad."""
    seq_text, flag, body = data.split(" ", 2)
    return int(seq_text), flag, body
