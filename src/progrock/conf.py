"""ProgRock settings: the ``PROGROCK`` dict in Django settings, checked and typed.

``settings.PROGROCK`` is merged over the defaults and checked once, into a
frozen :class:`ProgRockSettings`; Django's ``setting_changed`` signal drops it,
so ``override_settings`` works in tests. Read a setting as
``progrock_settings.NAME`` (typed: no reader casts). What is not a setting,
a deployer has no reason to change: those numbers are in :mod:`progrock.tuning`.
"""

from __future__ import annotations

import difflib
import math
import os
from collections.abc import Mapping
from dataclasses import FrozenInstanceError, dataclass, field, fields
from types import MappingProxyType
from typing import Any, Final, cast

from django.core.signals import setting_changed
from django.dispatch import receiver

from progrock import tuning
from progrock.durations import retention_seconds
from progrock.exceptions import ImproperlyConfigured
from progrock.protocol import Limits
from progrock.queues.targets import Target, parse_kinds

DEFAULT_REDIS_URL: Final = "redis://127.0.0.1:6379/0"


def _default_service() -> Mapping[str, Any]:
    return MappingProxyType(
        {"BACKEND": "progrock.services.http.HttpTaskService", "OPTIONS": MappingProxyType({})}
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class ProgRockSettings:
    """The ``PROGROCK`` settings, checked: one typed field per setting.

    Documented in docs/reference/settings.md (tests/unit/test_conf.py keeps them in step).
    """

    # Redis for ProgRock's own keys (delay set, live state, fan-out); PROGROCK
    # without it: the REDIS_URL environment variable, else DEFAULT_REDIS_URL.
    REDIS_URL: str = DEFAULT_REDIS_URL
    # Prefix of every Redis key and pub/sub channel ProgRock uses.
    KEY_PREFIX: str = "progrock:"
    # Seconds between two polls of a running task.
    POLL_INTERVAL: float = 0.2
    # {"BACKEND": dotted path of a TaskService class or factory, "OPTIONS": its kwargs}.
    SERVICE: Mapping[str, Any] = field(default_factory=_default_service)
    # Kinds of task a client may start; None lets the backend decide. Given as a
    # mapping kind -> target, the kinds are its keys and KIND_TARGETS its queue targets.
    KINDS: tuple[str, ...] | None = ("rock", "hash")
    # The kind of a start that names none.
    DEFAULT_KIND: str = "rock"
    # Tasks one owner may have queued or running at once; None: no limit.
    MAX_RUNNING_PER_OWNER: int | None = 20
    # Dotted path of ``f(requester, task_owner, task_id) -> bool``: who may watch, cancel.
    PERMISSION: str = "progrock.permissions.is_owner"
    # Seconds of backend trouble (failed calls, lost starts) before a task fails.
    FAILURE_BUDGET: float = 30.0
    # Seconds a start may go without its task running before it is forwarded
    # again (a worker killed holding it); longer than a backend create takes.
    START_TIMEOUT: float = 10.0
    # Seconds between sweeps for tasks a dead worker left behind (a poll that
    # many seconds overdue): such a task resumes within about twice this.
    SWEEP_INTERVAL: float = 5.0
    # Seconds a push task may go without a report or keep-alive before it fails
    # as ``lost`` (its producer died); the sweep checks.
    PUSH_TIMEOUT: float = 60.0
    # Seconds the rows of ended tasks are kept ("30d", a timedelta or seconds in
    # PROGROCK); the sweep deletes older ones in bounded batches. None: keep all.
    RETENTION: float | None = None
    # Dotted paths of token authenticators, tried in order, for clients that
    # send a token instead of a session cookie (docs/howto-tokens.md); empty:
    # sessions only.
    AUTHENTICATORS: tuple[str, ...] = ()
    # Not a setting of its own: the kinds of a KINDS mapping that run on a task
    # queue (Celery, django.tasks), kind -> target (progrock.queues.targets).
    KIND_TARGETS: Mapping[str, Target] = field(
        default_factory=lambda: MappingProxyType({}), metadata={"derived": True}
    )


SETTING_NAMES: Final = tuple(
    f.name for f in fields(ProgRockSettings) if not f.metadata.get("derived")
)
_NAMES: Final = frozenset(SETTING_NAMES)
_READABLE: Final = frozenset(f.name for f in fields(ProgRockSettings))

# Former settings, and what to do instead (a clear error for an old settings file).
REMOVED: Final[Mapping[str, str]] = MappingProxyType(
    {
        "GC_THRESHOLDS": "call progrock.runtime.tune_gc(thresholds=...) in asgi.py instead",
        "STALL_AFTER": "a poll is overdue after SWEEP_INTERVAL now",
        "TICK_LEAD": "ticks are delivered when due",
        "TICK_ALIGN": "there is one tick grid, progrock.tuning.TICK_GRID",
        "TICK_GRID_LIGHT": "there is one tick grid, progrock.tuning.TICK_GRID",
        "LIGHT_LOAD": "there is one tick grid, progrock.tuning.TICK_GRID",
        # The 2017 design's channel names are fixed; the channel layer's own "prefix"
        # keeps two deployments on one Redis apart.
        "WORKER_CHANNEL": "it is fixed at 'prog-rocker' (progrock.protocol.WORKER_CHANNEL); "
        "set CHANNEL_LAYERS['default']['CONFIG']['prefix'] to share a Redis",
        "DELAY_CHANNEL": "it is fixed at 'asgi.delay' (progrock.protocol.DELAY_CHANNEL); "
        "set CHANNEL_LAYERS['default']['CONFIG']['prefix'] to share a Redis",
        **{
            name: f"it is the constant progrock.tuning.{name}"
            for name in (
                "TICK_GRID",
                "TICK_BATCH",
                "DELAY_BATCH_WINDOW",
                "RETRY_BASE",
                "RETRY_MAX",
                "DB_PROGRESS_INTERVAL",
                "MAX_FRAME_BYTES",
                "MAX_PARAMS_BYTES",
            )
        },
    }
)


def _bad(name: str, expected: str, value: object) -> ImproperlyConfigured:
    return ImproperlyConfigured(f"PROGROCK[{name!r}] must be {expected}, got {value!r}")


def _seconds(name: str, value: object) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value <= 0
    ):
        raise _bad(name, "a positive number of seconds", value)
    return float(value)


def _text(name: str, value: object) -> str:
    if not isinstance(value, str) or not value:
        raise _bad(name, "a non-empty string", value)
    return value


def _redis_url(value: object) -> str:
    # Its shape is checked where it is used (progrock.preflight at process
    # start), naming REDIS_URL or PROGROCK['REDIS_URL'], whichever set it.
    if value is None:
        return os.environ.get("REDIS_URL") or DEFAULT_REDIS_URL
    if not isinstance(value, str) or not value:
        raise _bad("REDIS_URL", "a non-empty URL string (or None)", value)
    return value


def _service(value: object) -> Mapping[str, Any]:
    expected = "a dict with a dotted-path string 'BACKEND' and optional dict 'OPTIONS'"
    if not isinstance(value, Mapping):
        raise _bad("SERVICE", expected, value)
    unknown = [key for key in value if key not in ("BACKEND", "OPTIONS")]
    if unknown:
        hint = _did_you_mean(unknown[0], ("BACKEND", "OPTIONS"))
        raise ImproperlyConfigured(
            f"PROGROCK['SERVICE'] has an unknown key {unknown[0]!r}{hint}; "
            f"expected {expected}, got {value!r}"
        )
    backend, options = value.get("BACKEND"), value.get("OPTIONS", {})
    if not isinstance(backend, str) or not backend:
        raise _bad("SERVICE", expected, value)
    if not isinstance(options, Mapping) or not all(isinstance(k, str) for k in options):
        raise _bad("SERVICE", expected, value)
    return MappingProxyType({"BACKEND": backend, "OPTIONS": MappingProxyType(dict(options))})


def _kinds(value: object) -> tuple[str, ...] | None:
    if value is None:
        return None
    if isinstance(value, Mapping):
        if not value or not all(isinstance(k, str) and k for k in value):
            raise _bad("KINDS", "a mapping of non-empty kind names to targets", value)
        _kind_targets(value)
        return tuple(value)
    if (
        isinstance(value, (str, bytes))
        or not isinstance(value, (list, tuple, set, frozenset))
        or not value
        or not all(isinstance(k, str) and k for k in value)
    ):
        raise _bad("KINDS", "a non-empty list of non-empty strings, or None", value)
    return tuple(value)


def _kind_targets(value: object) -> Mapping[str, Target]:
    if not isinstance(value, Mapping):
        return MappingProxyType({})
    try:
        return MappingProxyType(parse_kinds(value))
    except ValueError as exc:
        raise ImproperlyConfigured(f"PROGROCK['KINDS']: {exc}") from None


def _limit(value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise _bad("MAX_RUNNING_PER_OWNER", "a positive integer or None", value)
    return value


def _retention(value: object) -> float | None:
    try:
        return retention_seconds(value)
    except ValueError as exc:
        raise ImproperlyConfigured(f"PROGROCK['RETENTION'] {exc}") from None


def _authenticators(value: object) -> tuple[str, ...]:
    if (
        isinstance(value, (str, bytes))
        or not isinstance(value, (list, tuple))
        or not all(isinstance(path, str) and path for path in value)
    ):
        raise _bad("AUTHENTICATORS", "a list of dotted-path strings (empty: sessions only)", value)
    return tuple(value)


def _did_you_mean(key: object, known: tuple[str, ...]) -> str:
    if not isinstance(key, str):
        return ""
    close = difflib.get_close_matches(key.upper(), known, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _refuse_unknown(user: Mapping[Any, object]) -> None:
    unknown = [key for key in user if key not in _NAMES]
    if not unknown:
        return
    problems = []
    for key in unknown:
        why = REMOVED.get(key) if isinstance(key, str) else None
        problems.append(
            f"{key!r} (no longer a setting: {why})"
            if why
            else f"{key!r}{_did_you_mean(key, SETTING_NAMES)}"
        )
    noun = "an unknown key" if len(problems) == 1 else "unknown keys"
    raise ImproperlyConfigured(
        f"settings.PROGROCK has {noun} {', '.join(problems)}; "
        f"the settings are {', '.join(SETTING_NAMES)}"
    )


def load(user: object) -> ProgRockSettings:
    """``user`` (``settings.PROGROCK``) checked and merged over the defaults.

    Raises :class:`ImproperlyConfigured` naming the key and quoting the value
    for a wrong type or value, or for an unknown key (with the closest known one).
    """
    if not isinstance(user, Mapping):
        raise ImproperlyConfigured(
            f"settings.PROGROCK must be a dict, got {type(user).__name__}: {user!r}"
        )
    _refuse_unknown(user)
    defaults = ProgRockSettings()

    def pick(name: str) -> object:
        return user[name] if name in user else getattr(defaults, name)

    return ProgRockSettings(
        REDIS_URL=_redis_url(user.get("REDIS_URL")),
        KEY_PREFIX=_text("KEY_PREFIX", pick("KEY_PREFIX")),
        POLL_INTERVAL=_seconds("POLL_INTERVAL", pick("POLL_INTERVAL")),
        SERVICE=_service(pick("SERVICE")),
        KINDS=_kinds(pick("KINDS")),
        DEFAULT_KIND=_text("DEFAULT_KIND", pick("DEFAULT_KIND")),
        MAX_RUNNING_PER_OWNER=_limit(pick("MAX_RUNNING_PER_OWNER")),
        PERMISSION=_text("PERMISSION", pick("PERMISSION")),
        FAILURE_BUDGET=_seconds("FAILURE_BUDGET", pick("FAILURE_BUDGET")),
        START_TIMEOUT=_seconds("START_TIMEOUT", pick("START_TIMEOUT")),
        SWEEP_INTERVAL=_seconds("SWEEP_INTERVAL", pick("SWEEP_INTERVAL")),
        PUSH_TIMEOUT=_seconds("PUSH_TIMEOUT", pick("PUSH_TIMEOUT")),
        RETENTION=_retention(pick("RETENTION")),
        AUTHENTICATORS=_authenticators(pick("AUTHENTICATORS")),
        KIND_TARGETS=_kind_targets(pick("KINDS")),
    )


_current: ProgRockSettings | None = None


def get_settings() -> ProgRockSettings:
    """The current settings, checked on first use after start-up or a change."""
    global _current
    current = _current
    if current is None:
        from django.conf import settings

        current = _current = load(getattr(settings, "PROGROCK", {}))
    return current


def reload() -> None:
    """Forget the checked settings: the next read checks ``settings.PROGROCK`` again."""
    global _current
    _current = None


class _CurrentSettings:
    """Stands for :func:`get_settings`'s result, read at each attribute access."""

    __slots__ = ()

    def __getattr__(self, name: str) -> object:
        if name not in _READABLE:
            hint = _did_you_mean(name, SETTING_NAMES)
            raise AttributeError(f"no ProgRock setting {name!r}{hint}")
        return getattr(get_settings(), name)

    def __setattr__(self, name: str, value: object) -> None:
        raise FrozenInstanceError(
            f"cannot assign to ProgRock setting {name!r}: use override_settings(PROGROCK=...)"
        )

    def __repr__(self) -> str:
        return f"<current {get_settings()!r}>"


# Typed as the dataclass it stands for, so that ``progrock_settings.NAME`` has
# the setting's real type; always the current settings (after any change).
progrock_settings: Final = cast(ProgRockSettings, _CurrentSettings())


def protocol_limits() -> Limits:
    """What clients may send, from the settings (for the socket and the HTTP API)."""
    current = get_settings()
    return Limits(
        max_frame_bytes=tuning.MAX_FRAME_BYTES,
        max_params_bytes=tuning.MAX_PARAMS_BYTES,
        kinds=current.KINDS,
        default_kind=current.DEFAULT_KIND,
    )


@receiver(setting_changed)
def _reload(*, setting: str, **kwargs: object) -> None:
    if setting == "PROGROCK":
        reload()
