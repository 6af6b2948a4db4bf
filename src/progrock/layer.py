"""A channels_redis channel layer whose ``send`` and ``receive`` each take one Redis round trip.

``channels_redis.core.RedisChannelLayer`` takes four round trips to send a
message (``ZREMRANGEBYSCORE`` of expired messages, ``ZCOUNT`` against the
capacity, ``ZADD``, ``EXPIRE``) and four to receive one (an ``EVAL`` that
moves the channel's in-flight backup queue back, ``BZPOPMIN``, ``ZADD`` of the
message to that backup, and a ``ZPOPMIN`` from it once received). Every
poll batch of ProgRock crosses the layer once (delay server to a worker on
``prog-rocker``), so at light load, where batches are small, those round
trips are a large part of what an update costs.

:class:`RedisChannelLayer` keeps channels_redis's storage (the same keys,
sorted sets, serialization, expiry and capacities) and everything else it
does (groups, flush, process-specific channels), and changes two things:

* ``send`` is one Lua script doing the same four steps atomically;
* ``receive`` is one ``BZPOPMIN``, without the backup queue. The backup
  guards only the instants inside ``receive`` between the pop and the
  return (channels_redis removes the message from it as soon as ``receive``
  returns, before the consumer handles it), and, shared by every consumer
  of a channel, it is what makes two consumers of one channel receive some
  messages twice (django/channels_redis#163). A message popped by a process
  killed before it handled it is lost with either layer; ProgRock recovers
  such messages itself (the sweep re-arms lost ticks, the start watchdog
  forwards lost starts again).

Both layers read and write the same keys, so processes using either can
share a Redis. The first receive on each channel moves back what a
channels_redis consumer left in that channel's backup queue, as
channels_redis's own receive would.

Use it as the ``BACKEND`` of ``CHANNEL_LAYERS`` (``"progrock.layer.RedisChannelLayer"``)
with channels_redis's ``CONFIG``. Redis Cluster is not supported, as
with channels_redis's core layer.
"""

from __future__ import annotations

import hashlib
import time
from typing import Any

from channels.exceptions import ChannelFull
from channels_redis.core import RedisChannelLayer as _ChannelsRedisLayer
from redis.exceptions import NoScriptError

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
        self._restored: set[str] = set()  # channel keys whose backup was moved back

    async def send(self, channel: str, message: dict[str, Any]) -> None:
        """Send a message onto a (general or specific) channel: one script call."""
        assert isinstance(message, dict), "message is not a dict"
        assert self.require_valid_channel_name(channel), "Channel name not valid"
        assert "__asgi_channel__" not in message
        non_local = channel
        if "!" in channel:
            message = dict(message.items())
            message["__asgi_channel__"] = channel
            non_local = self.non_local_name(channel)
            index = self.consistent_hash(channel)
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
        assert self.require_valid_channel_name(channel, receive=True), "Channel name invalid"
        if "!" in channel:
            assert channel.endswith("!")
            index = self.consistent_hash(channel)
        else:
            index = next(self._receive_index_generator)
        key = self.prefix + channel
        connection = self.connection(index)
        if key not in self._restored:
            await connection.eval(RESTORE_LUA, 2, key, self._backup_channel_name(key))
            self._restored.add(key)
        popped = None
        while popped is None:
            popped = await connection.bzpopmin(key, timeout=self.brpop_timeout)
        message: dict[str, Any] = self.deserialize(popped[1])
        if "__asgi_channel__" in message:
            channel = message.pop("__asgi_channel__")
        return channel, message
