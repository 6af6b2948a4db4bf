"""A JSON HTTP API to the same tasks, for clients without WebSockets.

Mounted by the project under a prefix (the demo uses ``/prog/api/``). Same
ownership rules as the socket: a request sees only its user's or session's
tasks (or what ``PROGROCK["PERMISSION"]`` allows); others get 404. Writes are
CSRF-protected like any Django form (send the ``X-CSRFToken`` header), unless
the request carries a token (:mod:`progrock.web.tokens`). Every
answer is JSON, errors included (:mod:`progrock.web.guards`); docs/http-api.md
is the reference.
"""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import Callable, Coroutine
from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse

from progrock import api, exceptions
from progrock.conf import protocol_limits
from progrock.exceptions import ProtocolError
from progrock.protocol import (
    Start,
    TaskView,
    error_from,
    error_message,
    parse_client_message,
)
from progrock.queues import routes
from progrock.queues import start as queue_start
from progrock.state import reads
from progrock.tuning import MAX_FRAME_BYTES
from progrock.web import access, forward, limits, liveness
from progrock.web.failures import REQUEST_TIMEOUT, error_for
from progrock.web.guards import api_view

View = Callable[..., Coroutine[Any, Any, HttpResponse]]

#: HTTP status of each error code the API answers (400 for the others).
STATUS = {
    "unauthenticated": 401,
    "forbidden": 404,
    "frame_too_large": 413,
    "too_many_tasks": 429,
    "rate_limited": 429,
    "not_cancellable": 409,
    "unavailable": 503,
    "internal_error": 500,
}


def _error(status: int, code: str, detail: str, **ctx: Any) -> JsonResponse:
    return JsonResponse(error_message(code, detail, **ctx), status=status)


def answered(view: View) -> View:
    """Run ``view`` under the request timeout; whatever fails becomes a JSON error.

    Redis, the channel layer or the database failing (or not answering within
    ``REQUEST_TIMEOUT``) is ``unavailable`` with 503, a bug ``internal_error``
    with 500 (traceback in the log): never Django's HTML error page.
    """

    @functools.wraps(view)
    async def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT):
                return await view(request, *args, **kwargs)
        except Exception as exc:
            message = error_for(exc, f"{request.method} {request.path}")
            return JsonResponse(message, status=STATUS.get(message["code"], 400))

    return wrapper


@api_view("GET", "POST")
@answered
async def task_list(request: HttpRequest) -> HttpResponse:
    """GET: your tasks, newest first. POST {"kind", "params"}: start one (201)."""
    if request.method == "GET":
        owner = await access.request_owner(request)
        views = await reads.alist_views(owner) if owner else []
        return JsonResponse({"type": "tasks", "tasks": [v.snapshot() for v in views]})
    if len(request.body) > MAX_FRAME_BYTES:
        return _error(
            413,
            "frame_too_large",
            f"body is {len(request.body)} bytes, more than {MAX_FRAME_BYTES}",
        )
    try:
        data = json.loads(request.body or b"{}")
    except ValueError as exc:
        return _error(400, "bad_json", f"body is not valid JSON: {exc}")
    if isinstance(data, dict):
        data = {**data, "action": "start"}
    try:
        start = parse_client_message(data, protocol_limits())
    except ProtocolError as exc:
        return JsonResponse(error_from(exc), status=400)
    if not isinstance(start, Start):  # pragma: no cover - action forced above
        return _error(400, "bad_message", "expected a start request")
    try:  # a kind a task queue runs: checked before anything is created or queued
        queued = routes.queued_for(start.kind, start.params)
    except ProtocolError as exc:
        return JsonResponse(error_from(exc), status=400)
    owner = await access.request_owner(request, create=True)
    if owner is None:  # pragma: no cover - a session was just created
        return _error(403, "forbidden", "no session")
    refusal = limits.starts.refusal(owner, request.META.get("REMOTE_ADDR") or None)
    if refusal is not None:
        return _error(429, "rate_limited", refusal, action="start")
    await liveness.require_live(action="start")  # 503 unavailable, naming what is missing
    try:
        if queued is not None:
            task_id = await queue_start.astart(
                queued,
                (),
                start.params,
                owner=owner,
                kind=start.kind,
                params=start.params,
                raise_unqueued=False,  # the task says it failed `not_started`
            )
        else:
            task_id = await api.astart_task(start.kind, start.params, owner=owner)
    except exceptions.TooManyTasks as exc:
        detail = str(exc).replace(owner, "this owner")  # the owner holds the session key
        return _error(429, "too_many_tasks", detail, action="start")
    found = await reads.aget_view_and_owner(task_id)
    body = found[0].snapshot() if found else {"task_id": task_id}
    return JsonResponse(body, status=201)


async def _authorised(
    request: HttpRequest, task_id: str, action: str
) -> tuple[TaskView, str] | JsonResponse:
    """The task's view and id if this request may see it, else the error response."""
    found = await access.authorise(request, task_id, action)
    if isinstance(found, access.Denied):
        return JsonResponse(found.error, status=found.status)
    return found, found.task_id


@api_view("GET")
@answered
async def task_detail(request: HttpRequest, task_id: str) -> HttpResponse:
    """GET: the task's snapshot."""
    found = await _authorised(request, task_id, "subscribe")
    if isinstance(found, JsonResponse):
        return found
    return JsonResponse(found[0].snapshot())


@api_view("POST")
@answered
async def task_cancel(request: HttpRequest, task_id: str) -> HttpResponse:
    """POST: ask a worker to cancel the task (202); 409 if it is already over."""
    found = await _authorised(request, task_id, "cancel")
    if isinstance(found, JsonResponse):
        return found
    view, task_id = found
    if view.status.terminal:
        return _error(
            409,
            "not_cancellable",
            f"task {task_id} is already {view.status.value}",
            action="cancel",
            task_id=task_id,
        )
    await forward.forward_cancel(task_id, reply_channel=None)
    return JsonResponse({"task_id": task_id, "status": "cancelling"}, status=202)
