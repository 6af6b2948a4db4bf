from __future__ import annotations

from django.contrib import admin
from django.urls import include, path

from progrock_demo import views

urlpatterns = [
    path("", views.index, name="index"),
    path("seed/", views.seed_page, name="seed"),
    path("admin/", admin.site.urls),
    path("prog/api/", include("progrock.urls")),
]
