"""``/bars/``: drop-in bars from ``{% progrock_bar %}``, with no JavaScript of the page's own.

GET shows a bar for each ``?task=<id>`` (a bad id shows an inert bar, as the
tag does) and start buttons; POST starts three tasks for the visitor on the
server and redirects to their bars. See docs/template-tag.md.
"""

from __future__ import annotations

from django.http import (
    HttpRequest,
    HttpResponse,
    HttpResponseBadRequest,
    HttpResponseRedirect,
)
from django.shortcuts import render
from django.urls import reverse
from django.utils.http import urlencode
from django.views.decorators.http import require_http_methods

from progrock import api, permissions
from progrock.conf import progrock_settings

BAR_TASKS = 3
"""How many tasks the page's button starts."""


@require_http_methods(["GET", "POST"])
def bars_page(request: HttpRequest) -> HttpResponse:
    """GET: the bars of ``?task=`` ids; POST: start three rock tasks, then show them."""
    owner = permissions.owner_for_request(request, create_session=True)
    if request.method == "POST":
        if owner is None:  # pragma: no cover - the session was just created
            return HttpResponse("no session", status=403)
        raw = request.POST.get("step", "4")
        try:
            step = float(raw)
        except ValueError:
            return HttpResponseBadRequest(f"step must be a number, got {raw!r}")
        ids = [
            api.start_task("rock", {"step": step, "interval_ms": 200}, owner=owner)
            for _ in range(BAR_TASKS)
        ]
        query = urlencode([("task", task_id) for task_id in ids])
        return HttpResponseRedirect(f"{reverse('bars')}?{query}", status=303)
    return render(
        request,
        "progrock_demo/bars.html",
        {
            "task_ids": request.GET.getlist("task"),
            "fast": {"step": 20, "interval_ms": 100},
            # The export kind runs on Celery (settings.KINDS): shown where it is mapped.
            "export": "export" in progrock_settings.KIND_TARGETS,
        },
    )
