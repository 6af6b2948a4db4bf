"""No HTTP views: the baseline only speaks WebSocket."""

from __future__ import annotations

from django.urls import URLPattern

urlpatterns: list[URLPattern] = []
