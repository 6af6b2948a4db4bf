"""``GET /prog/health/``: whether this web process reaches Redis and the database.

Include it in your URLconf (``path("prog/health/", progrock.web.health.view)``):
a load balancer's or Kubernetes' health check. It answers JSON, 200 when both
answer within :data:`TIMEOUT` seconds and 503 when one does not::

    {"status": "ok", "redis": "ok", "database": "ok",
     "processes": {"worker": 2, "delay": 1, "web": 1}}

``processes`` counts the live processes of each kind from their heartbeats
(:mod:`progrock.heartbeat`); it never changes the status (a web process is
healthy without workers; ``manage.py progrock_status`` is the readiness
probe of workers and delay servers). A failure is named by its exception
class only, and logged in full (once when it starts, once when it ends):
the answer never carries an address, a task or an owner.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Final

import redis
from django.db import connections
from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe

from progrock import heartbeat
from progrock.conf import progrock_settings
from progrock.state.rows import write_alias
from progrock.web.failures import OutageLog

logger = logging.getLogger("progrock.web")

#: Seconds Redis may take to answer before it counts as down.
TIMEOUT: Final = 2.0

_redis_outage = OutageLog(logger, "health check: Redis")
_database_outage = OutageLog(logger, "health check: the database")
_clients: dict[str, redis.Redis] = {}
_lock = threading.Lock()


def _client(url: str) -> redis.Redis:
    with _lock:
        client = _clients.get(url)
        if client is None:
            client = _clients[url] = redis.Redis.from_url(
                url, socket_timeout=TIMEOUT, socket_connect_timeout=TIMEOUT
            )
        return client


def check_redis() -> tuple[str, dict[str, int]]:
    """``"ok"`` and the live processes by kind, or ``"unreachable (ErrorClass)"``."""
    prefix = progrock_settings.KEY_PREFIX
    try:
        raw: list[Any] = _client(progrock_settings.REDIS_URL).eval(  # type: ignore[assignment]
            heartbeat.LIVE_LUA, 1, heartbeat.index_key(prefix), int(heartbeat.TTL * 1000)
        )
    except (redis.RedisError, OSError) as exc:
        _redis_outage.failed(exc)
        return f"unreachable ({type(exc).__name__})", {}
    _redis_outage.recovered()
    counts = dict.fromkeys(heartbeat.KINDS, 0)
    for member in raw[1::2]:  # {now, member, score, member, score, ...}
        text = member.decode() if isinstance(member, bytes) else str(member)
        kind = text.partition("|")[0]
        if kind in counts:
            counts[kind] += 1
    return "ok", counts


def check_database() -> str:
    """``"ok"`` if the database answers ``SELECT 1``, else ``"unreachable (ErrorClass)"``."""
    try:
        with connections[write_alias()].cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except Exception as exc:  # any driver's error: the database is what is unhealthy
        _database_outage.failed(exc)
        return f"unreachable ({type(exc).__name__})"
    _database_outage.recovered()
    return "ok"


@never_cache
@require_safe
def view(request: HttpRequest) -> JsonResponse:
    """200 and ``"status": "ok"`` when Redis and the database answer, else 503."""
    redis_state, processes = check_redis()
    database_state = check_database()
    ok = redis_state == "ok" and database_state == "ok"
    body: dict[str, Any] = {
        "status": "ok" if ok else "unavailable",
        "redis": redis_state,
        "database": database_state,
        "processes": processes,
    }
    return JsonResponse(body, status=200 if ok else 503)
