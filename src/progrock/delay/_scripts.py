"""Lua scripts of the delay store; each runs atomically inside Redis.

Keys: ``pending`` (sorted set id -> due ms), ``payload`` (hash id -> JSON),
``keys`` (hash key -> id), ``inflight`` (sorted set id -> lease deadline ms).
"""

from __future__ import annotations

# KEYS: pending, payload, keys. ARGV: wake channel, earliest due, then
# (id, due, key or "", json) per message. Replaces the pending message of a
# key; a message of that key already claimed (inflight) is left to finish.
# Announces the earliest new due time only when it is earlier than every
# pending one: each delay server already plans to wake at (or before) the
# earliest pending due time, so a later message needs no wake-up.
SCHEDULE = """
local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
for i = 3, #ARGV, 4 do
  local id, due, key, body = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  if key ~= '' then
    local old = redis.call('HGET', KEYS[3], key)
    if old and old ~= id and redis.call('ZREM', KEYS[1], old) == 1 then
      redis.call('HDEL', KEYS[2], old)
    end
    redis.call('HSET', KEYS[3], key, id)
  end
  redis.call('HSET', KEYS[2], id, body)
  redis.call('ZADD', KEYS[1], due, id)
end
if first[2] == nil or tonumber(ARGV[2]) < tonumber(first[2]) then
  redis.call('PUBLISH', ARGV[1], ARGV[2])
  return 1
end
return 0
"""

# KEYS: pending, inflight, payload. ARGV: now, lease deadline, limit.
# Moves expired leases back to pending, then due ids to inflight; returns
# {id, payload, id, payload, ...}, next due, earliest lease, reclaimed count.
CLAIM = """
local now, deadline, limit = ARGV[1], ARGV[2], tonumber(ARGV[3])
local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, limit)
for _, id in ipairs(expired) do
  redis.call('ZREM', KEYS[2], id)
  redis.call('ZADD', KEYS[1], now, id)
end
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, limit)
local out = {}
for _, id in ipairs(ids) do
  redis.call('ZREM', KEYS[1], id)
  redis.call('ZADD', KEYS[2], deadline, id)
  out[#out + 1] = id
  out[#out + 1] = redis.call('HGET', KEYS[3], id) or ''
end
local nxt = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
local lease = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
return {out, nxt[2] or '', lease[2] or '', #expired}
"""

# KEYS: inflight, pending, payload, keys. ARGV: (id, key or "") pairs.
# Forgets delivered messages; the key index is cleared only if it still
# points to this id (the key may have been re-scheduled meanwhile).
ACK = """
for i = 1, #ARGV, 2 do
  local id, key = ARGV[i], ARGV[i + 1]
  redis.call('ZREM', KEYS[1], id)
  redis.call('ZREM', KEYS[2], id)
  redis.call('HDEL', KEYS[3], id)
  if key ~= '' and redis.call('HGET', KEYS[4], key) == id then
    redis.call('HDEL', KEYS[4], key)
  end
end
return 1
"""

# KEYS: inflight, pending, payload, keys. ARGV: new due, wake channel, then
# (id, key or "") pairs. Puts claimed messages back to pending, unless their
# key was re-scheduled meanwhile (the newer message replaces them: drop).
# Announces the new due time when it is earlier than every pending one, as
# SCHEDULE does: the server putting them back may stop before it falls due.
RETRY = """
local first = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
local moved = 0
for i = 3, #ARGV, 2 do
  local id, key = ARGV[i], ARGV[i + 1]
  if redis.call('ZREM', KEYS[1], id) == 1 then
    if key ~= '' and redis.call('HGET', KEYS[4], key) ~= id then
      redis.call('HDEL', KEYS[3], id)
    else
      redis.call('ZADD', KEYS[2], ARGV[1], id)
      moved = moved + 1
    end
  end
end
if moved > 0 and (first[2] == nil or tonumber(ARGV[1]) < tonumber(first[2])) then
  redis.call('PUBLISH', ARGV[2], ARGV[1])
end
return moved
"""

# KEYS: keys, pending, payload. ARGV: keys. Drops the pending message of each
# key; a message of a key already claimed (inflight) is left to be delivered.
# Returns how many pending messages were dropped.
CANCEL = """
local dropped = 0
for _, key in ipairs(ARGV) do
  local id = redis.call('HGET', KEYS[1], key)
  if id and redis.call('ZREM', KEYS[2], id) == 1 then
    redis.call('HDEL', KEYS[3], id)
    redis.call('HDEL', KEYS[1], key)
    dropped = dropped + 1
  end
end
return dropped
"""

# KEYS: keys, pending, inflight. ARGV: key. 1 if the key has a message
# waiting or being delivered.
HAS_PENDING = """
local id = redis.call('HGET', KEYS[1], ARGV[1])
if not id then return 0 end
if redis.call('ZSCORE', KEYS[2], id) or redis.call('ZSCORE', KEYS[3], id) then return 1 end
return 0
"""
