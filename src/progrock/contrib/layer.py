"""A channels_redis channel layer whose ``send`` and ``receive`` each take one Redis round trip.

``channels_redis.core.RedisChannelLayer`` takes four round trips to send a
message (``ZREMRANGEBYSCORE`` of expired messages, ``ZCOUNT`` against the
capacity, ``ZADD``, ``EXPIRE``) and three to receive one (an ``EVAL`` that
moves the channel's in-flight backup queue back, ``BZPOPMIN``, ``ZADD`` of the
message to that backup), plus a fourth, detached, that pops the oldest entry
off the backup once ``receive`` has returned. Every poll batch of ProgRock
crosses the layer once (delay server to a worker on ``prog-rocker``), so at
light load, where batches are small, those round trips are a large part of
what an update costs.

:class:`RedisChannelLayer` keeps channels_redis's storage (the same keys,
sorted sets, serialization, expiry and capacities) and everything else it
does (groups, flush, process-specific channels), and changes two things:

* ``send`` is one Lua script doing the same four steps, atomically (so
  concurrent sends cannot slip past the capacity check);
* ``receive`` is one ``BZPOPMIN``, without the backup queue. The backup
  helps only a ``receive`` cancelled after its ``ZADD`` reached Redis and
  before it returned, or a process killed in the moment between that
  ``ZADD`` and the detached pop (channels_redis removes the entry as soon as
  ``receive`` returns, before the consumer handles the message); and,
  shared by every consumer of a channel, it is what makes two consumers of
  one channel receive some messages twice (django/channels_redis#163). A
  message taken by a process that dies before handling it is almost always
  lost with either layer; ProgRock recovers such messages itself (the sweep
  re-arms lost ticks, the start watchdog forwards lost starts again).

One round trip each in the steady state: a process's first receive on a
general channel also runs the backup restore below, an idle receive repeats
its ``BZPOPMIN`` every ``brpop_timeout`` (5 s), and the first send after
Redis lost its scripts (``SCRIPT FLUSH``, a failover) sends the script again.

Both layers read and write the same keys, so processes using either can
share a Redis (a rolling upgrade). On its first receive on a general channel,
and whenever its ``BZPOPMIN`` times out, this layer moves back onto the
channel what a channels_redis consumer left in that channel's backup queue,
as channels_redis's own receive does. A process-specific channel is sent to
the host its receiver reads (channels_redis hashes the full name on send and
the non-local name on receive, which can differ with several hosts:
django/channels_redis#220).

Use it as the ``BACKEND`` of ``CHANNEL_LAYERS``
(``"progrock.contrib.layer.RedisChannelLayer"``) with channels_redis's
``CONFIG``. Redis Cluster is not supported, as with channels_redis's core
layer. Measured (``benchmarks/layer_cost.py``): 565 -> 135 us of CPU (client
and Redis) per message sent and received.

Upstream (why this exists, and what would retire it):

* django/channels_redis#163, "The receive method is not scalable nor much
  more robust" (https://github.com/django/channels_redis/issues/163): the
  shared backup queue duplicates (and can still lose) messages with several
  consumers of one channel;
* django/channels_redis#399, "Allow sending messages in bulk"
  (https://github.com/django/channels_redis/issues/399): notes that a send
  is separate calls to discard expired messages, check the capacity, add
  and set the expiry; no upstream issue found for the round-trip count of
  ``send`` and ``receive`` as such;
* the process-specific routing: django/channels_redis#221 (issue) and #220
  (open pull request, https://github.com/django/channels_redis/pull/220).

If channels_redis's ``send`` became one script and its ``receive`` one pop
(with the backup queue dropped or optional), and its send hashed the
non-local name, this class would be unnecessary.

It builds on channels_redis's private members (the index generators, the
backup key's name, its storage layout), so it is guarded
(:mod:`progrock.contrib._guard`): on a channels_redis version outside
:data:`GUARD`'s range, or one lacking a member it uses, constructing it warns
once and the instance behaves exactly as ``channels_redis.core.RedisChannelLayer``
(its ``send`` and ``receive`` are channels_redis's own), so a deployment
never breaks on an upgrade; it only loses the gain.
"""

from __future__ import annotations

import hashlib
import time
from typing import Any

import channels_redis
from channels.exceptions import ChannelFull
from channels_redis.core import RedisChannelLayer as _ChannelsRedisLayer
from redis.exceptions import NoScriptError

from progrock.contrib._guard import Guard, missing_members

#: Tested with channels_redis 4.3.0 (constraints.txt), the range ProgRock's
#: dependencies allow (``channels-redis>=4.3,<4.4``): a minor release may
#: change the private members and the storage this class relies on.
GUARD = Guard(
    "progrock.contrib.layer",
    "channels_redis",
    first="4.3.0",
    before="4.4",
    off="this layer behaves exactly as channels_redis.core.RedisChannelLayer",
)

#: What this class uses of channels_redis's layer, checked on each instance.
LAYER_MEMBERS = (
    "_send_index_generator",
    "_receive_index_generator",
    "_backup_channel_name",
    "non_local_name",
    "consistent_hash",
    "connection",
    "get_capacity",
    "serialize",
    "deserialize",
    "require_valid_channel_name",
    "prefix",
    "expiry",
    "brpop_timeout",
)

#: KEYS[1] the channel's sorted set. ARGV: expired-before (epoch seconds),
#: capacity, message, score (epoch seconds), expiry (seconds). 0 when full.
SEND_LUA = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], 0, ARGV[1])
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then
    return 0
end
redis.call('ZADD', KEYS[1], ARGV[4], ARGV[3])
redis.call('EXPIRE', KEYS[1], ARGV[5])
return 1
"""

#: channels_redis's clean-up, as a script of its own: KEYS[1] the channel,
#: KEYS[2] its backup queue; the backup's messages go back to the channel.
RESTORE_LUA = """
local backed_up = redis.call('ZRANGE', KEYS[2], 0, -1, 'WITHSCORES')
for i = #backed_up, 1, -2 do
    redis.call('ZADD', KEYS[1], backed_up[i], backed_up[i - 1])
end
redis.call('DEL', KEYS[2])
return #backed_up / 2
"""


_SEND_SHA = hashlib.sha1(SEND_LUA.encode()).hexdigest()
_RESTORE_SHA = hashlib.sha1(RESTORE_LUA.encode()).hexdigest()


async def _run(connection: Any, script: str, sha: str, numkeys: int, *args: Any) -> Any:
    """``EVALSHA``, or ``EVAL`` once Redis says it does not know the script."""
    try:
        return await connection.evalsha(sha, numkeys, *args)
    except NoScriptError:
        return await connection.eval(script, numkeys, *args)


class RedisChannelLayer(_ChannelsRedisLayer):  # type: ignore[misc]
    """channels_redis's core layer with one-round-trip ``send`` and ``receive``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # (host index, channel key) whose backup was moved back once
        self._restored: set[tuple[int, str]] = set()
        #: False on an untested channels_redis: send and receive are its own.
        self.lean = GUARD.allows(
            getattr(channels_redis, "__version__", None),
            missing_members(self, LAYER_MEMBERS, "channels_redis.core.RedisChannelLayer"),
        )

    async def send(self, channel: str, message: dict[str, Any]) -> None:
        """Send a message onto a (general or specific) channel: one script call."""
        if not self.lean:
            await super().send(channel, message)
            return
        if not isinstance(message, dict):
            raise TypeError(f"message must be a dict, got {type(message).__name__}: {message!r}")
        self._check_name(channel, receive=False)
        if "__asgi_channel__" in message:
            raise ValueError(
                "message must not contain the reserved key '__asgi_channel__', got "
                f"{message['__asgi_channel__']!r} in it"
            )
        non_local = channel
        if "!" in channel:
            message = dict(message.items())
            message["__asgi_channel__"] = channel
            non_local = self.non_local_name(channel)
            # The host its receiver reads: receive() hashes the non-local name
            # (channels_redis's send hashes the full name, which with several
            # hosts can pick another one: django/channels_redis#220).
            index = self.consistent_hash(non_local)
        else:
            index = next(self._send_index_generator)
        now = time.time()
        sent = await _run(
            self.connection(index),
            SEND_LUA,
            _SEND_SHA,
            1,
            self.prefix + non_local,
            int(now) - int(self.expiry),
            self.get_capacity(channel),
            self.serialize(message),
            repr(now),
            int(self.expiry),
        )
        if not sent:
            raise ChannelFull()

    async def receive_single(self, channel: str) -> tuple[str, dict[str, Any]]:
        """Pop one message off a channel: one ``BZPOPMIN`` (looped on its timeout)."""
        if not self.lean:
            received: tuple[str, dict[str, Any]] = await super().receive_single(channel)
            return received
        self._check_name(channel, receive=True)
        if "!" in channel:
            index = self.consistent_hash(channel)
        else:
            index = next(self._receive_index_generator)
        key = self.prefix + channel
        connection = self.connection(index)
        # Only general channels can hold a backup from another process (a
        # process-specific name carries this layer's own client prefix).
        general = "!" not in channel
        if general and (index, key) not in self._restored:
            await self._restore(connection, index, key)
        popped = None
        while popped is None:
            popped = await connection.bzpopmin(key, timeout=self.brpop_timeout)
            if popped is None and general:
                # Idle: also take back what a channels_redis consumer of the same
                # channel left in its backup since (a rolling upgrade).
                await self._restore(connection, index, key)
        message: dict[str, Any] = self.deserialize(popped[1])
        if "__asgi_channel__" in message:
            channel = message.pop("__asgi_channel__")
        return channel, message

    def _check_name(self, channel: Any, *, receive: bool) -> None:
        """Channels' name rules (receive: a process-specific name ends at its ``!``),
        with the refused name quoted."""
        try:
            self.require_valid_channel_name(channel, receive=receive)
        except TypeError as exc:
            raise TypeError(f"{exc} Got {channel!r}.") from exc

    async def _restore(self, connection: Any, index: int, key: str) -> None:
        """Move channels_redis's in-flight backup of ``key`` back onto the channel."""
        await _run(connection, RESTORE_LUA, _RESTORE_SHA, 2, key, self._backup_channel_name(key))
        self._restored.add((index, key))
