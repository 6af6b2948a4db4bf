"""The Lua scripts over a task's live-state hash, and the hash's field names.

Every change of live state that must be atomic is one of these scripts (run
by :class:`progrock.state.live.TaskStore`). The field names are short because
every poll moves them through Redis; they are the stored format, so they stay
as they are. Python code reads them through :class:`progrock.state.live.LiveState`
and writes them by the names below.
"""

from __future__ import annotations

from typing import Final

# Bookkeeping fields of ``<prefix>t:<task_id>`` (besides the long-named ones a
# watcher sees: status, progress, seq, message, eta_s, rate, result, ...).
NEXT_DUE: Final = "nd"  # due time (ms) of the task's next poll tick: the only one that counts
LAST_POLL: Final = "lp"  # when the task was last polled (epoch s)
RATE_PROGRESS: Final = "rp"  # progress at the last rate estimate
RATE_TIME: Final = "rt"  # when that was (epoch s)
DB_WRITTEN: Final = "dbt"  # when progress was last copied to the database (epoch s)
FAILS: Final = "fails"  # failed polls in a row
FAIL_SINCE: Final = "fail_since"  # when the first of them failed (epoch s)
HEARD: Final = "hb"  # when a push task's producer was last heard from (epoch s; PUSH_TIMEOUT)

APPLY_LUA: Final = """
-- One call applies a batch. KEYS: (state hash, fan-out channel) per entry.
-- ARGV[1]: a JSON array with one entry per key pair (one argument, not
-- hundreds: packing and parsing them cost more than the JSON):
--   announce: [head, tail, flag, status, progress, ttl, message, [field, value, ...]]
--             publishes head .. seq .. ',"progress":' .. progress .. tail
--   bookkeeping: ['B', [field, value, ...]] set on an existing hash (never creates one)
-- Every value is a string. Returns one reply per entry: the new seq, or
-- -1/-2/-3 (see progrock.state.live), 0 for bookkeeping.
local entries = cjson.decode(ARGV[1])
local out = {}
for e = 1, #entries do
  local key, chan, A = KEYS[2 * e - 1], KEYS[2 * e], entries[e]
  local reply = 0
  if A[1] == 'B' then
    if #A[2] > 0 and redis.call('EXISTS', key) == 1 then
      redis.call('HSET', key, unpack(A[2]))
    end
  else
    -- One read for everything the checks need (each redis.call costs).
    local now = redis.call('HMGET', key, 'status', 'progress', 'message', 'seq')
    local st = now[1]
    if not st then
      reply = -2
    elseif st == 'succeeded' or st == 'failed' or st == 'cancelled' then
      reply = -1
    else
      local stored = now[2] or '0'
      local old = tonumber(stored) or 0
      local progress = A[5]
      local new = tonumber(progress)
      if new < old then
        if A[3] ~= 'T' then reply = -3 end
        progress = stored  -- an end never shows less progress than was shown
      end
      if reply == 0 and A[3] == 'P' and new == old and (now[3] or '') == A[7] then
        reply = -3  -- nothing changed (e.g. a tick delivered twice): announce nothing
      end
      if reply == 0 then
        local seq = (tonumber(now[4]) or 0) + 1
        local fields = {'status', A[4], 'progress', progress, 'seq', seq}
        for _, v in ipairs(A[8]) do fields[#fields + 1] = v end
        redis.call('HSET', key, unpack(fields))
        if tonumber(A[6]) > 0 then redis.call('EXPIRE', key, A[6]) end
        redis.call('PUBLISH', chan, seq .. ' ' .. A[3] .. ' ' .. A[1] .. seq
                   .. ',"progress":' .. progress .. A[2])
        reply = seq
      end
    end
  end
  out[e] = reply
end
return out
"""

# The live-state fields a poll reads (CLAIM_LUA returns these, not the whole hash).
POLL_FIELDS: Final = (
    "status",  # first: a task without it has no live state
    "owner",
    "ref",
    "push",
    "progress",
    "seq",
    "message",
    "rp",
    "rt",
    "rate",
    "dbt",
    "fails",
    "fail_since",
)

CLAIM_LUA: Final = (
    """
-- Claim poll ticks, exactly once each, and load the state of their tasks.
-- KEYS: state hash per tick. ARGV[1]: now (s); ARGV[2]: a JSON array of
-- [due ms, next due ms] per tick, both strings.
-- A tick counts only if it is the task's next due tick (field 'nd'; a task
-- without one, e.g. rebuilt, accepts any): it moves 'nd' on to the next due
-- time and sets 'lp' (last poll). Returns per tick: 0 for a stale tick (an
-- older or duplicated chain: drop it), else the values of the poll's fields
-- (all nil: the task has no live state).
local FIELDS = {"""
    + ", ".join(f"'{name}'" for name in POLL_FIELDS)
    + """}
local ticks = cjson.decode(ARGV[2])
local out = {}
for i = 1, #KEYS do
  local key, due = KEYS[i], tonumber(ticks[i][1])
  local values = redis.call('HMGET', key, 'nd', unpack(FIELDS))  -- one read (each call costs)
  local nd = table.remove(values, 1)
  if nd and math.abs((tonumber(nd) or 0) - due) > 0.5 then
    out[i] = 0
  else
    if values[1] then
      redis.call('HSET', key, 'nd', ticks[i][2], 'lp', ARGV[1])
    end
    out[i] = values
  end
end
return out
"""
)

REARM_LUA: Final = """
-- Move a task's next due tick ('nd') from ARGV[1] ('' = none) to ARGV[2];
-- 0 if a poll moved it meanwhile (the chain is alive: nothing to re-arm).
local nd = redis.call('HGET', KEYS[1], 'nd') or ''
if nd ~= ARGV[1] or redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'nd', ARGV[2])
return 1
"""

OVERDUE_LUA: Final = """
-- The sweep's check of running tasks, in Redis (one call for thousands of
-- tasks instead of decoding each one's fields in the worker). For each key:
-- no usable live state (no or an empty 'owner') -> {i, 0, nd or ''}; next due
-- tick ('nd', ms; without a number there, one interval, ARGV[2] ms, after
-- the last poll, 'lp', s) at or before ARGV[1] ms -> {i, 1, nd or ''}. The
-- raw 'nd' is what a re-arm must find (REARM_LUA). Live chains are left out.
local deadline, interval = tonumber(ARGV[1]), tonumber(ARGV[2])
local out = {}
for i = 1, #KEYS do
  local v = redis.call('HMGET', KEYS[i], 'owner', 'nd', 'lp')
  if not v[1] or v[1] == '' then
    out[#out + 1] = {i, 0, v[2] or ''}
  else
    local due = tonumber(v[2] or '')
    if not due or due ~= due then  -- not a number (or NaN)
      due = (tonumber(v[3] or '') or 0) * 1000 + interval
      if due ~= due then due = interval end
    end
    if due <= deadline then out[#out + 1] = {i, 1, v[2] or ''} end
  end
end
return out
"""

STATUS_DIFFERS_LUA: Final = """
-- {index (1-based), 1 if it has live state else 0} of the keys whose 'status'
-- is not ARGV[1]'s entry (a JSON list), or that have no live state.
local want = cjson.decode(ARGV[1])
local out = {}
for i = 1, #KEYS do
  local st = redis.call('HGET', KEYS[i], 'status')
  if st ~= want[i] then out[#out + 1] = {i, st and 1 or 0} end
end
return out
"""

INIT_QUEUED_LUA: Final = """
-- Write the live state of queued tasks (ARGV[1]: one flat field list per key),
-- except where it already says something else: another attempt of the same
-- start got further meanwhile, and its state must stand. 1 per key written.
local states = cjson.decode(ARGV[1])
local out = {}
for i = 1, #KEYS do
  local st = redis.call('HGET', KEYS[i], 'status')
  if not st or st == 'queued' then
    redis.call('HSET', KEYS[i], unpack(states[i]))
    out[i] = 1
  else
    out[i] = 0
  end
end
return out
"""
