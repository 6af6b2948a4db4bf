"""The example project's URLs plus the SSE stream measured against the long-poll."""

from __future__ import annotations

from django.urls import path
from progrock_demo.urls import urlpatterns as demo_urlpatterns

from fallback_bench import sse

urlpatterns = [path("prog/api/stream/", sse.stream), *demo_urlpatterns]
