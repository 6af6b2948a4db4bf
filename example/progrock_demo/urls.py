from __future__ import annotations

from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView

from progrock.web import health, metrics
from progrock_demo import bars, tokens, views

urlpatterns = [
    path("", views.index, name="index"),
    path("classic/", views.classic_page, name="classic"),
    # The page's former address: old links and bookmarks still find it.
    path("seed/", RedirectView.as_view(pattern_name="classic", permanent=True)),
    path("bars/", bars.bars_page, name="bars"),
    path("tokens/", tokens.tokens_page, name="tokens"),
    path("token/", tokens.issue_token_view, name="issue-token"),
    path("admin/", admin.site.urls),
    path("prog/api/", include("progrock.urls")),
    path("prog/health/", health.view, name="health"),
    # The demo listens on 127.0.0.1; a public site protects it (docs/metrics.md).
    path("metrics", metrics.view, name="metrics"),
]
