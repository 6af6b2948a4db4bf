"""``GET <prefix>/follow/``: a long-poll over a page's tasks, for clients whose
WebSockets are blocked (the fallback of ``progrock.js``, docs/client-js.md).

One request covers every task a page watches, so a page holds one HTTP
connection at a time however many bars it shows::

    GET /prog/api/follow/?task=<id>:<seq>&task=<id>&wait=25

* ``task=<id>:<seq>`` — "I have seen ``seq``": answered once the task's ``seq``
  is higher, with its terminal message if it is over, else a ``progress``
  message carrying the current state (intermediate updates are collapsed).
* ``task=<id>`` — "I know nothing": answered at once with a ``snapshot``, and
  the terminal message after it if the task is over (as ``subscribe``).
* ``wait`` — seconds to hold the request when there is no news (0..30,
  default 25). The answer is ``{"messages": [...]}``, empty on timeout.
* ``stream=1`` — instead, a ``text/event-stream`` (Server-Sent Events): a
  ``: ready`` comment at once, then one ``data:`` event per message as news
  comes, a ``: keep-alive`` comment every 15 s, until every task has ended or
  after 5 minutes (the client opens a new one). ``progrock.js`` prefers it
  (benchmarks/fallback_delivery.py: several times less CPU than long-polls)
  and long-polls when a proxy buffers it.

The request waits on the process's fan-out hub (the pub/sub subscription the
sockets use), so news is answered as soon as it is published, and the state
is re-read from Redis or the database: nothing is answered from memory. Same
ownership as the JSON API: a task the request may not see gets a ``forbidden``
error in ``messages``, like an unknown one.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from django.http import HttpRequest, HttpResponseBase, JsonResponse, StreamingHttpResponse

from progrock.protocol import (
    CANCELLED,
    COMPLETE,
    ERROR,
    FAILED,
    TaskView,
    canonical_task_id,
    dumps,
    error_message,
    progress_message,
)
from progrock.web import access
from progrock.web.failures import REQUEST_TIMEOUT, UNAVAILABLE, error_for
from progrock.web.fanout import Hub, get_hub
from progrock.web.guards import api_view
from progrock.web.views import STATUS

ENDS = frozenset({COMPLETE, FAILED, CANCELLED, ERROR})
"""Message types after which a stream no longer follows a task."""
MAX_TASKS = 50
"""Tasks one request may follow (a page watching more holds more requests)."""
MAX_WAIT = 30.0
DEFAULT_WAIT = 25.0
KEEPALIVE = 15.0
"""Seconds between keep-alive comments of a quiet stream (proxies close idle ones)."""
MAX_STREAM = 300.0
"""Seconds a stream lasts at most: the client reopens it, so none lingers forever."""


class BadQuery(ValueError):
    """A query parameter that cannot be followed; the message names it."""


@dataclass(frozen=True, slots=True)
class Cursor:
    """One ``task`` parameter: the task and the last ``seq`` the client saw (None: none)."""

    task_id: str
    after: int | None


def parse_cursor(value: str) -> Cursor:
    """``<uuid>`` or ``<uuid>:<seq>`` into a :class:`Cursor`."""
    raw_id, sep, raw_seq = value.partition(":")
    task_id = canonical_task_id(raw_id)
    if task_id is None:
        raise BadQuery(f"task must be <uuid> or <uuid>:<seq>, got {value[:80]!r}")
    if not sep:
        return Cursor(task_id, None)
    if not raw_seq.isascii() or not raw_seq.isdigit():
        raise BadQuery(f"task {task_id}: seq must be an integer >= 0, got {raw_seq[:20]!r}")
    return Cursor(task_id, int(raw_seq))


def parse_cursors(values: list[str]) -> list[Cursor]:
    """Every ``task`` parameter, one cursor per task (a repeated task keeps its last)."""
    if len(values) > MAX_TASKS:
        raise BadQuery(f"task may be given at most {MAX_TASKS} times, got {len(values)}")
    cursors = {c.task_id: c for c in map(parse_cursor, values)}
    return list(cursors.values())


def parse_stream(value: str | None) -> bool:
    """The ``stream`` parameter: ``1`` for Server-Sent Events, absent or ``0`` for JSON."""
    if value in (None, "", "0"):
        return False
    if value == "1":
        return True
    raise BadQuery(f"stream must be 0 or 1, got {value[:20]!r}")


def parse_wait(value: str | None) -> float:
    """The ``wait`` parameter: seconds within 0..MAX_WAIT."""
    if value is None or value == "":
        return DEFAULT_WAIT
    try:
        wait = float(value)
    except ValueError:
        wait = math.nan
    if not 0 <= wait <= MAX_WAIT:  # also rejects NaN
        raise BadQuery(f"wait must be a number of seconds within 0..{MAX_WAIT:g}, got {value!r}")
    return wait


def news(cursor: Cursor, view: TaskView) -> list[dict[str, Any]]:
    """What the client behind ``cursor`` has not seen of ``view`` (maybe nothing)."""
    terminal = view.terminal()
    if cursor.after is None:
        return [view.snapshot()] + ([terminal] if terminal else [])
    if view.seq <= cursor.after:
        return []
    if terminal:
        return [terminal]
    message = progress_message(view.task_id, view.progress, view.message, view.eta_s, view.rate)
    message["seq"] = view.seq
    return [message]


class _Wake:
    """A fan-out hub listener that only records that something happened."""

    def __init__(self) -> None:
        self.event = asyncio.Event()

    async def hub_message(self, task_id: str, seq: int, flag: str, body: str) -> None:
        self.event.set()

    async def hub_resync(self, task_id: str) -> None:
        self.event.set()


async def collect(owner: str | None, cursors: list[Cursor]) -> list[dict[str, Any]]:
    """The news of every cursor: messages, and ``forbidden`` errors."""
    messages: list[dict[str, Any]] = []
    for cursor in cursors:
        found = await access.may_see(owner, cursor.task_id, "subscribe")
        if isinstance(found, access.Denied):
            messages.append(found.error)
        else:
            messages.extend(news(cursor, found))
    return messages


def advance(cursors: dict[str, Cursor], message: dict[str, Any]) -> None:
    """Move a stream's cursors past ``message``; drop a task that ended or is forbidden."""
    task_id = message.get("task_id")
    if not isinstance(task_id, str) or task_id not in cursors:
        return
    if message["type"] in ENDS:
        del cursors[task_id]
    elif isinstance(message.get("seq"), int):
        cursors[task_id] = Cursor(task_id, message["seq"])


async def _subscribe_all(hub: Hub, cursors: list[Cursor], wake: _Wake) -> None:
    """Subscribe ``wake`` to every task; every subscribe settles before this returns
    or raises, so the caller's clean-up leaves none behind."""
    async with asyncio.timeout(REQUEST_TIMEOUT):
        results = await asyncio.gather(
            *(hub.subscribe(c.task_id, wake) for c in cursors), return_exceptions=True
        )
    for result in results:
        if isinstance(result, BaseException):
            raise result


async def _collect_in_time(owner: str | None, cursors: list[Cursor]) -> list[dict[str, Any]]:
    async with asyncio.timeout(REQUEST_TIMEOUT):  # Redis and the database: never hang
        return await collect(owner, cursors)


async def _unsubscribe_all(hub: Hub, cursors: list[Cursor], wake: _Wake) -> None:
    for cursor in cursors:
        with contextlib.suppress(*UNAVAILABLE):
            await hub.unsubscribe(cursor.task_id, wake)


@api_view("GET")
async def follow(request: HttpRequest) -> HttpResponseBase:
    """The news of the ``task`` cursors, held up to ``wait`` seconds while there is none
    (or, with ``stream=1``, streamed as Server-Sent Events).

    As the JSON API: each Redis and database step runs under ``REQUEST_TIMEOUT``,
    and a failure is a protocol ``error`` (503 ``unavailable``, 500 for a bug)."""
    try:
        cursors = parse_cursors(request.GET.getlist("task"))
        wait = parse_wait(request.GET.get("wait"))
        stream = parse_stream(request.GET.get("stream"))
    except BadQuery as exc:
        return JsonResponse(error_message("invalid_field", str(exc)), status=400)
    what = f"GET {request.path}"
    try:
        async with asyncio.timeout(REQUEST_TIMEOUT):
            owner = await access.request_owner(request)
    except Exception as exc:
        return _failed(exc, what)
    if stream:
        response = StreamingHttpResponse(
            events(owner, cursors, what), content_type="text/event-stream; charset=utf-8"
        )
        response["Cache-Control"] = "no-cache"
        response["X-Accel-Buffering"] = "no"  # nginx: pass each event on at once
        return response
    if not cursors:
        return JsonResponse({"messages": []})  # a probe: the API is reachable
    hub = get_hub()
    wake = _Wake()
    try:
        # Subscribed before the first read: nothing published after it is missed.
        await _subscribe_all(hub, cursors, wake)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        while True:
            wake.event.clear()
            messages = await _collect_in_time(owner, cursors)
            remaining = deadline - loop.time()
            if messages or remaining <= 0:
                return JsonResponse({"messages": messages})
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.event.wait(), remaining)
    except Exception as exc:
        return _failed(exc, what)
    finally:
        await _unsubscribe_all(hub, cursors, wake)


def _failed(exc: Exception, what: str) -> JsonResponse:
    message = error_for(exc, what)
    return JsonResponse(message, status=STATUS.get(message["code"], 400))


async def events(
    owner: str | None, cursors: list[Cursor], what: str = "a follow stream"
) -> AsyncIterator[str]:
    """The Server-Sent Events of a stream (see the module docstring). A failure
    ends it with an ``error`` event (the client opens a new one later)."""
    hub = get_hub()
    wake = _Wake()
    open_cursors = {c.task_id: c for c in cursors}
    try:
        await _subscribe_all(hub, cursors, wake)
        yield ": ready\n\n"
        loop = asyncio.get_running_loop()
        deadline = loop.time() + MAX_STREAM
        while open_cursors and loop.time() < deadline:
            wake.event.clear()
            for message in await _collect_in_time(owner, list(open_cursors.values())):
                advance(open_cursors, message)
                yield f"data: {dumps(message)}\n\n"
            if not open_cursors:
                break
            timeout = min(KEEPALIVE, deadline - loop.time())
            try:
                await asyncio.wait_for(wake.event.wait(), max(0.0, timeout))
            except TimeoutError:
                yield ": keep-alive\n\n"
    except Exception as exc:
        yield f"data: {dumps(error_for(exc, what))}\n\n"
    finally:
        await _unsubscribe_all(hub, cursors, wake)
