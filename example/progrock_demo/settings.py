"""Settings of the example project that ``progrock up`` runs.

Everything that varies between machines comes from the environment:

* ``PROGROCK_DATA_DIR`` — where the SQLite database and the secret key live
  (default: ``$XDG_DATA_HOME/progrock`` or ``~/.local/share/progrock``);
* ``DATABASE_URL`` — ``postgres://USER:PASSWORD@HOST:PORT/NAME`` or ``sqlite:///PATH``
  (default: SQLite, ``db.sqlite3`` in the data dir, or the file ``PROGROCK_DB`` names);
* ``REDIS_URL`` — the Redis carrying every message (default ``redis://127.0.0.1:6379/0``);
* ``PROGROCK_BACKEND_URL`` — the backend task service (default ``http://127.0.0.1:8001``);
* ``DJANGO_DEBUG`` — ``1`` for debug mode;
* ``DJANGO_ALLOWED_HOSTS`` — comma-separated, default ``127.0.0.1,localhost,[::1]``;
* ``DJANGO_CSRF_TRUSTED_ORIGINS`` — comma-separated origins (``https://example.com``)
  pages may come from besides the socket's own (default none);
* ``DJANGO_SECURE_PROXY_SSL_HEADER`` — ``1`` behind a proxy that sets
  ``X-Forwarded-Proto`` (deploy/nginx): HTTPS is what it says (default ``0``);
* ``PROGROCK_DEMO_CONTRIB`` — ``1`` (default) runs the opt-in performance parts
  of ``progrock.contrib`` (the one-round-trip channel layer here, the Twisted
  and Autobahn patches in ``asgi.py``), ``0`` runs stock channels_redis,
  Twisted and Autobahn: to measure what they bring (benchmarks/README.md).
  ``progrock.contrib.autobahn_close`` and ``daphne_close_codes`` (close codes,
  part of the protocol) stay on.
"""

from __future__ import annotations

import importlib.util
import os
import secrets
from pathlib import Path
from typing import Any

from progrock.database_url import SQLITE_ENGINE, parse_database_url
from progrock.exceptions import ImproperlyConfigured


def _data_dir() -> Path:
    explicit = os.environ.get("PROGROCK_DATA_DIR")
    if explicit:
        return Path(explicit).expanduser()
    if os.environ.get("PYTEST_VERSION"):
        # Under pytest, never touch the user's data directory.
        import tempfile

        path = Path(tempfile.mkdtemp(prefix="progrock-test-data-"))
        os.environ["PROGROCK_DATA_DIR"] = str(path)
        return path
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(Path.home(), ".local", "share")
    return Path(base) / "progrock"


DATA_DIR = _data_dir()
DATA_DIR.mkdir(parents=True, exist_ok=True)


def _secret_key() -> str:
    explicit = os.environ.get("DJANGO_SECRET_KEY")
    if explicit:
        return explicit
    path = DATA_DIR / "secret_key"
    if not path.exists():
        path.write_text(secrets.token_urlsafe(50))
        path.chmod(0o600)
    return path.read_text().strip()


SECRET_KEY = _secret_key()
DEBUG = os.environ.get("DJANGO_DEBUG", "") == "1"
ALLOWED_HOSTS = os.environ.get("DJANGO_ALLOWED_HOSTS", "127.0.0.1,localhost,[::1]").split(",")
CSRF_TRUSTED_ORIGINS = [
    origin.strip()
    for origin in os.environ.get("DJANGO_CSRF_TRUSTED_ORIGINS", "").split(",")
    if origin.strip()
]
if os.environ.get("DJANGO_SECURE_PROXY_SSL_HEADER", "0") == "1":
    # Only behind a proxy that always sets (overwrites) the header: deploy/nginx.
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "progrock",
    "progrock_demo",
]

#: Django REST framework's tokens, when it is installed (the dev extra): the
#: demo then accepts them too (docs/howto-tokens.md).
HAS_DRF = importlib.util.find_spec("rest_framework") is not None
if HAS_DRF:
    INSTALLED_APPS.append("rest_framework.authtoken")

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "progrock_demo.urls"
ASGI_APPLICATION = "progrock_demo.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]


def _database() -> dict[str, Any]:
    """``DATABASE_URL`` (postgres://… or sqlite:///…), else SQLite in the data dir."""
    url = os.environ.get("DATABASE_URL", "").strip()
    if not url:
        name = os.environ.get("PROGROCK_DB", str(DATA_DIR / "db.sqlite3"))
        entry: dict[str, Any] = {"ENGINE": SQLITE_ENGINE, "NAME": name}
    else:
        try:
            entry = parse_database_url(url)
        except ImproperlyConfigured as exc:
            raise SystemExit(str(exc)) from None  # one line, not a traceback
    if entry["ENGINE"] != SQLITE_ENGINE:
        # No persistent connections under ASGI (Django's advice): each HTTP
        # request runs in a thread of its own, and a connection kept open there
        # stays open after it (100 page loads, 100 server connections). For
        # many requests, Django's pool: see docs/howto-postgresql.md.
        return {**entry, "CONN_MAX_AGE": 0}
    return {
        **entry,
        # Several workers write: WAL lets readers run beside one writer, and
        # IMMEDIATE transactions wait for the lock instead of failing late.
        "OPTIONS": {
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            "transaction_mode": "IMMEDIATE",
            "timeout": 20,
            **entry.get("OPTIONS", {}),
        },
        "TEST": {"NAME": os.environ.get("PROGROCK_TEST_DB") or None},
        # Keep connections: workers touch the database from one thread, and a
        # new SQLite connection (with its PRAGMAs) per query costs more than the query.
        "CONN_MAX_AGE": None,
    }


DATABASES = {"default": _database()}

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")


def _contrib() -> bool:
    value = os.environ.get("PROGROCK_DEMO_CONTRIB", "1")
    if value not in ("0", "1"):
        raise ImproperlyConfigured(f"PROGROCK_DEMO_CONTRIB must be '0' or '1', got {value!r}")
    return value == "1"


#: The demo is ProgRock's showcase: it runs the opt-in performance parts of
#: progrock.contrib (asgi.py reads this too). A project of your own starts
#: with the stock channels_redis layer and adds them as a tuning step (docs/howto-scale.md).
DEMO_CONTRIB = _contrib()

CHANNEL_LAYERS = {
    "default": {
        # With contrib: channels_redis's core layer with one Redis round trip
        # per send and per receive (progrock.contrib.layer, same keys and CONFIG).
        "BACKEND": (
            "progrock.contrib.layer.RedisChannelLayer"
            if DEMO_CONTRIB
            else "channels_redis.core.RedisChannelLayer"
        ),
        "CONFIG": {
            # socket_timeout None: redis-py 8's default 5 s read timeout would
            # break the layer's 5 s blocking receive (redis/redis-py#4091).
            "hosts": [{"address": REDIS_URL, "socket_timeout": None}],
            # The default capacity of 100 overflows the shared prog-rocker and
            # asgi.delay channels beyond ~100 concurrent tasks.
            "capacity": 5000,
            "channel_capacity": {"prog-rocker": 20000, "asgi.delay": 20000},
            "expiry": 60,
        },
    }
}

#: With Celery installed (the ``celery`` extra) the ``export`` kind runs as a
#: Celery task (progrock_demo/tasks.py) on the stack's Redis; ``progrock up
#: --celery`` starts a worker for it (docs/howto-celery.md).
HAS_CELERY = importlib.util.find_spec("celery") is not None
CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL", REDIS_URL)
CELERY_TASK_IGNORE_RESULT = True  # the result reaches the page through ProgRock

PROGROCK: dict[str, object] = {
    "REDIS_URL": REDIS_URL,
    "SERVICE": {
        "BACKEND": "progrock.services.http.HttpTaskService",
        "OPTIONS": {"url": os.environ.get("PROGROCK_BACKEND_URL", "http://127.0.0.1:8001")},
    },
    # Signed short-lived tokens (the /tokens/ page), and DRF's when installed.
    "AUTHENTICATORS": [
        "progrock.auth.SignedTokenAuthenticator",
        *(["progrock.auth.DRFTokenAuthenticator"] if HAS_DRF else []),
    ],
    # rock and hash run on the backend service; export on Celery.
    "KINDS": {
        "rock": None,
        "hash": None,
        **({"export": "celery:progrock_demo.tasks.export"} if HAS_CELERY else {}),
    },
}
if os.environ.get("PROGROCK_POLL_INTERVAL"):
    PROGROCK["POLL_INTERVAL"] = float(os.environ["PROGROCK_POLL_INTERVAL"])
if os.environ.get("PROGROCK_FAILURE_BUDGET"):
    PROGROCK["FAILURE_BUDGET"] = float(os.environ["PROGROCK_FAILURE_BUDGET"])
if os.environ.get("PROGROCK_START_TIMEOUT"):
    PROGROCK["START_TIMEOUT"] = float(os.environ["PROGROCK_START_TIMEOUT"])
if os.environ.get("PROGROCK_MAX_RUNNING_PER_OWNER"):
    PROGROCK["MAX_RUNNING_PER_OWNER"] = int(os.environ["PROGROCK_MAX_RUNNING_PER_OWNER"])
if os.environ.get("PROGROCK_SWEEP_INTERVAL"):
    PROGROCK["SWEEP_INTERVAL"] = float(os.environ["PROGROCK_SWEEP_INTERVAL"])

SESSION_COOKIE_SAMESITE = "Lax"
STATIC_URL = "/static/"
STATIC_ROOT = str(DATA_DIR / "static")
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
USE_TZ = True
TIME_ZONE = "UTC"
LANGUAGE_CODE = "en-us"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": "WARNING"},
    "loggers": {"progrock": {"level": os.environ.get("PROGROCK_LOG_LEVEL", "INFO")}},
}
