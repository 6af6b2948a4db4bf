"""ProgRock settings: the ``PROGROCK`` dict in Django settings, with defaults.

Read lazily (``progrock_settings.NAME``) and reset when Django's
``setting_changed`` signal fires, so ``override_settings`` works in tests.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from typing import Any

from django.core.signals import setting_changed
from django.dispatch import receiver

from progrock.exceptions import ImproperlyConfigured
from progrock.protocol import Limits

DEFAULTS: dict[str, Any] = {
    # Redis that carries ProgRock's own keys (delay set, live task state, fan-out).
    # Defaults to the REDIS_URL environment variable.
    "REDIS_URL": None,
    # Prefix of every Redis key and pub/sub channel ProgRock uses.
    "KEY_PREFIX": "progrock:",
    # The internal worker channel (the seed's name).
    "WORKER_CHANNEL": "prog-rocker",
    # The delay server's channel (Channels 1's name).
    "DELAY_CHANNEL": "asgi.delay",
    # Seconds between two polls of a running task (the seed's 200 ms).
    "POLL_INTERVAL": 0.2,
    # Backend task service adapter and its keyword arguments.
    "SERVICE": {
        "BACKEND": "progrock.services.http.HttpTaskService",
        "OPTIONS": {},
    },
    # Kinds a client may start; None lets the backend decide.
    "KINDS": ("rock", "hash"),
    "DEFAULT_KIND": "rock",
    # Largest accepted WebSocket frame and ``params`` object, in bytes.
    "MAX_FRAME_BYTES": 65_536,
    "MAX_PARAMS_BYTES": 8_192,
    # Concurrently running tasks per owner (None: unlimited).
    "MAX_RUNNING_PER_OWNER": 20,
    # Dotted path of ``f(owner: str, task_owner: str, task_id: str) -> bool``.
    "PERMISSION": "progrock.permissions.is_owner",
    # Backend retries: capped exponential backoff, then fail after the budget.
    "RETRY_BASE": 0.2,
    "RETRY_MAX": 5.0,
    "FAILURE_BUDGET": 30.0,
    # Seconds between database writes of a running task's progress.
    "DB_PROGRESS_INTERVAL": 10.0,
    # Seconds between sweeps for running tasks whose poll chain was lost, and
    # how overdue a poll must be before the sweep re-arms it.
    "SWEEP_INTERVAL": 5.0,
    "STALL_AFTER": 5.0,
    # Seconds a forwarded start may go without its task running or ending
    # before it is forwarded again (its worker was killed, or the message
    # lost); longer than a backend create may take.
    "START_TIMEOUT": 10.0,
    # Most poll ticks the delay server merges into one worker message.
    "TICK_BATCH": 200,
    # Seconds a busy delay server lets due messages gather between two passes
    # (bounds the extra lateness; 0 delivers every message on its own pass).
    "DELAY_BATCH_WINDOW": 0.004,
    # Poll ticks are due on a grid of this many seconds, so that tasks share
    # due times and are polled together: a new task's first tick is one
    # POLL_INTERVAL after the backend answered its create, rounded up to the
    # grid; later ticks keep its phase (POLL_INTERVAL should be a multiple;
    # if not, every tick is rounded). 0: no grid.
    "TICK_GRID": 0.02,
    # Garbage-collector thresholds for busy processes (progrock.runtime.tune_gc);
    # None leaves Python's defaults.
    "GC_THRESHOLDS": (50_000, 50, 100),
}


def _is_seconds(value: object) -> bool:
    """A finite int or float (not a bool): a duration setting's type."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


class Settings:
    """Lazy view of ``settings.PROGROCK`` merged over :data:`DEFAULTS`."""

    def __init__(self) -> None:
        self._cache: dict[str, Any] | None = None

    def _load(self) -> dict[str, Any]:
        from django.conf import settings

        user = getattr(settings, "PROGROCK", {})
        if not isinstance(user, Mapping):
            raise ImproperlyConfigured(
                f"settings.PROGROCK must be a dict, got {type(user).__name__}: {user!r}"
            )
        unknown = sorted(set(user) - set(DEFAULTS))
        if unknown:
            raise ImproperlyConfigured(
                f"settings.PROGROCK has unknown keys {unknown}; expected some of {sorted(DEFAULTS)}"
            )
        merged = {**DEFAULTS, **user}
        if merged["REDIS_URL"] is None:
            merged["REDIS_URL"] = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
        for name in (
            "POLL_INTERVAL",
            "RETRY_BASE",
            "RETRY_MAX",
            "FAILURE_BUDGET",
            "DB_PROGRESS_INTERVAL",
            "SWEEP_INTERVAL",
            "STALL_AFTER",
            "START_TIMEOUT",
        ):
            value = merged[name]
            if not _is_seconds(value) or value <= 0:
                raise ImproperlyConfigured(
                    f"PROGROCK[{name!r}] must be a positive number of seconds, got {value!r}"
                )
        for name in (
            "DELAY_BATCH_WINDOW",
            "TICK_GRID",
        ):
            value = merged[name]
            if not _is_seconds(value) or value < 0:
                raise ImproperlyConfigured(
                    f"PROGROCK[{name!r}] must be a number of seconds >= 0, got {value!r}"
                )
        for name in ("MAX_FRAME_BYTES", "MAX_PARAMS_BYTES", "TICK_BATCH"):
            value = merged[name]
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ImproperlyConfigured(
                    f"PROGROCK[{name!r}] must be a positive integer, got {value!r}"
                )
        gc_thresholds = merged["GC_THRESHOLDS"]
        if gc_thresholds is not None and not (
            isinstance(gc_thresholds, (tuple, list))
            and len(gc_thresholds) == 3
            and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in gc_thresholds)
        ):
            raise ImproperlyConfigured(
                "PROGROCK['GC_THRESHOLDS'] must be three positive integers (gen0, gen1, gen2) "
                f"or None, got {gc_thresholds!r}"
            )
        limit = merged["MAX_RUNNING_PER_OWNER"]
        if limit is not None and (
            isinstance(limit, bool) or not isinstance(limit, int) or limit <= 0
        ):
            raise ImproperlyConfigured(
                "PROGROCK['MAX_RUNNING_PER_OWNER'] must be a positive integer or None, "
                f"got {limit!r}"
            )
        service = merged["SERVICE"]
        if not isinstance(service, Mapping) or not isinstance(service.get("BACKEND"), str):
            raise ImproperlyConfigured(
                "PROGROCK['SERVICE'] must be a dict with a dotted-path string 'BACKEND', "
                f"got {service!r}"
            )
        kinds = merged["KINDS"]
        if kinds is not None:
            if isinstance(kinds, str) or not all(isinstance(k, str) for k in kinds):
                raise ImproperlyConfigured(
                    f"PROGROCK['KINDS'] must be a list of strings or None, got {kinds!r}"
                )
            merged["KINDS"] = tuple(kinds)
        for name in ("KEY_PREFIX", "WORKER_CHANNEL", "DELAY_CHANNEL", "DEFAULT_KIND", "PERMISSION"):
            if not isinstance(merged[name], str) or not merged[name]:
                raise ImproperlyConfigured(
                    f"PROGROCK[{name!r}] must be a non-empty string, got {merged[name]!r}"
                )
        return merged

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        if self._cache is None:
            self._cache = self._load()
        try:
            return self._cache[name]
        except KeyError:
            raise AttributeError(f"no ProgRock setting {name!r}") from None

    def reload(self) -> None:
        self._cache = None


progrock_settings = Settings()


def protocol_limits() -> Limits:
    """What clients may send, from the settings (for the socket and the HTTP API)."""
    return Limits(
        max_frame_bytes=progrock_settings.MAX_FRAME_BYTES,
        max_params_bytes=progrock_settings.MAX_PARAMS_BYTES,
        kinds=progrock_settings.KINDS,
        default_kind=progrock_settings.DEFAULT_KIND,
    )


@receiver(setting_changed)
def _reload(*, setting: str, **kwargs: object) -> None:
    if setting == "PROGROCK":
        progrock_settings.reload()
