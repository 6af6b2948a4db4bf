"""Settings of the baseline: the 2017 demo's stack, nothing more.

The only departure from the 2017 demo's configuration is the channel capacity.
channels_redis's default of 100 messages per channel overflows the shared
``prog-rocker`` and ``asgi.delay`` channels beyond ~100 concurrent tasks; it
also overflows the reply channels: all sockets of one Daphne process share one
Redis key (``specific.<process>!``) whose capacity is the default one, so a
100-message hiccup of the web process makes the worker's ``send`` raise
``ChannelFull``, which kills the worker's consumer instance and loses the
messages it had queued (and with them whole poll chains). A baseline that
breaks on a setting is no baseline, so every capacity is raised.
"""

from __future__ import annotations

import os

SECRET_KEY = "baseline-benchmark-only"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
INSTALLED_APPS = ["channels", "classicport"]
MIDDLEWARE: list[str] = []
ROOT_URLCONF = "classicport.urls"
ASGI_APPLICATION = "classicport.asgi.application"
DATABASES: dict[str, dict[str, str]] = {}
USE_TZ = True

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")

CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {
            # socket_timeout None: redis-py 8's 5 s default breaks the blocking receive.
            "hosts": [{"address": REDIS_URL, "socket_timeout": None}],
            "capacity": 10_000,
            "channel_capacity": {"prog-rocker": 10_000, "asgi.delay": 10_000},
        },
    }
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": "WARNING"},
}
