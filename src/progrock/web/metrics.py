"""The web process's Prometheus metrics, for a URL the project includes itself.

Nothing is served unless the URLconf includes :func:`view`::

    from progrock.web import metrics
    urlpatterns += [path("metrics", metrics.view)]

It answers the text exposition of this process's registry (every series of
:mod:`progrock.metrics`, plus ``prometheus-client``'s own ``process_*`` and
``python_*`` ones), with ``progrock_tasks{status}``: the tasks queued and
running now, counted in the database when scraped (one indexed query). Each
web process answers for itself: scrape every one. Without ``prometheus-client``
it answers 501 naming the extra to install (and ``manage.py check`` warns,
``progrock.W005``). Protect it as any internal page (docs/metrics.md): by the
proxy (only the scraper's address) or with a decorator, e.g.
``staff_member_required(metrics.view)``.
"""

from __future__ import annotations

import logging

from django.db.models import Count
from django.http import HttpRequest, HttpResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe

from progrock import metrics
from progrock.models import Task
from progrock.protocol import ACTIVE

logger = logging.getLogger("progrock.web")


def count_active() -> dict[str, int]:
    """Tasks queued and running now, by status (one query over the status index)."""
    counts = dict.fromkeys((s.value for s in ACTIVE), 0)
    rows = (
        Task.objects.filter(status__in=list(counts))
        .order_by()
        .values_list("status")
        .annotate(n=Count("pk"))
    )
    for status, n in rows:
        counts[status] = n
    return counts


@never_cache
@require_safe
def view(request: HttpRequest) -> HttpResponse:
    """This process's metrics in Prometheus' text format (501 without prometheus-client)."""
    if not metrics.AVAILABLE:
        return HttpResponse(
            f"prometheus-client is not installed: {metrics.INSTALL}\n",
            status=501,
            content_type="text/plain; charset=utf-8",
        )
    metrics.mark_process("web")
    try:
        for status, n in count_active().items():
            metrics.TASKS.labels(status).set(n)
    except Exception:  # the database is down: the other series still tell a lot
        logger.warning("metrics: cannot count tasks in the database", exc_info=True)
    body, content_type = metrics.render()
    return HttpResponse(body, content_type=content_type)
