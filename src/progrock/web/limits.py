"""Per-client limits of a web process: open sockets per address, starts per minute.

``MAX_RUNNING_PER_OWNER`` bounds the tasks an owner runs at once, but an owner
is a session or, without a cookie, a single socket: one address could open
thousands of sockets and start tasks on each. These limits close that gap:

* open sockets per client address (:data:`MAX_SOCKETS_PER_ADDRESS`): a socket
  beyond it gets ``error`` ``too_many_sockets`` and is closed with 1013 (try
  again later);
* starts per minute per owner (:data:`STARTS_PER_MINUTE_PER_OWNER`) and per
  client address (:data:`STARTS_PER_MINUTE_PER_ADDRESS`): a start beyond
  either is answered ``rate_limited`` (HTTP 429) and not started.

They are counted per web process (no Redis round trip, and they hold during a
Redis outage). Loopback addresses (:data:`UNLIMITED_ADDRESSES`) have no
address limits: local tools and benchmarks open thousands of sockets from one,
and a reverse proxy on the same machine that does not pass the client's
address (Daphne's ``--proxy-headers``) would otherwise put every visitor
under one address. Owners are limited wherever they connect from.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

MAX_SOCKETS_PER_ADDRESS: Final = 256
STARTS_PER_MINUTE_PER_OWNER: Final = 120
STARTS_PER_MINUTE_PER_ADDRESS: Final = 600
UNLIMITED_ADDRESSES: Final = frozenset({"127.0.0.1", "::1", "::ffff:127.0.0.1"})


def client_address(scope: dict[str, Any]) -> str | None:
    """The client's address of an ASGI scope, None if unknown (a Unix socket)."""
    client = scope.get("client")
    if not client:
        return None
    host = client[0]
    return host if isinstance(host, str) and host else None


def limited(address: str | None) -> bool:
    """Whether address limits apply to ``address``."""
    return address is not None and address not in UNLIMITED_ADDRESSES


class SocketCounter:
    """Open sockets per client address."""

    def __init__(self, limit: int = MAX_SOCKETS_PER_ADDRESS) -> None:
        self.limit = limit
        self.open: dict[str, int] = {}

    def acquire(self, address: str | None) -> bool:
        """Count one more socket of ``address``; False (and nothing counted) if over the limit."""
        if not limited(address) or address is None:
            return True
        count = self.open.get(address, 0)
        if count >= self.limit:
            return False
        self.open[address] = count + 1
        return True

    def release(self, address: str | None) -> None:
        if not limited(address) or address is None:
            return
        count = self.open.get(address, 0) - 1
        if count > 0:
            self.open[address] = count
        else:
            self.open.pop(address, None)


@dataclass
class _Bucket:
    tokens: float
    at: float


@dataclass
class RateLimiter:
    """A token bucket per key: ``per_minute`` starts a minute, in bursts of as many.

    Full buckets are forgotten now and then, so memory follows the active keys.
    """

    per_minute: int
    clock: Callable[[], float] = time.monotonic
    buckets: dict[str, _Bucket] = field(default_factory=dict)
    _calls: int = 0

    def take(self, key: str) -> bool:
        """Spend one start of ``key``; False (nothing spent) if its bucket is empty."""
        now = self.clock()
        rate = self.per_minute / 60.0
        self._calls += 1
        if self._calls % 1000 == 0:
            self._forget_full(now, rate)
        bucket = self.buckets.get(key)
        if bucket is None:
            bucket = self.buckets[key] = _Bucket(float(self.per_minute), now)
        else:
            bucket.tokens = min(float(self.per_minute), bucket.tokens + (now - bucket.at) * rate)
            bucket.at = now
        if bucket.tokens < 1:
            return False
        bucket.tokens -= 1
        return True

    def _forget_full(self, now: float, rate: float) -> None:
        full = [
            key
            for key, b in self.buckets.items()
            if b.tokens + (now - b.at) * rate >= self.per_minute
        ]
        for key in full:
            del self.buckets[key]


class StartLimits:
    """The start limits of one web process: per owner and per client address."""

    def __init__(
        self,
        per_owner: int = STARTS_PER_MINUTE_PER_OWNER,
        per_address: int = STARTS_PER_MINUTE_PER_ADDRESS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.owners = RateLimiter(per_owner, clock)
        self.addresses = RateLimiter(per_address, clock)

    def refusal(self, owner: str, address: str | None) -> str | None:
        """None if this start may go ahead (and count it), else why not."""
        if not self.owners.take(owner):
            return f"more than {self.owners.per_minute} starts a minute from this owner"
        if limited(address) and address is not None and not self.addresses.take(address):
            return f"more than {self.addresses.per_minute} starts a minute from this address"
        return None


#: The process's own counters (the consumer and the HTTP API share them).
sockets = SocketCounter()
starts = StartLimits()
