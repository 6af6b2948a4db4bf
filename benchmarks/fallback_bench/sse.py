"""``GET prog/api/stream/?task=<id>:<seq>...``: the long-poll's news as Server-Sent Events.

Built from the same pieces as ``progrock.web.follow`` (cursors, hub wake-ups,
``collect``), so the benchmark compares the two ways of carrying news, not two
implementations of it. One ``data:`` event per message; the stream ends when
every task has ended (or is forbidden).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator

from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse

from progrock.protocol import error_message
from progrock.web import access, follow
from progrock.web.fanout import get_hub

KEEPALIVE = 15.0
TERMINAL = {"complete", "failed", "cancelled", "error"}


async def stream(request: HttpRequest) -> HttpResponse:
    try:
        cursors = follow.parse_cursors(request.GET.getlist("task"))
    except follow.BadQuery as exc:
        return JsonResponse(error_message("invalid_field", str(exc)), status=400)
    owner = await access.request_owner(request)
    return StreamingHttpResponse(_events(owner, cursors), content_type="text/event-stream")


async def _events(owner: str | None, cursors: list[follow.Cursor]) -> AsyncIterator[str]:
    hub = get_hub()
    wake = follow._Wake()
    open_ = {c.task_id: c for c in cursors}
    try:
        await asyncio.gather(*(hub.subscribe(c.task_id, wake) for c in cursors))
        while open_:
            wake.event.clear()
            for message in await follow.collect(owner, list(open_.values())):
                task_id = message["task_id"]
                if message["type"] in TERMINAL:
                    open_.pop(task_id, None)
                elif "seq" in message:
                    open_[task_id] = follow.Cursor(task_id, message["seq"])
                yield f"data: {json.dumps(message)}\n\n"
            if open_:
                try:
                    await asyncio.wait_for(wake.event.wait(), KEEPALIVE)
                except TimeoutError:
                    yield ": keep-alive\n\n"
    finally:
        for cursor in cursors:
            with contextlib.suppress(Exception):
                await hub.unsubscribe(cursor.task_id, wake)
