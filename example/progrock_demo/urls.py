from __future__ import annotations

from django.contrib import admin
from django.urls import include, path

from progrock_demo import bars, views

urlpatterns = [
    path("", views.index, name="index"),
    path("seed/", views.seed_page, name="seed"),
    path("bars/", bars.bars_page, name="bars"),
    path("admin/", admin.site.urls),
    path("prog/api/", include("progrock.urls")),
]
