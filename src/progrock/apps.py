from __future__ import annotations

from django.apps import AppConfig


class ProgRockConfig(AppConfig):
    name = "progrock"
    verbose_name = "ProgRock"
    default_auto_field = "django.db.models.BigAutoField"
