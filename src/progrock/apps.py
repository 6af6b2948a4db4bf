"""The app's configuration: it registers the system checks."""

from __future__ import annotations

from django.apps import AppConfig


class ProgRockConfig(AppConfig):
    name = "progrock"
    verbose_name = "ProgRock"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from progrock import checks

        del checks  # imported for its @register: manage.py check runs them
        # Bad PROGROCK settings are not logged here: every command that runs the
        # checks (runprogrock, rundelay, migrate, runserver, check) lists them with
        # their progrock.E0xx ids, which printed each twice; an ASGI server stops
        # when it loads progrock.routing, and any other use raises, naming the key.
