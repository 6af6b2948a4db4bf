"""Heartbeats: every ProgRock process says, in Redis, that it is alive.

Each process kind (``web``, ``worker``, ``delay``) refreshes one record from
its own event loop every :data:`INTERVAL` seconds (never per message). A
process counts as live while its last beat is younger than :data:`TTL`; a
process stopped cleanly leaves at once, a killed one is gone after ``TTL``.

In Redis, under ``PROGROCK["KEY_PREFIX"]``:

* ``<prefix>hb``: a sorted set, one member per process (``kind|host|pid|token``),
  scored with the Redis server's clock at its last beat (ms), so hosts whose
  clocks differ still agree on who is live;
* ``<prefix>hb:<member>``: the process's figures (JSON: started_at, loop lag,
  CPU share and its kind's own), expiring after ``TTL``.

A web process reads the set (one round trip, cached: :mod:`progrock.web.liveness`)
to refuse starts that no worker or no delay server would carry;
``manage.py progrock_status`` lists the live processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import time
import uuid
import weakref
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import redis
import redis.asyncio as aioredis

logger = logging.getLogger("progrock.heartbeat")

#: The process kinds, in the order a start needs them (what it is refused for).
KINDS: Final = ("worker", "delay", "web")
#: Seconds between two beats of a process.
INTERVAL: Final = 1.5
#: A process is live while its last beat is younger than this many seconds.
TTL: Final = 5 * INTERVAL
#: Index entries of processes silent for this many seconds are dropped by the next beat.
FORGET_AFTER: Final = 3600.0

#: What each kind is called in messages, and the command that runs it.
NAMES: Final[Mapping[str, str]] = {
    "worker": "worker process",
    "delay": "delay server",
    "web": "web process",
}
COMMANDS: Final[Mapping[str, str]] = {
    "worker": "manage.py runprogrock",
    "delay": "manage.py rundelay",
    "web": "your ASGI server, e.g. daphne yourproject.asgi:application",
}

Figures = Callable[[], Awaitable[Mapping[str, float | int]]]

_NOW_MS = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

# KEYS: index, details key. ARGV: member, details JSON, TTL ms, forget-after ms.
BEAT_LUA: Final = (
    _NOW_MS
    + """
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[4]))
return tostring(now)
"""
)

# KEYS: index. ARGV: TTL ms. -> {now ms, member, beat ms, member, beat ms, ...}
LIVE_LUA: Final = (
    _NOW_MS
    + """
local live = redis.call('ZRANGEBYSCORE', KEYS[1], now - tonumber(ARGV[1]), '+inf', 'WITHSCORES')
table.insert(live, 1, tostring(now))
return live
"""
)


def index_key(prefix: str) -> str:
    return f"{prefix}hb"


def details_key(prefix: str, member: str) -> str:
    return f"{prefix}hb:{member}"


def missing_sentence(kind: str) -> str:
    """What a start refused for a missing kind is told, with the command that fixes it."""
    return f"no {NAMES[kind]} is running (start `{COMMANDS[kind]}`)"


def _text(raw: bytes | str) -> str:
    return raw.decode() if isinstance(raw, bytes) else raw


@dataclass(frozen=True, slots=True)
class Identity:
    """Who beats: a process of ``kind`` on ``host`` with ``pid``, since ``started_at``."""

    kind: str
    host: str = field(default_factory=socket.gethostname)
    pid: int = field(default_factory=os.getpid)
    started_at: float = field(default_factory=time.time)
    token: str = field(default_factory=lambda: uuid.uuid4().hex[:8])

    def __post_init__(self) -> None:
        if self.kind not in NAMES:
            raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {self.kind!r}")

    @property
    def member(self) -> str:
        # '|' never occurs in a kind; a host name or pid with one would still parse (kind first).
        return f"{self.kind}|{self.host}|{self.pid}|{self.token}"

    def details(self, figures: Mapping[str, float | int]) -> str:
        return json.dumps(
            {"started_at": round(self.started_at, 3), **figures}, separators=(",", ":")
        )


def beat_sync(client: redis.Redis, prefix: str, identity: Identity) -> None:
    """One beat from sync code (a command, before its event loop runs)."""
    script = client.register_script(BEAT_LUA)
    script(
        keys=[index_key(prefix), details_key(prefix, identity.member)],
        args=[identity.member, identity.details({}), int(TTL * 1000), int(FORGET_AFTER * 1000)],
    )


class Heartbeat:
    """Beats for one process every ``interval`` seconds from the running event loop.

    ``figures`` (optional) adds the kind's own numbers to each beat; every
    beat also carries ``lag_ms`` (how late the loop woke the heartbeat: the
    event loop's lag) and ``cpu`` (the process's CPU share since the last beat).
    Redis failing is logged once when it starts and once when it ends.
    """

    def __init__(
        self,
        client: aioredis.Redis,
        prefix: str,
        identity: Identity,
        *,
        figures: Figures | None = None,
        interval: float = INTERVAL,
        ttl: float = TTL,
    ) -> None:
        self.client = client
        self.prefix = prefix
        self.identity = identity
        self.figures = figures
        self.interval = interval
        self.ttl = ttl
        self._beat = client.register_script(BEAT_LUA)
        self._failing_since: float | None = None

    async def beat(self, extra: Mapping[str, float | int] | None = None) -> None:
        """Write one beat (raises what Redis raises)."""
        figures = dict(extra or {})
        if self.figures is not None:
            figures.update(await self.figures())
        member = self.identity.member
        await self._beat(
            keys=[index_key(self.prefix), details_key(self.prefix, member)],
            args=[
                member,
                self.identity.details(figures),
                int(self.ttl * 1000),
                int(FORGET_AFTER * 1000),
            ],
        )

    async def leave(self) -> None:
        """Remove this process's record now (a clean stop): it is missing at once."""
        member = self.identity.member
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.zrem(index_key(self.prefix), member)
            pipe.delete(details_key(self.prefix, member))
            await pipe.execute()

    async def run(self) -> None:
        """Beat until cancelled, then leave (best effort, within a second)."""
        loop = asyncio.get_running_loop()
        me = asyncio.current_task()
        extra: dict[str, float | int] = {}
        closed = False
        try:
            # On Python 3.11, redis-py can swallow a cancellation that races with
            # a socket write: a cancel still requested ends the loop all the same.
            while me is None or not me.cancelling():
                woke, cpu = loop.time(), time.process_time()
                try:
                    await self.beat(extra)
                    self._recovered()
                except Exception as exc:  # Redis down or slow: try again next interval
                    self._failed(exc)
                await asyncio.sleep(self.interval)
                lag = max(0.0, loop.time() - woke - self.interval)
                spent = time.process_time() - cpu
                extra = {
                    "lag_ms": round(lag * 1000, 1),
                    "cpu": round(spent / max(loop.time() - woke, 1e-3), 3),
                }
        except GeneratorExit:
            # Closed with its loop gone (never cancelled): nothing can be awaited now,
            # and trying would raise "coroutine ignored GeneratorExit".
            closed = True
            raise
        finally:
            if not closed:
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(1.0):
                        await self.leave()

    def _failed(self, exc: BaseException) -> None:
        if self._failing_since is None:
            self._failing_since = time.monotonic()
            logger.warning(
                "%s heartbeat failing (%s: %s); retrying quietly",
                self.identity.kind,
                type(exc).__name__,
                exc,
            )

    def _recovered(self) -> None:
        if self._failing_since is not None:
            lasted = time.monotonic() - self._failing_since
            self._failing_since = None
            logger.warning("%s heartbeat works again after %.1f s", self.identity.kind, lasted)


_beating: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, asyncio.Task[None]]] = (
    weakref.WeakKeyDictionary()
)


def ensure_beating(
    client: aioredis.Redis,
    prefix: str,
    kind: str,
    *,
    identity: Identity | None = None,
    figures: Figures | None = None,
) -> asyncio.Task[None]:
    """The running loop's heartbeat task of ``kind``, started if it does not run yet
    (cheap enough to call on every connection)."""
    loop = asyncio.get_running_loop()
    tasks = _beating.setdefault(loop, {})
    task = tasks.get(kind)
    if task is None or task.done():
        beats = Heartbeat(client, prefix, identity or Identity(kind), figures=figures)
        task = tasks[kind] = loop.create_task(beats.run(), name=f"progrock-heartbeat-{kind}")
    return task


@dataclass(frozen=True, slots=True)
class Beat:
    """A live process as its last beat described it."""

    kind: str
    host: str
    pid: int
    beat_ms: float  # Redis's clock at the last beat
    started_at: float | None  # epoch s (the process's clock)
    figures: Mapping[str, Any]

    def as_dict(self, now_ms: float) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "host": self.host,
            "pid": self.pid,
            "started_at": self.started_at,
            "age_s": None if self.started_at is None else round(now_ms / 1000 - self.started_at, 1),
            "last_beat_s": round(max(0.0, now_ms - self.beat_ms) / 1000, 1),
            **self.figures,
        }


def _parse_member(member: str) -> tuple[str, str, int] | None:
    kind, _, rest = member.partition("|")
    host, _, rest = rest.rpartition("|")  # the token
    host, _, pid = host.rpartition("|")
    if kind not in NAMES or not pid.isdigit():
        return None
    return kind, host, int(pid)


async def _live_members(
    client: aioredis.Redis, prefix: str, ttl: float
) -> tuple[float, list[tuple[str, float]]]:
    raw = await client.register_script(LIVE_LUA)(keys=[index_key(prefix)], args=[int(ttl * 1000)])
    now = float(_text(raw[0]))
    pairs = [(_text(raw[i]), float(_text(raw[i + 1]))) for i in range(1, len(raw) - 1, 2)]
    return now, pairs


async def live_kinds(client: aioredis.Redis, prefix: str, ttl: float = TTL) -> frozenset[str]:
    """The kinds with at least one live process (one round trip)."""
    _, members = await _live_members(client, prefix, ttl)
    return frozenset(member.partition("|")[0] for member, _ in members)


async def live_processes(
    client: aioredis.Redis, prefix: str, ttl: float = TTL
) -> tuple[float, list[Beat]]:
    """Redis's clock (ms) and every live process with its figures, by kind and host."""
    now, members = await _live_members(client, prefix, ttl)
    details = (
        await client.mget([details_key(prefix, member) for member, _ in members]) if members else []
    )
    beats = []
    for (member, beat_ms), raw in zip(members, details, strict=True):
        parsed = _parse_member(member)
        if parsed is None:
            logger.warning("ignoring a malformed heartbeat entry %.200r", member)
            continue
        figures: dict[str, Any] = {}
        if raw is not None:
            with contextlib.suppress(ValueError):
                loaded = json.loads(raw)
                if isinstance(loaded, dict):
                    figures = loaded
        started = figures.pop("started_at", None)
        beats.append(
            Beat(
                kind=parsed[0],
                host=parsed[1],
                pid=parsed[2],
                beat_ms=beat_ms,
                started_at=float(started) if isinstance(started, (int, float)) else None,
                figures=figures,
            )
        )
    beats.sort(key=lambda b: (KINDS.index(b.kind), b.host, b.pid))
    return now, beats
