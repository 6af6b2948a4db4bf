"""The durable delay store in Redis, and the ``send_delayed`` helpers.

Every key is prefixed with ``PROGROCK["KEY_PREFIX"]``:

* ``delay:pending`` sorted set, member message id, score due time (ms since epoch);
* ``delay:payload`` hash, id -> stored envelope JSON;
* ``delay:keys`` hash, key -> id of its message;
* ``delay:inflight`` sorted set, id -> lease deadline (ms since epoch);
* ``delay:wake`` pub/sub channel announcing the due time of new messages.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
import weakref
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import redis
import redis.asyncio

from progrock.conf import progrock_settings
from progrock.delay import _scripts
from progrock.delay.envelope import Envelope, Pending
from progrock.tuning import REDIS_CONNECT_TIMEOUT, REDIS_SOCKET_TIMEOUT


def now_ms() -> float:
    """Wall-clock time in milliseconds since the epoch (the store's time base)."""
    return time.time() * 1000.0


def _envelope(item: Envelope | Mapping[str, Any]) -> Envelope:
    return item if isinstance(item, Envelope) else Envelope.from_message(item)


@dataclass(frozen=True, slots=True)
class Claim:
    """What one claim pass returned."""

    items: list[tuple[str, str]]  # (id, raw payload; "" when missing)
    next_due_ms: float | None  # earliest pending due time after the claim
    next_lease_ms: float | None  # earliest inflight lease deadline
    reclaimed: int  # expired leases moved back to pending


class _Keys:
    def __init__(self, prefix: str) -> None:
        self.pending = f"{prefix}delay:pending"
        self.payload = f"{prefix}delay:payload"
        self.index = f"{prefix}delay:keys"
        self.inflight = f"{prefix}delay:inflight"
        self.wake = f"{prefix}delay:wake"
        self.prefix = prefix


def _schedule_args(
    keys: _Keys, items: Iterable[Envelope | Mapping[str, Any]]
) -> tuple[list[str], list[str]]:
    """ARGV of the SCHEDULE script and the new message ids (validates every item)."""
    now = now_ms()
    ids: list[str] = []
    argv: list[str] = [keys.wake, ""]
    earliest: float | None = None
    for item in items:
        pending = Pending.from_envelope(uuid.uuid4().hex, _envelope(item), now)
        argv += [pending.id, repr(pending.due_ms), pending.key or "", pending.to_json()]
        ids.append(pending.id)
        earliest = pending.due_ms if earliest is None else min(earliest, pending.due_ms)
    argv[1] = repr(earliest)
    return ids, argv


class DelayStore:
    """Delayed messages in Redis: schedule, claim, ack, retry.

    Claiming moves due messages to ``inflight`` under a lease in one Lua
    call, so several delay servers can share a store without delivering a
    message twice; leases that expire (a server died mid-send) are moved back
    to pending by whichever server claims next.
    """

    def __init__(self, client: redis.asyncio.Redis, prefix: str = "progrock:") -> None:
        self.client = client
        self.keys = _Keys(prefix)
        self._schedule = client.register_script(_scripts.SCHEDULE)
        self._claim = client.register_script(_scripts.CLAIM)
        self._ack = client.register_script(_scripts.ACK)
        self._retry = client.register_script(_scripts.RETRY)
        self._has_pending = client.register_script(_scripts.HAS_PENDING)
        self._cancel = client.register_script(_scripts.CANCEL)

    @classmethod
    def from_url(cls, url: str, prefix: str = "progrock:") -> DelayStore:
        client = redis.asyncio.Redis.from_url(
            url,
            decode_responses=True,
            socket_timeout=REDIS_SOCKET_TIMEOUT,
            socket_connect_timeout=REDIS_CONNECT_TIMEOUT,
        )
        return cls(client, prefix)

    @classmethod
    def from_settings(cls) -> DelayStore:
        """A store on ``PROGROCK["REDIS_URL"]`` with ``PROGROCK["KEY_PREFIX"]``."""
        return cls.from_url(progrock_settings.REDIS_URL, progrock_settings.KEY_PREFIX)

    @property
    def wake_channel(self) -> str:
        return self.keys.wake

    async def aclose(self) -> None:
        await self.client.aclose()

    async def schedule(
        self,
        channel: str,
        content: dict[str, Any],
        delay_ms: float,
        *,
        key: str | None = None,
        merge: bool = False,
    ) -> str:
        """Schedule one message; return its id."""
        ids = await self.schedule_many([Envelope(channel, content, delay_ms, key, merge)])
        return ids[0]

    async def schedule_many(self, items: Iterable[Envelope | Mapping[str, Any]]) -> list[str]:
        """Schedule many messages in one round trip; return their ids in order.

        ``items`` are :class:`Envelope` objects or wire-format dicts
        (``{"channel", "content", "delay", "key", "merge"}``). Every item is
        validated before anything is written (:class:`InvalidEnvelope`).
        """
        ids, argv = _schedule_args(self.keys, items)
        if ids:
            k = self.keys
            await self._schedule(keys=[k.pending, k.payload, k.index], args=argv)
        return ids

    async def cancel(self, keys: Sequence[str]) -> int:
        """Drop the pending message of each key, in one round trip; return how many.

        A message already claimed by a delay server (being delivered) is not
        recalled: receivers must expect it.
        """
        if not keys:
            return 0
        k = self.keys
        dropped = await self._cancel(keys=[k.index, k.pending, k.payload], args=list(keys))
        return int(dropped)

    async def has_pending(self, key: str) -> bool:
        """Whether a message with ``key`` waits or is being delivered."""
        k = self.keys
        found = await self._has_pending(keys=[k.index, k.pending, k.inflight], args=[key])
        return bool(found)

    async def claim(self, now: float, lease_ms: float, limit: int) -> Claim:
        """Move up to ``limit`` messages due at ``now`` to inflight and return them."""
        k = self.keys
        out, nxt, lease, reclaimed = await self._claim(
            keys=[k.pending, k.inflight, k.payload],
            args=[repr(now), repr(now + lease_ms), limit],
        )
        items = [(str(out[i]), str(out[i + 1])) for i in range(0, len(out), 2)]
        return Claim(
            items=items,
            next_due_ms=float(nxt) if nxt else None,
            next_lease_ms=float(lease) if lease else None,
            reclaimed=int(reclaimed),
        )

    async def ack(self, done: Sequence[tuple[str, str | None]]) -> None:
        """Forget delivered (or dropped) messages, given as ``(id, key)`` pairs."""
        if not done:
            return
        k = self.keys
        argv = [part for message_id, key in done for part in (message_id, key or "")]
        await self._ack(keys=[k.inflight, k.pending, k.payload, k.index], args=argv)

    async def retry(self, items: Sequence[tuple[str, str | None]], due_ms: float) -> int:
        """Put claimed messages back to pending, due at ``due_ms``; return how many.

        Announced like a new message when it is the earliest due time, so
        another server delivers them on time if this one stops first.
        """
        if not items:
            return 0
        k = self.keys
        argv = [repr(due_ms), k.wake] + [part for i, key in items for part in (i, key or "")]
        moved = await self._retry(keys=[k.inflight, k.pending, k.payload, k.index], args=argv)
        return int(moved)

    async def try_lock(self, name: str, ttl_ms: int) -> bool:
        """Take the lock ``<prefix><name>`` for ``ttl_ms`` if nobody holds it."""
        taken = await self.client.set(f"{self.keys.prefix}{name}", "1", nx=True, px=ttl_ms)
        return bool(taken)

    async def counts(self) -> dict[str, int]:
        """Sizes of the pending set, inflight set, payload hash and key index."""
        k = self.keys
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.zcard(k.pending)
            pipe.zcard(k.inflight)
            pipe.hlen(k.payload)
            pipe.hlen(k.index)
            pending, inflight, payloads, index = await pipe.execute()
        return {"pending": pending, "inflight": inflight, "payload": payloads, "keys": index}


# -- helpers over a per-event-loop store ------------------------------------

_stores: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[tuple[str, str], DelayStore]]
_stores = weakref.WeakKeyDictionary()


def default_store() -> DelayStore:
    """The store on ``PROGROCK["REDIS_URL"]`` shared by the running event loop."""
    loop = asyncio.get_running_loop()
    url, prefix = progrock_settings.REDIS_URL, progrock_settings.KEY_PREFIX
    per_loop = _stores.setdefault(loop, {})
    store = per_loop.get((url, prefix))
    if store is None:
        store = per_loop[(url, prefix)] = DelayStore.from_url(url, prefix)
    return store


async def close_default_stores() -> None:
    """Close the stores the helpers opened on the running event loop."""
    per_loop = _stores.pop(asyncio.get_running_loop(), {})
    for store in per_loop.values():
        await store.aclose()


async def send_delayed(
    channel: str,
    content: dict[str, Any],
    delay_ms: float,
    *,
    key: str | None = None,
    merge: bool = False,
) -> str:
    """Deliver ``content`` to ``channel`` in ``delay_ms`` ms (straight into the store)."""
    return await default_store().schedule(channel, content, delay_ms, key=key, merge=merge)


async def has_pending(key: str) -> bool:
    """Whether a delayed message with ``key`` waits or is being delivered."""
    return await default_store().has_pending(key)


_sync_lock = threading.Lock()
_sync_clients: dict[str, redis.Redis] = {}


def _sync_client(url: str) -> redis.Redis:
    with _sync_lock:
        client = _sync_clients.get(url)
        if client is None:
            client = _sync_clients[url] = redis.Redis.from_url(
                url,
                decode_responses=True,
                socket_timeout=REDIS_SOCKET_TIMEOUT,
                socket_connect_timeout=REDIS_CONNECT_TIMEOUT,
            )
        return client


def send_delayed_sync(
    channel: str,
    content: dict[str, Any],
    delay_ms: float,
    *,
    key: str | None = None,
    merge: bool = False,
) -> str:
    """Blocking :func:`send_delayed`, for sync code (views, shells, scripts)."""
    keys = _Keys(progrock_settings.KEY_PREFIX)
    ids, argv = _schedule_args(keys, [Envelope(channel, content, delay_ms, key, merge)])
    client = _sync_client(progrock_settings.REDIS_URL)
    client.register_script(_scripts.SCHEDULE)(
        keys=[keys.pending, keys.payload, keys.index], args=argv
    )
    return ids[0]
