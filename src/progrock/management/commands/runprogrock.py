"""``manage.py runprogrock``: Channels' ``runworker`` for the ``prog-rocker`` channel.

The same worker as ``manage.py runworker prog-rocker`` (that command works
too), with the channel name taken from ``progrock.protocol.WORKER_CHANNEL`` and on
uvloop when it is installed, with the task service's module imported before
the first message (see :func:`progrock.services.preload`), and with a
heartbeat (:mod:`progrock.heartbeat`) from its first moment: web processes
refuse starts while no worker beats.

It outlives outages: started before its database or Redis, it waits for them;
once running, its channel-layer receive waits out a Redis outage
(:class:`progrock.worker.runner.PatientWorker`) instead of ending the process.

On SIGTERM (or SIGINT) it takes no new message, finishes the work in hand
(polls and the next ticks they schedule, start batches), logs one line when
the signal comes and one when it is done, and exits 0 (see
:meth:`~progrock.worker.runner.PatientWorker.request_stop`).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import signal
from collections.abc import Callable
from typing import Any

import redis
from channels.management.commands.runworker import Command as RunWorkerCommand
from channels.worker import Worker
from django.core.management.base import CommandError

from progrock import heartbeat, logs, metrics
from progrock.conf import progrock_settings
from progrock.exceptions import ProgRockError
from progrock.preflight import TIMEOUT, check_worker_start, wait_until_reachable
from progrock.protocol import WORKER_CHANNEL
from progrock.runtime import install_fast_loop, tune_gc
from progrock.services import preload
from progrock.state.live import get_redis
from progrock.worker.runner import PatientWorker

logger = logging.getLogger("progrock.worker")


class BeatingWorker(PatientWorker):
    """The patient worker (it outlives Redis outages), with this process's heartbeat
    beside its listeners."""

    def __init__(self, *args: Any, identity: heartbeat.Identity, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.identity = identity

    async def handle(self) -> None:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self.request_stop, signum.name)
        beating = heartbeat.ensure_beating(
            get_redis(), progrock_settings.KEY_PREFIX, "worker", identity=self.identity
        )
        try:
            await super().handle()
        finally:
            beating.cancel()
            await asyncio.gather(beating, return_exceptions=True)


class Command(RunWorkerCommand):  # type: ignore[misc]
    help = "Run a ProgRock worker: consume the prog-rocker channel (start, poll, cancel, sweep)."
    worker_class: Callable[..., Worker] = BeatingWorker

    def add_arguments(self, parser: Any) -> None:
        super().add_arguments(parser)
        for action in parser._actions:
            if action.dest == "channels":
                action.nargs = "*"
                action.help = "channels to consume (default: progrock.protocol.WORKER_CHANNEL)"
        metrics.add_port_argument(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        logs.set_process_kind("worker")
        try:  # a malformed DATABASE_URL / REDIS_URL: one line and exit, not a crash per message
            wait_until_reachable(check_worker_start, logger)  # servers not up yet: wait
            if options.get("metrics_port") is not None:
                metrics.serve("worker", options["metrics_port"])
        except ProgRockError as exc:
            raise CommandError(str(exc)) from None
        if not options.get("channels"):
            options["channels"] = [WORKER_CHANNEL]
        identity = heartbeat.Identity("worker")
        # The first beat before the ready line: a start right after it finds this worker.
        client = redis.Redis.from_url(progrock_settings.REDIS_URL, socket_timeout=TIMEOUT)
        try:
            heartbeat.beat_sync(client, progrock_settings.KEY_PREFIX, identity)
        except redis.RedisError as exc:  # the loop beats again in a moment
            logger.warning("the worker's first heartbeat failed: %s", exc)
        finally:
            client.close()
        self.worker_class = functools.partial(BeatingWorker, identity=identity)
        install_fast_loop()
        preload()  # before tune_gc() freezes start-up objects: the imports are frozen too
        tune_gc()
        super().handle(*args, **options)
