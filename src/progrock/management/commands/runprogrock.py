"""``manage.py runprogrock``: Channels' ``runworker`` for the ``prog-rocker`` channel.

The same worker as ``manage.py runworker prog-rocker`` (that command works
too), with the channel name taken from ``PROGROCK["WORKER_CHANNEL"]`` and on
uvloop when it is installed, and with the task service's module imported before
the first message (see :func:`progrock.services.preload`).

It outlives outages: started before its database or Redis, it waits for them;
once running, its channel-layer receive waits out a Redis outage
(:class:`progrock.worker.runner.PatientWorker`) instead of ending the process.
"""

from __future__ import annotations

import logging
from typing import Any

from channels.management.commands.runworker import Command as RunWorkerCommand
from django.core.management.base import CommandError

from progrock.conf import progrock_settings
from progrock.exceptions import ProgRockError
from progrock.preflight import check_worker_start, wait_until_reachable
from progrock.runtime import install_fast_loop, tune_gc
from progrock.services import preload
from progrock.worker.runner import PatientWorker

logger = logging.getLogger("progrock.worker")


class Command(RunWorkerCommand):  # type: ignore[misc]
    help = "Run a ProgRock worker: consume the prog-rocker channel (start, poll, cancel, sweep)."
    worker_class = PatientWorker

    def add_arguments(self, parser: Any) -> None:
        super().add_arguments(parser)
        for action in parser._actions:
            if action.dest == "channels":
                action.nargs = "*"
                action.help = "channels to consume (default: PROGROCK['WORKER_CHANNEL'])"

    def handle(self, *args: Any, **options: Any) -> None:
        try:  # a malformed DATABASE_URL / REDIS_URL: one line and exit, not a crash per message
            wait_until_reachable(check_worker_start, logger)  # servers not up yet: wait
        except ProgRockError as exc:
            raise CommandError(str(exc)) from None
        if not options.get("channels"):
            options["channels"] = [progrock_settings.WORKER_CHANNEL]
        install_fast_loop()
        preload()  # before tune_gc() freezes start-up objects: the imports are frozen too
        tune_gc()
        super().handle(*args, **options)
