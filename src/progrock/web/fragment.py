"""``GET <prefix>/tasks/<id>/fragment/``: a task's bar as an HTML fragment, for htmx.

The same markup as ``{% progrock_bar %}``, rendered from the task's current
state and not wired to a socket, for pages that poll instead::

    <div hx-get="/prog/api/tasks/<id>/fragment/" hx-trigger="load, every 1s">…</div>

Same ownership rules as the JSON API (someone else's task answers 404, a bad id
400, each with an inert bar saying why). When htmx asks (``HX-Request``) and
the task is over, the answer's status is 286, which stops htmx's polling, and
its ``HX-Trigger`` header fires ``progrock:complete`` (or ``failed``,
``cancelled``) on the polling element with the terminal message as detail.
``?label=`` names the bar (default "Progress"). A token in an
``Authorization`` header counts as for the JSON API (:mod:`progrock.web.tokens`);
a bad one answers 401 with an inert bar saying why.
"""

from __future__ import annotations

import asyncio
import json

from asgiref.sync import sync_to_async
from django.http import HttpRequest, HttpResponse
from django.middleware.csrf import get_token
from django.urls import reverse
from django.views.decorators.http import require_GET

from progrock.exceptions import InvalidToken
from progrock.web import access, tokens
from progrock.web.bar import DEFAULT_LABEL, inert_bar, render_bar, view_bar
from progrock.web.failures import REQUEST_TIMEOUT, error_for
from progrock.web.views import STATUS

HTMX_STOP_POLLING = 286
"""The status htmx reads as "stop polling" (its documentation, hx-trigger's every)."""
MAX_LABEL = 200


@require_GET
async def task_fragment(request: HttpRequest, task_id: str) -> HttpResponse:
    """The task's bar, rendered from its current state.

    As the JSON API, Redis and the database get ``REQUEST_TIMEOUT``; a failure
    answers an inert bar with the error's detail (503 ``unavailable``, 500 for
    a bug), never Django's error page."""
    label = (request.GET.get("label") or DEFAULT_LABEL)[:MAX_LABEL]
    try:
        async with asyncio.timeout(REQUEST_TIMEOUT):
            await tokens.authenticate_request(request)
            found = await access.authorise(request, task_id, "subscribe")
            # CSRF_USE_SESSIONS reads the session: from a thread.
            token = await sync_to_async(get_token)(request)
    except InvalidToken as exc:
        refused = tokens.refusal(exc)
        response = HttpResponse(render_bar(inert_bar(refused["detail"], label=label)), status=401)
        response["WWW-Authenticate"] = tokens.CHALLENGE
        return response
    except Exception as exc:
        error = error_for(exc, f"GET {request.path}")
        bar = inert_bar(error["detail"], label=label)
        return HttpResponse(render_bar(bar), status=STATUS.get(error["code"], 400))
    if isinstance(found, access.Denied):
        return HttpResponse(render_bar(inert_bar(found.detail, label=label)), status=found.status)
    view = found
    namespace = request.resolver_match.namespace if request.resolver_match else "progrock"
    cancel_url = reverse(f"{namespace}:task-cancel", kwargs={"task_id": view.task_id})
    bar = view_bar(view, label=label, cancel_url=cancel_url, csrf_token=token)
    response = HttpResponse(render_bar(bar))
    terminal = view.terminal()
    if terminal is not None and request.headers.get("HX-Request") == "true":
        response.status_code = HTMX_STOP_POLLING
        response["HX-Trigger"] = json.dumps({f"progrock:{terminal['type']}": terminal})
    return response
