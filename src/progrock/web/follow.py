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
from dataclasses import dataclass
from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.http import require_GET
from redis.exceptions import RedisError

from progrock.protocol import (
    TaskView,
    canonical_task_id,
    error_message,
    progress_message,
)
from progrock.web import access
from progrock.web.fanout import get_hub

MAX_TASKS = 50
"""Tasks one request may follow (a page watching more holds more requests)."""
MAX_WAIT = 30.0
DEFAULT_WAIT = 25.0


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


@require_GET
async def follow(request: HttpRequest) -> HttpResponse:
    """The news of the ``task`` cursors, held up to ``wait`` seconds while there is none."""
    try:
        cursors = parse_cursors(request.GET.getlist("task"))
        wait = parse_wait(request.GET.get("wait"))
    except BadQuery as exc:
        return JsonResponse(error_message("invalid_field", str(exc)), status=400)
    owner = await access.request_owner(request)
    if not cursors:
        return JsonResponse({"messages": []})  # a probe: the API is reachable
    hub = get_hub()
    wake = _Wake()
    try:
        # Subscribed before the first read: nothing published after it is missed.
        # Every subscribe settles before going on, so `finally` leaves none behind.
        results = await asyncio.gather(
            *(hub.subscribe(c.task_id, wake) for c in cursors), return_exceptions=True
        )
        for result in results:
            if isinstance(result, BaseException):
                raise result
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        while True:
            wake.event.clear()
            messages = await collect(owner, cursors)
            remaining = deadline - loop.time()
            if messages or remaining <= 0:
                return JsonResponse({"messages": messages})
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.event.wait(), remaining)
    except (RedisError, OSError) as exc:
        return JsonResponse(
            error_message("unavailable", f"could not follow the tasks: {exc}"), status=503
        )
    finally:
        for cursor in cursors:
            with contextlib.suppress(RedisError, OSError):
                await hub.unsubscribe(cursor.task_id, wake)
