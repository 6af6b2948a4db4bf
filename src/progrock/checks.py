"""System checks (``manage.py check``, and ``check --deploy``): ``progrock.E001``... and
``progrock.W001``...

Each message names the setting, quotes its value and says the fix. The
``PROGROCK`` keys are checked one by one with :func:`progrock.conf.load`, the
same code that reads them, so a check never disagrees with what a process does.

===============  =====================================================================
id               problem
===============  =====================================================================
progrock.E001    ``settings.PROGROCK`` is not a dict
progrock.E002    an unknown ``PROGROCK`` key (misspelt, or a setting that was removed)
progrock.E003    a ``PROGROCK`` key with a wrong type or value
progrock.E004    ``DEFAULT_KIND`` is not one of ``KINDS``
progrock.E005    ``SERVICE["BACKEND"]`` cannot be imported
progrock.E006    ``PERMISSION`` cannot be imported, or is not callable
progrock.E007    no usable default channel layer (``CHANNEL_LAYERS``)
progrock.E008    ``ASGI_APPLICATION`` is not set
progrock.E009    an ``AUTHENTICATORS`` path cannot be imported, or is not callable
progrock.E010    ``DRFTokenAuthenticator`` without ``rest_framework.authtoken`` installed
progrock.E011    a ``KINDS`` target cannot run: not importable, not a progress task, or its
                 queue (Celery, ``django.tasks``) not installed
progrock.E012    ``SERVICE["OPTIONS"]`` do not fit ``SERVICE["BACKEND"]``'s arguments (e.g. no
                 ``url`` for ``HttpTaskService``), while some kind runs on the backend service
progrock.W001    the in-memory channel layer: workers and the delay server never see a message
progrock.W002    (DEBUG) ``daphne`` is not in ``INSTALLED_APPS``: ``runserver`` serves no socket
progrock.W003    (DEBUG) ``daphne`` after ``django.contrib.staticfiles``: its ``runserver`` loses
progrock.W004    ``django.contrib.staticfiles`` is not installed: ``progrock.js`` is not served
progrock.W005    the URLconf serves ``progrock.web.metrics.view`` without ``prometheus-client``
progrock.W006    ``PUSH_TIMEOUT`` under 2 x ``POLL_INTERVAL``: steady push tasks fail
progrock.W007    no ``PROGROCK``, but a dict setting named like it (``PROGROK``, ...)
progrock.W008    channels_redis hosts without ``"socket_timeout": None`` under redis-py 8
progrock.W010    (deploy) ``KINDS`` is None: any client may start any kind the backend has
progrock.W011    (deploy) ``MAX_RUNNING_PER_OWNER`` is None: one visitor may start without limit
progrock.W012    (deploy) the channel layer's capacity of the worker or delay channel is small
===============  =====================================================================
"""

from __future__ import annotations

import difflib
import importlib.metadata
import inspect
from collections.abc import Mapping, Sequence
from typing import Any, Final

from django.apps import AppConfig
from django.conf import settings
from django.core.checks import CheckMessage, Error, Warning, register
from django.urls import URLResolver, get_resolver
from django.utils.module_loading import import_string

from progrock import conf
from progrock.exceptions import ImproperlyConfigured
from progrock.protocol import DELAY_CHANNEL, WORKER_CHANNEL

TAG: Final = "progrock"
IN_MEMORY_LAYER: Final = "channels.layers.InMemoryChannelLayer"
#: Below this, a burst of starts or ticks can fill the shared channels (ChannelFull).
MIN_CAPACITY: Final = 1000
#: A dict setting this close to "PROGROCK" (difflib's ratio) is taken for a misspelling.
MISNAMED_RATIO: Final = 0.8
SETTINGS_HELP: Final = "see docs/reference/settings.md"
LAYER_EXAMPLE: Final = (
    'CHANNEL_LAYERS = {"default": {"BACKEND": "channels_redis.core.RedisChannelLayer", '
    '"CONFIG": {"hosts": [REDIS_URL]}}}'
)

Messages = list[CheckMessage]


def _user_settings() -> object:
    return getattr(settings, "PROGROCK", {})


@register(TAG)
def check_progrock_settings(
    app_configs: Sequence[AppConfig] | None = None, **kwargs: Any
) -> Messages:
    """Every ``PROGROCK`` key on its own (one message per bad key), then the whole."""
    user = _user_settings()
    try:
        current = conf.load(user)
    except ImproperlyConfigured:
        pass
    else:
        return _loaded_settings(current)
    if not isinstance(user, Mapping):
        return [
            Error(
                f"settings.PROGROCK must be a dict, got {type(user).__name__}: {user!r}",
                hint='Write PROGROCK = {"KEY": value, ...}, or leave it out for the defaults.',
                id="progrock.E001",
            )
        ]
    found: Messages = []
    for key, value in user.items():
        try:
            conf.load({key: value})
        except ImproperlyConfigured as exc:
            if key in conf.SETTING_NAMES:
                default = getattr(conf.ProgRockSettings(), key)
                found.append(
                    Error(
                        str(exc),
                        hint=(
                            f"Give PROGROCK[{key!r}] such a value, or remove it for the "
                            f"default {default!r} ({SETTINGS_HELP})."
                        ),
                        id="progrock.E003",
                    )
                )
            else:
                found.append(
                    Error(
                        f"{exc} (its value: {value!r})",
                        hint=f"Correct the key's spelling or remove it ({SETTINGS_HELP}).",
                        id="progrock.E002",
                    )
                )
    return found


def _loaded_settings(current: conf.ProgRockSettings) -> Messages:
    """What holds between keys, and the dotted paths (only once every key is right)."""
    found: Messages = []
    if current.KINDS is not None and current.DEFAULT_KIND not in current.KINDS:
        found.append(
            Error(
                f"PROGROCK['DEFAULT_KIND'] is {current.DEFAULT_KIND!r}, which is not one of "
                f"PROGROCK['KINDS'] {list(current.KINDS)!r}: a start that names no kind "
                "would be refused",
                hint="Add it to KINDS, or set DEFAULT_KIND to one of them.",
                id="progrock.E004",
            )
        )
    if current.PUSH_TIMEOUT < 2 * current.POLL_INTERVAL:
        found.append(
            Warning(
                f"PROGROCK['PUSH_TIMEOUT'] is {current.PUSH_TIMEOUT!r}, less than twice "
                f"PROGROCK['POLL_INTERVAL'] ({current.POLL_INTERVAL!r}): a producer's reports "
                "reach Redis at most once per POLL_INTERVAL, so push tasks that report "
                "steadily could fail as 'lost'",
                hint="Give PUSH_TIMEOUT at least a few seconds (the default is 60).",
                id="progrock.W006",
            )
        )
    backend = current.SERVICE["BACKEND"]
    try:
        factory = import_string(backend)
    except ImportError as exc:
        found.append(
            Error(
                f"PROGROCK['SERVICE']['BACKEND'] {backend!r} cannot be imported: {exc}",
                hint=(
                    "Give the dotted path of a TaskService class or factory, e.g. "
                    "'progrock.services.http.HttpTaskService' (docs/backend.md, section 5)."
                ),
                id="progrock.E005",
            )
        )
    else:
        found.extend(_service_option_errors(current, factory))
    permission = current.PERMISSION
    try:
        hook = import_string(permission)
    except ImportError as exc:
        found.append(_permission_error(f"cannot be imported: {exc}", permission))
    else:
        if not callable(hook):
            found.append(_permission_error("is not callable", permission))
    found.extend(_authenticator_errors(current.AUTHENTICATORS))
    found.extend(_kind_target_errors(current))
    return found


def _service_option_errors(current: conf.ProgRockSettings, factory: object) -> Messages:
    """E012: the backend service's options do not fit its constructor, and some kind
    (every kind, with KINDS None) runs on that service rather than on a task queue."""
    kinds = current.KINDS
    if kinds is not None and all(kind in current.KIND_TARGETS for kind in kinds):
        return []  # every kind runs on a task queue: the service is never built
    if not callable(factory):
        return []  # build_service says so when a worker starts
    options = dict(current.SERVICE["OPTIONS"])
    try:
        inspect.signature(factory).bind(**options)
    except TypeError as exc:
        backend = current.SERVICE["BACKEND"]
        return [
            Error(
                f"PROGROCK['SERVICE']['OPTIONS'] {options!r} do not fit {backend}: {exc}",
                hint=(
                    "Give the service's arguments in SERVICE['OPTIONS'], e.g. "
                    '{"BACKEND": "progrock.services.http.HttpTaskService", '
                    '"OPTIONS": {"url": "http://127.0.0.1:8001"}} (docs/backend.md).'
                ),
                id="progrock.E012",
            )
        ]
    except ValueError:
        return []  # no signature to check (a builtin)
    return []


DRF_AUTHENTICATOR: Final = "progrock.auth.DRFTokenAuthenticator"


def _authenticator_errors(paths: tuple[str, ...]) -> Messages:
    found: Messages = []
    for path in paths:
        try:
            named = import_string(path)
        except ImportError as exc:
            why = f"cannot be imported: {exc}"
        else:
            if callable(named):
                continue
            why = "is not callable"
        found.append(
            Error(
                f"PROGROCK['AUTHENTICATORS'] names {path!r}, which {why}",
                hint=(
                    "Give dotted paths of authenticators: a callable or class taking a token "
                    "and returning its user (docs/howto-tokens.md)."
                ),
                id="progrock.E009",
            )
        )
    drf_app = "rest_framework.authtoken"
    if DRF_AUTHENTICATOR in paths and drf_app not in settings.INSTALLED_APPS:
        found.append(
            Error(
                f"PROGROCK['AUTHENTICATORS'] names {DRF_AUTHENTICATOR!r}, but "
                f"{drf_app!r} is not in INSTALLED_APPS: no token could be checked",
                hint=(
                    "pip install djangorestframework, add 'rest_framework.authtoken' to "
                    "INSTALLED_APPS and migrate; or remove the authenticator."
                ),
                id="progrock.E010",
            )
        )
    return found


def _kind_target_errors(current: conf.ProgRockSettings) -> Messages:
    from progrock.exceptions import MissingExtra
    from progrock.queues.bridges import TargetError, resolve

    found: Messages = []
    for kind, target in current.KIND_TARGETS.items():
        try:
            resolve(target)
        except (TargetError, MissingExtra) as exc:
            found.append(
                Error(
                    f"PROGROCK['KINDS'][{kind!r}] is {str(target)!r}, which cannot run: {exc}",
                    hint=(
                        "Name a Celery task declared with base=progrock.celery.ProgressTask "
                        "('celery:myapp.tasks.export'), or a django.tasks task decorated with "
                        "progrock.django_tasks.with_progress ('tasks:myapp.tasks.report')."
                    ),
                    id="progrock.E011",
                )
            )
    return found


def _permission_error(why: str, permission: str) -> Error:
    return Error(
        f"PROGROCK['PERMISSION'] {permission!r} {why}",
        hint=(
            "Give the dotted path of f(requester, task_owner, task_id) -> bool, "
            "e.g. 'progrock.permissions.is_owner'."
        ),
        id="progrock.E006",
    )


def _default_layer() -> tuple[object, Mapping[str, Any] | None]:
    layers = getattr(settings, "CHANNEL_LAYERS", None)
    entry = layers.get("default") if isinstance(layers, Mapping) else None
    return layers, entry if isinstance(entry, Mapping) else None


@register(TAG)
def check_channel_layer(app_configs: Sequence[AppConfig] | None = None, **kwargs: Any) -> Messages:
    """A default channel layer that every process can share."""
    layers, entry = _default_layer()
    if entry is None or not isinstance(entry.get("BACKEND"), str):
        return [
            Error(
                "settings.CHANNEL_LAYERS has no 'default' layer with a 'BACKEND', "
                f"got {layers!r}: web processes cannot reach the workers",
                hint=f"Add one, e.g. {LAYER_EXAMPLE}.",
                id="progrock.E007",
            )
        ]
    backend = entry["BACKEND"]
    try:
        import_string(backend)
    except ImportError as exc:
        return [
            Error(
                f"CHANNEL_LAYERS['default']['BACKEND'] {backend!r} cannot be imported: {exc}",
                hint=f"Install it, or use another layer, e.g. {LAYER_EXAMPLE}.",
                id="progrock.E007",
            )
        ]
    if backend == IN_MEMORY_LAYER:
        return [
            Warning(
                f"CHANNEL_LAYERS['default']['BACKEND'] is {backend!r}: it lives inside one "
                "process, so workers (runprogrock) and the delay server (rundelay), which run "
                "in processes of their own, never see a start or a tick",
                hint=f"Use a Redis layer, e.g. {LAYER_EXAMPLE}.",
                id="progrock.W001",
            )
        ]
    return _socket_timeout_warnings(backend, entry, _redis_major())


def _redis_major() -> int:
    """The installed redis-py's major version (0 if unknown)."""
    try:
        return int(importlib.metadata.version("redis").partition(".")[0])
    except (importlib.metadata.PackageNotFoundError, ValueError):
        return 0


def _socket_timeout_warnings(backend: str, entry: Mapping[str, Any], redis_major: int) -> Messages:
    """W008: channels_redis hosts that keep redis-py 8's 5 s ``socket_timeout``.

    channels_redis's ``receive`` blocks 5 s in ``BZPOPMIN``: a read timeout of 5 s
    makes every idle receive fail (redis/redis-py#4091), which a worker logs as
    ``Timeout reading from ...`` tracebacks every few seconds.
    """
    if redis_major < 8 or not backend.startswith(("channels_redis.", "progrock.contrib.layer")):
        return []
    config = entry.get("CONFIG")
    hosts = config.get("hosts") if isinstance(config, Mapping) else None
    if hosts is None:  # channels_redis's default: localhost:6379, no options
        hosts = [("localhost", 6379)]
    if not isinstance(hosts, Sequence) or isinstance(hosts, str):
        return []
    bare = [h for h in hosts if not (isinstance(h, Mapping) and "socket_timeout" in h)]
    if not bare:
        return []
    return [
        Warning(
            f"CHANNEL_LAYERS['default'] hosts {bare!r} have no 'socket_timeout': under "
            f"redis-py {redis_major} a read times out after 5 s, so every idle receive of "
            "a worker or the delay server fails ('Timeout reading from ...' tracebacks "
            "every few seconds)",
            hint=(
                'Write each host as {"address": REDIS_URL, "socket_timeout": None} '
                "(the README's CHANNEL_LAYERS example)."
            ),
            id="progrock.W008",
        )
    ]


def _misnamed_settings(names: Sequence[str], value_of: Any) -> list[str]:
    """Dict settings whose names look like a misspelt ``PROGROCK``.

    Only a look-alike name's value is read: reading a setting may warn (Django 6.1
    deprecates ``EMAIL_BACKEND`` on access)."""
    return [
        name
        for name in names
        if name != "PROGROCK"
        and (
            name.startswith("PROGROCK")
            or difflib.SequenceMatcher(None, name, "PROGROCK").ratio() >= MISNAMED_RATIO
        )
        and isinstance(value_of(name), Mapping)
    ]


@register(TAG)
def check_settings_name(app_configs: Sequence[AppConfig] | None = None, **kwargs: Any) -> Messages:
    """W007: no ``PROGROCK``, but a dict setting whose name is close to it."""
    if hasattr(settings, "PROGROCK"):
        return []
    names = [name for name in dir(settings) if name.isupper()]
    return [
        Warning(
            f"settings.{name} looks like a misspelt PROGROCK: ProgRock reads only "
            "settings.PROGROCK, which is not set, so it runs on its defaults",
            hint=f"Rename {name} to PROGROCK.",
            id="progrock.W007",
        )
        for name in _misnamed_settings(names, lambda name: getattr(settings, name, None))
    ]


@register(TAG)
def check_asgi_and_static(
    app_configs: Sequence[AppConfig] | None = None, **kwargs: Any
) -> Messages:
    """ASGI_APPLICATION, runserver's WebSockets (daphne) and the static files."""
    found: Messages = []
    asgi = getattr(settings, "ASGI_APPLICATION", None)
    if not asgi:
        found.append(
            Error(
                f"settings.ASGI_APPLICATION is {asgi!r}: runprogrock and runserver load the "
                "application (and its channel routes) from it",
                hint="Set it to your asgi.py's application, e.g. 'mysite.asgi.application'.",
                id="progrock.E008",
            )
        )
    apps = list(settings.INSTALLED_APPS)
    staticfiles = "django.contrib.staticfiles"
    if not settings.DEBUG:
        pass  # runserver is for development: a production site runs an ASGI server
    elif "daphne" not in apps:
        found.append(
            Warning(
                "'daphne' is not in INSTALLED_APPS: manage.py runserver serves plain HTTP "
                "only, so the socket at /prog/ is a 404 and the page never moves",
                hint=(
                    "Put 'daphne' first in INSTALLED_APPS for development, or serve "
                    "asgi.py with an ASGI server (daphne, uvicorn)."
                ),
                id="progrock.W002",
            )
        )
    elif staticfiles in apps and apps.index("daphne") > apps.index(staticfiles):
        found.append(
            Warning(
                f"'daphne' comes after {staticfiles!r} in INSTALLED_APPS (at "
                f"{apps.index('daphne')}, after {apps.index(staticfiles)}): runserver is "
                "staticfiles' plain HTTP one, and the socket at /prog/ is a 404",
                hint=f"Move 'daphne' before {staticfiles!r} (first is simplest).",
                id="progrock.W003",
            )
        )
    if staticfiles not in apps:
        found.append(
            Warning(
                f"{staticfiles!r} is not in INSTALLED_APPS: {{% static "
                "'progrock/progrock.js' %} finds nothing to serve or collect",
                hint=(
                    f"Add {staticfiles!r} (and STATIC_URL), or serve "
                    "progrock/static/progrock/ yourself."
                ),
                id="progrock.W004",
            )
        )
    return found


def _serves(patterns: Sequence[Any], view: object) -> bool:
    """Whether URL ``patterns`` (included ones too) route to ``view``."""
    for pattern in patterns:
        if isinstance(pattern, URLResolver):
            if _serves(pattern.url_patterns, view):
                return True
        elif getattr(pattern, "callback", None) is view:
            return True
    return False


@register(TAG)
def check_metrics(app_configs: Sequence[AppConfig] | None = None, **kwargs: Any) -> Messages:
    """The metrics view is in the URLconf, but the library it needs is not installed."""
    from progrock import metrics
    from progrock.web import metrics as metrics_view

    if metrics.AVAILABLE:
        return []
    try:
        served = _serves(get_resolver().url_patterns, metrics_view.view)
    except Exception:  # a broken URLconf: Django's own checks report it
        return []
    if not served:
        return []
    return [
        Warning(
            "the URLconf serves progrock.web.metrics.view, but prometheus-client is not "
            "installed: it answers 501 and every ProgRock metric is a no-op",
            hint=f"Install it ({metrics.INSTALL}), or remove the URL.",
            id="progrock.W005",
        )
    ]


@register(TAG, deploy=True)
def check_deployment(app_configs: Sequence[AppConfig] | None = None, **kwargs: Any) -> Messages:
    """What matters once strangers use the site (``check --deploy``)."""
    try:
        current = conf.load(_user_settings())
    except ImproperlyConfigured:
        return []  # check_progrock_settings reports it
    found: Messages = []
    if current.KINDS is None:
        found.append(
            Warning(
                "PROGROCK['KINDS'] is None: any client may start any kind of task your "
                "backend accepts, with any parameters",
                hint="List the kinds your pages start, e.g. PROGROCK['KINDS'] = ['report'].",
                id="progrock.W010",
            )
        )
    if current.MAX_RUNNING_PER_OWNER is None:
        found.append(
            Warning(
                "PROGROCK['MAX_RUNNING_PER_OWNER'] is None: one visitor may keep any number "
                "of tasks running",
                hint="Set a limit, e.g. 20 (the default).",
                id="progrock.W011",
            )
        )
    found += _capacity_warnings(current)
    return found


def _capacity_warnings(current: conf.ProgRockSettings) -> Messages:
    from channels.layers import channel_layers

    _, entry = _default_layer()
    if entry is None or entry.get("BACKEND") == IN_MEMORY_LAYER:
        return []
    try:
        layer = channel_layers.make_backend("default")  # no connection is opened
    except Exception:
        return []  # check_channel_layer reports it
    get_capacity = getattr(layer, "get_capacity", None)
    if get_capacity is None:
        return []
    found: Messages = []
    for name in (WORKER_CHANNEL, DELAY_CHANNEL):
        capacity = get_capacity(name)
        if isinstance(capacity, int) and capacity < MIN_CAPACITY:
            found.append(
                Warning(
                    f"the channel layer holds at most {capacity} messages on {name!r}, which "
                    "every web process shares: a burst of more starts or ticks than that is "
                    "refused (ChannelFull)",
                    hint=(
                        "Raise it in CHANNEL_LAYERS['default']['CONFIG'], e.g. "
                        f'"channel_capacity": {{"{WORKER_CHANNEL}": 20000, '
                        f'"{DELAY_CHANNEL}": 20000}}.'
                    ),
                    id="progrock.W012",
                )
            )
    return found
