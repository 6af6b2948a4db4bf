"""The app's configuration: system checks, and the settings checked as the app loads."""

from __future__ import annotations

import logging

from django.apps import AppConfig

logger = logging.getLogger("progrock")


class ProgRockConfig(AppConfig):
    name = "progrock"
    verbose_name = "ProgRock"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from progrock import checks, conf
        from progrock.exceptions import ImproperlyConfigured

        del checks  # imported for its @register: manage.py check runs them
        try:
            conf.get_settings()
        except ImproperlyConfigured as exc:
            # Not raised here: `manage.py check` must still list every problem (with
            # its progrock.E0xx id); commands run those checks before they start,
            # and an ASGI server stops when it loads progrock.routing.
            logger.error("%s (manage.py check lists every PROGROCK problem)", exc)
